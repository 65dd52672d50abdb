"""The validation report for people: JSON of every check, and a picture of this data set's
class shares and channel histograms over the reference's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cifar_pipeline.validation.artifacts import (
    ANOMALIES_TAG,
    ERRORS_TAG,
    FIGURE,
    REFERENCE_TAG,
    REPORT,
    SCHEMA,
    STATISTICS,
    STATUS_TAG,
    SUMMARY_TAG,
)
from cifar_pipeline.validation.checks import Check, blocking, status
from cifar_pipeline.validation.statistics import CHANNELS


class ValidationFailed(ValueError):
    """The data failed a check whose policy is "error"; the message names each with its value
    and threshold."""

    def __init__(self, checks: list[Check]) -> None:
        lines = "; ".join(check.line() for check in checks)
        super().__init__(f"data validation failed, stopping before training: {lines}")


def figure(statistics: dict[str, Any], reference: dict[str, Any] | None) -> Figure:
    names = statistics["class_names"]
    result = Figure(figsize=(max(8.0, len(names) * 0.6), 7.0), layout="constrained")
    top, bottom = result.subfigures(2, 1, squeeze=False).ravel()
    shares_ax = top.subplots()
    channel_axes = bottom.subplots(1, len(CHANNELS), sharey=True)
    positions = np.arange(len(names))
    ours = statistics["splits"]["train"]["class_shares"]
    if reference is None:
        shares_ax.bar(positions, ours, 0.8, label="this data")
    else:
        theirs = dict(
            zip(reference["class_names"], reference["splits"]["train"]["class_shares"], strict=True)
        )
        shares_ax.bar(positions - 0.2, ours, 0.4, label="this data")
        shares_ax.bar(positions + 0.2, [theirs.get(n, 0.0) for n in names], 0.4, label="reference")
    rotated = len(names) > 10
    shares_ax.set_xticks(positions, names, rotation=45 if rotated else 0, ha="right" if rotated else "center")
    shares_ax.set_ylabel("share of training images")
    shares_ax.set_title("Class shares (training split)")
    shares_ax.legend()
    for channel, ax in enumerate(channel_axes):
        for stats, label, style in ((statistics, "this data", "-"), (reference, "reference", "--")):
            if stats is None:
                continue
            counts = np.asarray(stats["splits"]["train"]["channel_histograms"][channel], float)
            edges = np.linspace(0, 1, len(counts) + 1)
            ax.stairs(counts / counts.sum(), edges, linestyle=style, label=label, color=CHANNELS[channel])
        ax.set_title(f"{CHANNELS[channel]} pixels")
        ax.set_xlabel("intensity")
    channel_axes[0].set_ylabel("share of pixels")
    channel_axes[0].legend()
    return result


def report(checks: list[Check], reference: dict[str, str] | None, reference_note: str) -> dict[str, Any]:
    return {
        "status": status(checks),
        "reference": reference,  # {"run_id", "data_digest"}, or None
        "reference_note": reference_note,
        "anomalies": sum(check.anomaly for check in checks),
        "errors": len(blocking(checks)),
        "checks": [check.as_dict() for check in checks],
    }


def write(
    folder: Path,
    statistics: dict[str, Any],
    schema: dict[str, Any],
    checks: list[Check],
    reference_statistics: dict[str, Any] | None,
    reference: dict[str, str] | None,
    reference_note: str,
) -> dict[str, Any]:
    """Write statistics, schema, report and figure into `folder`; return the report."""
    folder.mkdir(parents=True, exist_ok=True)
    content = report(checks, reference, reference_note)
    for name, document in ((STATISTICS, statistics), (SCHEMA, schema), (REPORT, content)):
        (folder / name).write_text(json.dumps(document, indent=2))
    figure(statistics, reference_statistics).savefig(folder / FIGURE, dpi=100)
    return content


def tags(content: dict[str, Any], checks: list[Check]) -> dict[str, str]:
    reference = content["reference"]
    return {
        STATUS_TAG: content["status"],
        ANOMALIES_TAG: str(content["anomalies"]),
        ERRORS_TAG: str(content["errors"]),
        REFERENCE_TAG: reference["run_id"] if reference else "none",
        SUMMARY_TAG: "\n".join(check.line() for check in checks if check.anomaly)[:5000],
    }


def metrics(checks: list[Check]) -> dict[str, float]:
    """Each check's value as a metric (`validation.leakage`, ...), to chart and compare runs."""
    return {f"validation.{check.name}": check.value for check in checks}
