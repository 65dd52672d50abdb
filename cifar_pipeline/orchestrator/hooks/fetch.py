"""The orchestrator's side of data validation: its settings checked before anything runs, the
reference the fetch step validates against (a parameter, and an input of its key), and the
validation lines of the pipeline's summary."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from cifar_pipeline.orchestrator.caching import StepKey
from cifar_pipeline.orchestrator.planning import PipelineError
from cifar_pipeline.promotion.registry import Champion
from cifar_pipeline.tracking import lineage
from cifar_pipeline.validation.artifacts import STATUS_TAG, SUMMARY_TAG
from cifar_pipeline.validation.reference import UnusableReference, require_reference
from cifar_pipeline.validation.settings import Settings, SettingsError

log = logging.getLogger(__name__)

CHAMPION, NONE = "champion", "none"
KEY_INPUT = "validation_reference"


@dataclass(frozen=True)
class Reference:
    run_id: str  # "" for none
    data_digest: str  # the key input: the reference's data digest, or "none"
    note: str  # how it was chosen, for the log

    @classmethod
    def none(cls, note: str) -> Reference:
        return cls("", NONE, note)


def settings(cfg: DictConfig) -> dict[str, Any]:
    """The fetch step's validation parameters; a bad `validation.*` value stops the pipeline."""
    try:
        return Settings.parse(cfg).as_params()
    except SettingsError as exc:
        raise PipelineError(str(exc)) from None


def reference(client: MlflowClient, cfg: DictConfig, champion: Champion | None) -> Reference:
    """The reference `validation.reference` names: the champion's data (if it has statistics),
    none, or a fetch run given by ID (refused, naming it, unless usable)."""
    chosen = str(cfg.get("reference") or "").strip()
    if chosen == NONE:
        return Reference.none("no reference (validation.reference=none)")
    if chosen != CHAMPION:
        try:
            identity = require_reference(chosen, client, "validation.reference")
        except UnusableReference as exc:
            raise PipelineError(str(exc)) from None
        return Reference(chosen, identity["data_digest"] or f"run:{chosen}", f"fetch run {chosen}")
    if champion is None:
        return Reference.none("no reference (no champion model yet)")
    data_run_id = lineage(client.get_run(champion.run_id)).get("data_run_id", "")
    try:
        identity = require_reference(data_run_id, client)
    except UnusableReference as exc:
        log.warning("data validation without a reference: the champion's data cannot be one (%s)", exc)
        return Reference.none(f"no reference (the champion's data run {data_run_id} has no statistics)")
    return Reference(data_run_id, identity["data_digest"], f"the data of champion version {champion.version}")


def key_after(key: StepKey | None, fetch_run: Run) -> StepKey | None:
    """A fetch run validated without a reference also stands for validation against its own
    data: every drift is 0 and the schema the same, so each check gives the same verdict."""
    digest = fetch_run.data.tags.get("data.digest", "")
    if key is None or key.inputs.get(KEY_INPUT) != NONE or not digest:
        return None
    return key.with_input(KEY_INPUT, digest)


def summary_lines(fetch_run: Run, reference: Reference) -> list[str]:
    """The verdict against the reference, then one line per anomaly the fetch run found."""
    tags = fetch_run.data.tags
    if STATUS_TAG not in tags:
        return []
    anomalies = [line for line in tags.get(SUMMARY_TAG, "").splitlines() if line]
    verdict = f"{tags[STATUS_TAG]} against {reference.note}: {len(anomalies) or 'no'} anomal"
    return [verdict + ("y" if len(anomalies) == 1 else "ies"), *anomalies]


def refusal(fetch_run: Run) -> str:
    """Why the pipeline stops when the fetch step refused its data ("" if it did not)."""
    if fetch_run.data.tags.get(STATUS_TAG) != "failed":
        return ""
    lines = fetch_run.data.tags.get(SUMMARY_TAG, "").splitlines()
    failing = [line for line in lines if line.startswith("error:")]
    return (
        f"data validation failed (fetch run {fetch_run.info.run_id}), stopping before training: "
        + "; ".join(failing)
    )
