"""The fetch step's hooks: its validation settings and local data checked before anything
runs; the reference it validates against (a parameter, and an input of its key); what
identifies a local or unchecksummed input in its key; the validation verdict, and the stop
when the data was refused."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from cifar_pipeline import names
from cifar_pipeline.orchestrator.hooks import Resolved, StepHooks
from cifar_pipeline.orchestrator.hooks.promote import planned_champion
from cifar_pipeline.orchestrator.planning.cache import StepKey
from cifar_pipeline.orchestrator.planning.plan import PipelineError, as_dict, local_data_path
from cifar_pipeline.orchestrator.reporting.report import StepResult, Verdict
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
            identity = require_reference(chosen, client, names.VALIDATION_REFERENCE_TAG)
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
    digest = fetch_run.data.tags.get(names.DATA_DIGEST_TAG, "")
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


def local_fingerprint(path: Path) -> str:
    """Sizes and modification times of a local file or every file under a folder: cheap, and
    it changes when the data does (the fetch step still verifies content)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path) if file != path else file.name}\0{stat.st_size}\0".encode())
        digest.update(f"{stat.st_mtime_ns}\n".encode())
    return f"files:{digest.hexdigest()}"


def fetch_input(params: dict[str, Any]) -> tuple[str | None, str]:
    """What identifies the fetch step's input beyond its parameters; (None, why) if nothing does."""
    url, checksum = str(params.get("data_url") or ""), str(params.get("data_checksum") or "")
    # The parameters pin the content: a checksum, the built-in digits, or CIFAR-10 (any
    # copy of it is verified against the official checksum).
    if checksum or params.get("source") in ("digits", "cifar10"):
        return "", ""
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        return None, f"data_url {url} has no data_checksum: its content is only known after downloading it"
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else url)
    return (local_fingerprint(path), "") if path.exists() else (None, f"data_url {url} does not exist")


class FetchHooks(StepHooks):
    settings: dict[str, Any]
    reference: Reference | None = None  # resolved as the step starts
    data_path: Path | None = None

    def check(self, planned: list[str]) -> str:
        self.settings = settings(self.ctx.cfg.validation)
        if self.declaration.name in planned:
            self.data_path = local_data_path(self.ctx.cfg.data)
            planned_champion(self.ctx)  # a broken champion stops the pipeline before any container
        return ""

    def resolve(self, upstream: dict[str, str]) -> Resolved:
        # validated against the champion's data, unless configured otherwise
        self.reference = reference(self.ctx.client, self.ctx.cfg.validation, planned_champion(self.ctx))
        log.info("step fetch: data validated against %s", self.reference.note)
        params: dict[str, Any] = {**self.settings, "reference_run_id": self.reference.run_id}
        if self.data_path is not None:  # the container sees it at the same, absolute, path
            params["data_url"] = str(self.data_path)
        fingerprint, why = fetch_input({**as_dict(self.ctx.cfg.data), **params})
        inputs = {KEY_INPUT: self.reference.data_digest}
        if fingerprint:
            inputs["data_source"] = fingerprint
        mounts = [self.data_path] if self.data_path else []
        return Resolved(params, inputs, mounts, uncacheable=why if fingerprint is None else "")

    def after(self, result: StepResult, goes_on: bool) -> None:
        if self.reference is None:  # finished in an earlier pipeline: judged there
            return
        fetch_run = self.ctx.client.get_run(result.run_id)
        if lines := summary_lines(fetch_run, self.reference):
            self.ctx.report.verdicts["validation"] = Verdict(
                "data validation", lines, names.VALIDATION_VERDICT_TAG
            )
        if why := refusal(fetch_run):
            raise PipelineError(why)

    def key_after(self, key: StepKey, run: Run) -> StepKey | None:
        return key_after(key, run)
