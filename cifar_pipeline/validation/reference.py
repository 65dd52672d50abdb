"""The reference a data set is validated against: a FINISHED fetch run with statistics.

By default the orchestrator picks the data the champion model was trained on; a user can
name a fetch run (`validation.reference=<run ID>`) or none. A named run that is not a fetch
run, or has no statistics, is refused naming the run.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from cifar_pipeline import names
from cifar_pipeline.tracking import FETCH, UpstreamError, require_step_run
from cifar_pipeline.validation.artifacts import FOLDER, SCHEMA, STATISTICS


class UnusableReference(UpstreamError):
    """The reference run cannot be used: the message names the run and why."""


def require_reference(run_id: str, client: MlflowClient, setting: str = "reference_run_id") -> dict[str, str]:
    """{"run_id", "data_digest"} of a usable reference run, else UnusableReference naming it as
    `setting` (the step's parameter, or the pipeline's `validation.reference`)."""
    label = f"{setting}={run_id!r}"
    try:
        run = require_step_run(run_id, FETCH, client, label)
    except UpstreamError as exc:
        raise UnusableReference(str(exc)) from None
    present = {info.path for info in client.list_artifacts(run_id, FOLDER)}
    if f"{FOLDER}/{STATISTICS}" not in present:
        raise UnusableReference(
            f"{label}: fetch run has no {FOLDER}/{STATISTICS} (fetched before data validation "
            "existed); give another reference or none"
        )
    return {"run_id": run_id, "data_digest": run.data.tags.get(names.DATA_DIGEST_TAG, "")}


@dataclass(frozen=True)
class ReferenceData:
    """What the fetch step validates against: a fetch run's statistics and schema, or nothing."""

    identity: dict[str, str] | None = None  # {"run_id", "data_digest"}
    statistics: dict[str, Any] | None = None
    schema: dict[str, Any] | None = None  # None: the run logged none
    note: str = "no reference: the schema is inferred from this data; no drift checks"


def load_reference(run_id: str, client: MlflowClient) -> ReferenceData:
    """The reference run's statistics and schema; none for an empty run ID."""
    if not run_id:
        return ReferenceData()
    identity = require_reference(run_id, client)
    with tempfile.TemporaryDirectory(prefix="reference-") as work:
        folder = Path(client.download_artifacts(run_id, FOLDER, work))
        statistics = json.loads((folder / STATISTICS).read_text())
        schema_path = folder / SCHEMA
        schema = json.loads(schema_path.read_text()) if schema_path.is_file() else None
    note = f"fetch run {run_id} (data {identity['data_digest'][:12]})"
    return ReferenceData(identity, statistics, schema, note)
