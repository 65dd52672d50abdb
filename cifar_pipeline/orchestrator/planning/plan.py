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
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from cifar_pipeline import names
from cifar_pipeline.names import FINISHED, output_tag
from cifar_pipeline.step_declarations import PIPELINE_STEPS, StepDeclaration, StepGraph
from cifar_pipeline.tracking import STEP_TAG, UpstreamError, lineage, require_step_run

log = logging.getLogger(__name__)

UNFINISHED = (names.FAILED, names.KILLED)


class PipelineError(RuntimeError):
    """The pipeline cannot go on; the message says which step or input and why."""


def plan(resume: DictConfig, graph: StepGraph = PIPELINE_STEPS) -> tuple[list[str], dict[str, str]]:
    """Steps to run, and the upstream run IDs given by the user (at most one resume key:
    the step that consumes it and every step after it run)."""
    keys = graph.resume_keys()
    given = {key: str(resume.get(key) or "").strip() for key, _ in keys}
    given = {key: value for key, value in given.items() if value}
    if len(given) > 1:
        names = ", ".join(key for key, _ in reversed(keys))
        raise PipelineError(f"give at most one of {names}; got {', '.join(given)}")
    for key, first_step in keys:
        if key in given:
            return list(graph.after(first_step)), given
    return list(graph.names), {}


def stop_after(
    steps: list[str], until: str, graph: StepGraph = PIPELINE_STEPS
) -> tuple[list[str], list[str]]:
    """The planned steps up to and including `until` ("": all), and those it leaves out."""
    if not until:
        return steps, []
    if until not in graph.names:
        raise PipelineError(f"until={until!r}: expected one of {', '.join(graph.names)}")
    if until not in steps:
        raise PipelineError(
            f"until={until!r}: this pipeline runs {', '.join(steps) or 'no step'} only; expected one of those"
        )
    cut = steps.index(until) + 1
    return steps[:cut], steps[cut:]


def has_continuation(client: MlflowClient, run_id: str, step: StepDeclaration) -> bool:
    """Whether the run left the artifact that lets it be continued (a checkpoint)."""
    folder = step.continue_from.rpartition("/")[0] or None
    return any(a.path == step.continue_from for a in client.list_artifacts(run_id, folder))


def continue_unfinished_run(
    steps: list[str], upstream: dict[str, str], client: MlflowClient, graph: StepGraph = PIPELINE_STEPS
) -> tuple[list[str], dict[str, str]]:
    """A resume run ID naming a run that did not finish, of a step that can be continued
    (train, from its last checkpoint), is continued.

    The plan becomes that step (on that run's own input) and every step after it. Any
    other run ID is left for `validate_resume` to judge.
    """
    if len(upstream) != 1:
        return steps, upstream
    ((param, run_id),) = upstream.items()
    step = graph.producer_of[param]
    if not step.continue_from:
        return steps, upstream
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return steps, upstream  # validate_resume names the problem
    if run.data.tags.get(STEP_TAG) != step.name or run.info.status not in UNFINISHED:
        return steps, upstream
    if not has_continuation(client, run_id, step):
        raise PipelineError(
            f"cannot resume: {step.name} run {run_id} is {run.info.status} and has no {step.continue_from}"
        )
    log.info(
        "%s run %s is %s: continuing it from its %s", step.name, run_id, run.info.status, step.continue_from
    )
    continued = {step.consumes: lineage(run).get(step.consumes, "")} if step.consumes else {}
    return list(graph.after(step.name)), {**continued, "resume_run_id": run_id}


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


def plan_resume(
    client: MlflowClient, run_id: str, graph: StepGraph = PIPELINE_STEPS
) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Resume a pipeline run that failed: (steps left, upstream for them, finished steps' runs).

    Its finished steps are the ones whose outputs it recorded (`pipeline.<output>` tags)
    and that are still usable; a run of the first step left that it left FAILED or KILLED
    with its continuation (train: a checkpoint) is continued from there.
    """
    run = pipeline_run(client, run_id)
    finished: dict[str, str] = {}
    for step in graph:
        if step.produces is None:
            break
        produced = run.data.tags.get(output_tag(step.produces.param), "")
        try:
            require_step_run(produced, step.name, client, graph=graph)
        except UpstreamError:
            break
        finished[step.name] = produced
    upstream = {graph[name].produces.param: run_id for name, run_id in finished.items()}  # type: ignore[union-attr]
    steps = list(graph.names[len(finished) :])
    first = graph[steps[0]]
    if first.continue_from:
        earlier = client.search_runs(
            [run.info.experiment_id],
            f"tags.`mlflow.parentRunId` = '{run_id}' and tags.`{STEP_TAG}` = '{first.name}'",
            order_by=["attributes.start_time DESC"],
        )
        for candidate in earlier:
            if candidate.info.status in UNFINISHED and has_continuation(client, candidate.info.run_id, first):
                upstream["resume_run_id"] = candidate.info.run_id
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
            earlier = OmegaConf.load(client.download_artifacts(run_id, names.CONFIG_ARTIFACT, work))
        except (MlflowException, OSError) as exc:
            raise PipelineError(f"resume={run_id!r}: its config.yaml cannot be read: {exc}") from exc
    merged = OmegaConf.merge(cfg, earlier)
    assert isinstance(merged, DictConfig)
    merged.resume = {key: "" for key in merged.resume} | {"pipeline_run_id": run_id}
    merged.stop_after = cfg.get("stop_after", "")  # where this invocation stops, not the earlier one
    log.info("resuming pipeline %s with its configuration", run_id)
    return merged


def validate_resume(given: dict[str, str], client: MlflowClient, graph: StepGraph = PIPELINE_STEPS) -> None:
    for key, run_id in given.items():
        if key not in graph.producer_of:
            continue
        try:
            require_step_run(run_id, graph.producer_of[key].name, client, graph=graph)
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
    step: StepDeclaration, cfg: DictConfig, upstream: dict[str, str], resolved: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The step's MLproject parameters: the upstream run it consumes, its config groups'
    keys and its top-level config keys, then what its hooks resolved as it starts (these
    win: fetch's validation settings and reference, promote's champion version)."""
    params: dict[str, Any] = {step.consumes: upstream[step.consumes]} if step.consumes else {}
    for group in step.config_groups:
        params.update(as_dict(cfg[group]))
    for key in step.config_keys:
        params[key] = cfg[key]
    return {**params, **(resolved or {})}
