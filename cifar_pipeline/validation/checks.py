"""Schema and anomalies (TFDV's SchemaGen and ExampleValidator): pure functions of statistics.

Every check yields its value, its threshold and a verdict ("ok", or the policy of its kind:
"error" or "warn"), so a report says how close a data set came, not only whether it failed.
- schema: the class names, image shape and dtype, label range of the reference's schema
  (inferred from the data itself when there is no reference), and a minimum of training
  images per class;
- drift against the reference's training split: L-infinity distance of the class shares
  (what TFDV uses for categorical features) and Jensen-Shannon divergence of each channel's
  pixel histogram (what TFDV uses for numeric features);
- duplicates within a split, test images leaked into the training split, blank images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon

from cifar_pipeline.validation.settings import (
    BLANK,
    DRIFT,
    DUPLICATES,
    ERROR,
    LEAKAGE,
    SCHEMA,
    Settings,
)
from cifar_pipeline.validation.statistics import CHANNELS

OK = "ok"


@dataclass(frozen=True)
class Check:
    name: str
    kind: str  # schema, leakage, drift, duplicates, blank: which policy applies
    value: float
    threshold: float
    failed: bool
    verdict: str  # "ok", "warn" or "error"
    detail: str

    @property
    def anomaly(self) -> bool:
        return self.verdict != OK

    def line(self) -> str:
        """ "error: leakage: 3 test images also in the training split (value 3, threshold 0)"."""
        measured = f"value {self.value:.4g}, threshold {self.threshold:.4g}"
        return f"{self.verdict}: {self.name}: {self.detail} ({measured})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def infer_schema(statistics: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The schema a data set version implies: what later versions are held to."""
    return {
        "class_names": statistics["class_names"],
        "image_shape": statistics["image_shape"],
        "dtype": statistics["dtype"],
        "label_range": [0, len(statistics["class_names"]) - 1],
        "min_images_per_class": settings.min_images_per_class,
    }


def _check(name: str, kind: str, value: float, threshold: float, failed: bool, detail: str,
           settings: Settings) -> Check:  # fmt: skip
    return Check(
        name, kind, float(value), float(threshold), failed, settings.policy(kind) if failed else OK, detail
    )


def schema_checks(statistics: dict[str, Any], schema: dict[str, Any], settings: Settings) -> list[Check]:
    names, expected = statistics["class_names"], schema["class_names"]
    new = [n for n in names if n not in expected]
    missing = [n for n in expected if n not in names]
    reordered = not new and not missing and names != expected
    detail = (
        "; ".join(
            part
            for part in (
                f"new class {', '.join(map(repr, new))}" if new else "",
                f"missing class {', '.join(map(repr, missing))}" if missing else "",
                "same classes in another order (labels would mean other classes)" if reordered else "",
            )
            if part
        )
        or f"{len(names)} classes as in the schema"
    )
    counts = statistics["splits"]["train"]["class_counts"]
    fewest = int(np.argmin(counts))
    shape_ok = statistics["image_shape"] == schema["image_shape"] and statistics["dtype"] == schema["dtype"]
    low, high = statistics["label_range"]
    lowest, highest = schema["label_range"]
    return [
        _check("schema.classes", SCHEMA, len(new) + len(missing) + reordered, 0,
               bool(new or missing or reordered), detail, settings),
        _check("schema.image", SCHEMA, 0 if shape_ok else 1, 0, not shape_ok,
               f"{statistics['dtype']} {tuple(statistics['image_shape'])}, schema "
               f"{schema['dtype']} {tuple(schema['image_shape'])}", settings),
        _check("schema.labels", SCHEMA, high, highest, low < lowest or high > highest,
               f"labels {low}..{high}, schema {lowest}..{highest}", settings),
        _check("schema.min_images_per_class", SCHEMA, counts[fewest], schema["min_images_per_class"],
               counts[fewest] < schema["min_images_per_class"],
               f"class {names[fewest]!r} has {counts[fewest]} training images", settings),
    ]  # fmt: skip


def class_share_drift(statistics: dict[str, Any], reference: dict[str, Any]) -> float:
    """L-infinity distance of the training split's class shares, matched by class name."""

    def shares(stats: dict[str, Any]) -> dict[str, float]:
        return dict(zip(stats["class_names"], stats["splits"]["train"]["class_shares"], strict=True))

    mine, theirs = shares(statistics), shares(reference)
    return max(abs(mine.get(name, 0.0) - theirs.get(name, 0.0)) for name in {*mine, *theirs})


def pixel_divergences(statistics: dict[str, Any], reference: dict[str, Any]) -> list[float]:
    """Jensen-Shannon divergence (base 2: 0 same, 1 disjoint) of each channel's histogram."""
    return [
        float(jensenshannon(np.asarray(mine, float), np.asarray(theirs, float), base=2) ** 2)
        for mine, theirs in zip(
            statistics["splits"]["train"]["channel_histograms"],
            reference["splits"]["train"]["channel_histograms"],
            strict=True,
        )
    ]


def drift_checks(statistics: dict[str, Any], reference: dict[str, Any], settings: Settings) -> list[Check]:
    drift = class_share_drift(statistics, reference)
    checks = [
        _check("drift.class_shares", DRIFT, drift, settings.max_class_share_drift,
               drift > settings.max_class_share_drift,
               f"L-infinity distance of the training class shares from the reference's {drift:.4f}", settings)
    ]  # fmt: skip
    ours = statistics["splits"]["train"]["channel_mean"]
    theirs = reference["splits"]["train"]["channel_mean"]
    for channel, divergence in enumerate(pixel_divergences(statistics, reference)):
        checks.append(
            _check(f"drift.pixels.{CHANNELS[channel]}", DRIFT, divergence, settings.max_pixel_divergence,
                   divergence > settings.max_pixel_divergence,
                   f"Jensen-Shannon divergence {divergence:.4f} of the {CHANNELS[channel]} histogram "
                   f"(mean {ours[channel]:.3f}, reference {theirs[channel]:.3f})", settings)
        )  # fmt: skip
    return checks


def content_checks(statistics: dict[str, Any], settings: Settings) -> list[Check]:
    """Checks of the data alone: leakage, duplicates, blank images."""
    splits = statistics["splits"]
    leaked = statistics["leaked_test_images"]
    shares = {name: split["duplicate_images"] / max(split["count"], 1) for name, split in splits.items()}
    worst = max(shares, key=lambda name: shares[name])
    blank = sum(split["blank_images"] for split in splits.values())
    total = sum(split["count"] for split in splits.values())
    conflicting = sum(split["conflicting_labels"] for split in splits.values())
    return [
        _check("leakage", LEAKAGE, leaked, settings.max_leaked_images, leaked > settings.max_leaked_images,
               f"{leaked} test images also in the training split "
               f"({statistics['leaked_distinct_images']} distinct)", settings),
        _check("duplicates", DUPLICATES, shares[worst], settings.max_duplicate_share,
               shares[worst] > settings.max_duplicate_share,
               f"{splits[worst]['duplicate_images']} duplicate images in the {worst} split "
               f"({conflicting} with conflicting labels)", settings),
        _check("blank", BLANK, blank / max(total, 1), settings.max_blank_share,
               blank / max(total, 1) > settings.max_blank_share,
               f"{blank} near-constant images (pixel std < {statistics['blank_std']:g})", settings),
    ]  # fmt: skip


def validate(
    statistics: dict[str, Any],
    settings: Settings,
    reference: dict[str, Any] | None = None,
    reference_schema: dict[str, Any] | None = None,
) -> list[Check]:
    """Every check of `statistics`: against the reference's schema and statistics when given,
    else against the schema the data implies (no drift checks without a reference)."""
    schema = reference_schema or infer_schema(reference or statistics, settings)
    # The minimum is a setting, not a property of the reference data.
    schema = {**schema, "min_images_per_class": settings.min_images_per_class}
    checks = schema_checks(statistics, schema, settings) + content_checks(statistics, settings)
    if reference is not None:
        checks += drift_checks(statistics, reference, settings)
    return checks


def blocking(checks: list[Check]) -> list[Check]:
    return [check for check in checks if check.verdict == ERROR]


def status(checks: list[Check]) -> str:
    """ "failed" (an error stops the pipeline), "warned" (anomalies, none blocking) or "passed"."""
    if blocking(checks):
        return "failed"
    return "warned" if any(check.anomaly for check in checks) else "passed"
