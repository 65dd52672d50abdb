"""Planning: which steps run, from which earlier runs, with which parameters.

Everything here decides; nothing starts a container. pipeline.py runs the plan.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from cifar_pipeline.tracking import (
    BUILD,
    CHECKPOINT,
    FETCH,
    PRODUCES,
    PROMOTE,
    STEP_TAG,
    STEPS,
    SYSTEMTEST,
    TRAIN,
    UpstreamError,
    lineage,
    require_step_run,
)

log = logging.getLogger(__name__)

FINISHED = RunStatus.to_string(RunStatus.FINISHED)


class PipelineError(RuntimeError):
    """The pipeline cannot go on; the message says which step or input and why."""


# Resume parameters, most downstream first: the one given decides where to start.
RESUME_START = (
    ("systemtest_run_id", PROMOTE),
    ("image_run_id", SYSTEMTEST),
    ("model_run_id", BUILD),
    ("data_run_id", TRAIN),
)
RESUME_INPUT_STEP = {
    "data_run_id": FETCH,
    "model_run_id": TRAIN,
    "image_run_id": BUILD,
    "systemtest_run_id": SYSTEMTEST,
}


def plan(resume: DictConfig) -> tuple[list[str], dict[str, str]]:
    """Steps to run, and the upstream run IDs given by the user."""
    given = {key: str(resume.get(key) or "").strip() for key, _ in RESUME_START}
    given = {key: value for key, value in given.items() if value}
    if len(given) > 1:
        keys = ", ".join(key for key, _ in reversed(RESUME_START))
        raise PipelineError(f"give at most one of {keys}; got {', '.join(given)}")
    for key, first_step in RESUME_START:
        if key in given:
            return list(STEPS[STEPS.index(first_step) :]), given
    return list(STEPS), {}


def stop_after(steps: list[str], until: str) -> tuple[list[str], list[str]]:
    """The planned steps up to and including `until` ("": all), and those it leaves out."""
    if not until:
        return steps, []
    if until not in STEPS:
        raise PipelineError(f"until={until!r}: expected one of {', '.join(STEPS)}")
    if until not in steps:
        raise PipelineError(
            f"until={until!r}: this pipeline runs {', '.join(steps) or 'no step'} only; expected one of those"
        )
    cut = steps.index(until) + 1
    return steps[:cut], steps[cut:]


def continue_unfinished_training(
    steps: list[str], upstream: dict[str, str], client: MlflowClient
) -> tuple[list[str], dict[str, str]]:
    """A `model_run_id` naming a train run that did not finish, but checkpointed, is continued.

    The plan becomes train (from that run's last checkpoint, on that run's data) and every
    step after it. Any other `model_run_id` is left for `validate_resume` to judge.
    """
    run_id = upstream.get("model_run_id", "")
    if not run_id:
        return steps, upstream
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return steps, upstream  # validate_resume names the problem
    unfinished = run.info.status in ("FAILED", "KILLED")
    if run.data.tags.get(STEP_TAG) != TRAIN or not unfinished:
        return steps, upstream
    if not any(a.path == CHECKPOINT for a in client.list_artifacts(run_id, "checkpoints")):
        raise PipelineError(f"cannot resume: train run {run_id} is {run.info.status} and has no {CHECKPOINT}")
    data_run_id = lineage(run).get("data_run_id", "")
    log.info("train run %s is %s: continuing it from its last checkpoint", run_id, run.info.status)
    return list(STEPS[STEPS.index(TRAIN) :]), {"data_run_id": data_run_id, "resume_run_id": run_id}


def pipeline_run(client: MlflowClient, run_id: str) -> Run:
    label = f"resume={run_id!r}"
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise PipelineError(f"{label}: no such run in {mlflow.get_tracking_uri()}") from exc
    if run.data.tags.get(STEP_TAG) != "pipeline":
        raise PipelineError(f"{label}: not a pipeline run (step tag {run.data.tags.get(STEP_TAG)!r})")
    if run.info.status == FINISHED:
        raise PipelineError(f"{label}: that pipeline FINISHED; there is nothing to resume")
    return run


def plan_resume(client: MlflowClient, run_id: str) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Resume a pipeline run that failed: (steps left, upstream for them, finished steps' runs).

    Its finished steps are the ones whose outputs it recorded (`pipeline.<output>` tags)
    and that are still usable; a train run it left FAILED or KILLED with a checkpoint is
    continued from there.
    """
    run = pipeline_run(client, run_id)
    finished: dict[str, str] = {}
    for step in STEPS[:-1]:
        produced = run.data.tags.get(f"pipeline.{PRODUCES[step]}", "")
        try:
            require_step_run(produced, step, client)
        except UpstreamError:
            break
        finished[step] = produced
    upstream = {PRODUCES[step]: finished[step] for step in finished}
    steps = list(STEPS[len(finished) :])
    if steps[0] == TRAIN:
        trains = client.search_runs(
            [run.info.experiment_id],
            f"tags.`mlflow.parentRunId` = '{run_id}' and tags.`{STEP_TAG}` = '{TRAIN}'",
            order_by=["attributes.start_time DESC"],
        )
        for train in trains:
            if train.info.status in ("FAILED", "KILLED") and any(
                a.path == CHECKPOINT for a in client.list_artifacts(train.info.run_id, "checkpoints")
            ):
                upstream["resume_run_id"] = train.info.run_id
                break
    return steps, upstream, finished


def resumed_config(cfg: DictConfig, client: MlflowClient) -> DictConfig:
    """With resume.pipeline_run_id: that pipeline's configuration, so its steps' keys match."""
    run_id = str(cfg.resume.get("pipeline_run_id") or "").strip()
    if not run_id:
        return cfg
    pipeline_run(client, run_id)
    with tempfile.TemporaryDirectory(prefix="resume-") as work:
        try:
            earlier = OmegaConf.load(client.download_artifacts(run_id, "config.yaml", work))
        except (MlflowException, OSError) as exc:
            raise PipelineError(f"resume={run_id!r}: its config.yaml cannot be read: {exc}") from exc
    merged = OmegaConf.merge(cfg, earlier)
    assert isinstance(merged, DictConfig)
    merged.resume = {key: "" for key in merged.resume} | {"pipeline_run_id": run_id}
    merged.stop_after = cfg.get("stop_after", "")  # where this invocation stops, not the earlier one
    log.info("resuming pipeline %s with its configuration", run_id)
    return merged


def validate_resume(given: dict[str, str], client: MlflowClient) -> None:
    for key, run_id in given.items():
        try:
            require_step_run(run_id, RESUME_INPUT_STEP[key], client)
        except UpstreamError as exc:
            raise PipelineError(f"cannot resume: {exc}") from exc


def as_dict(node: Any) -> dict[str, Any]:
    """A resolved config node as a plain dict."""
    container = OmegaConf.to_container(node, resolve=True)
    assert isinstance(container, dict)
    return {str(key): value for key, value in container.items()}


def local_data_path(data: DictConfig) -> Path | None:
    """The absolute host path that `data.data_url` names, checked; None for URLs and built-in data.

    The fetch container sees this path only because it is mounted (read-only, at the same
    path), so a relative path is made absolute and a missing one refused before any container.
    """
    url = str(data.get("data_url") or "")
    if data.source == "imagefolder" and not url:
        raise PipelineError(
            "data.data_url is required for source=imagefolder: a folder, .zip or .tar.gz of class folders"
        )
    scheme = urlparse(url).scheme
    if not url or scheme in ("http", "https"):
        return None
    if scheme not in ("", "file"):
        raise PipelineError(f"data.data_url={url!r}: expected an http(s) URL or a local path")
    path = Path(unquote(urlparse(url).path) if scheme == "file" else url).expanduser().resolve()
    if not path.exists():
        raise PipelineError(f"data.data_url={url!r}: no such file or directory ({path})")
    return path


def step_parameters(
    step: str, cfg: DictConfig, upstream: dict[str, str], resolved: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The step's MLproject parameters. `resolved`: those the pipeline resolves as it plans the
    step: fetch's validation settings and `reference_run_id`; promote's `champion_version`
    (the version the registry's alias names, or "none")."""
    resolved = resolved or {}
    if step == FETCH:
        params = {**as_dict(cfg.data), "seed": cfg.seed, **resolved}
        local = local_data_path(cfg.data)
        return {**params, "data_url": str(local)} if local else params
    if step == TRAIN:
        resume = {"resume_run_id": upstream["resume_run_id"]} if upstream.get("resume_run_id") else {}
        settings = {**as_dict(cfg.model), **as_dict(cfg.optim), **as_dict(cfg.train)}
        return {"data_run_id": upstream["data_run_id"], "seed": cfg.seed, **settings, **resume}
    if step == BUILD:
        return {
            "model_run_id": upstream["model_run_id"],
            "image_repo": cfg.serve.image_repo,
            "base_image": cfg.serve.base_image,
            "registry": cfg.serve.registry,
        }
    if step == SYSTEMTEST:
        return {"image_run_id": upstream["image_run_id"], **as_dict(cfg.systemtest)}
    return {
        "systemtest_run_id": upstream["systemtest_run_id"],
        **as_dict(cfg.promote),
        "force": str(cfg.promote.force).lower(),
        "champion_version": resolved.get("champion_version", "current"),
    }
