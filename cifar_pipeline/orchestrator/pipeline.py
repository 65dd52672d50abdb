"""The orchestrator: decide which steps run, run each as an MLflow project in its own
container (child runs of one parent run), pass run IDs between them, summarise.

A step whose key (caching.py: step image, parameters, input digests) matches an earlier
FINISHED run is not run again: that run is reused, and the summary says why each step
ran or was reused.

Everything that can be checked before a container starts is checked first: resume run
IDs, the Docker engine, the GPU request.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
import requests
from docker.errors import NotFound
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from cifar_pipeline import docker_utils
from cifar_pipeline.orchestrator.caching import (
    REUSED_FROM_TAG,
    REUSED_STEP_TAG,
    StepCache,
    parse_rerun,
)
from cifar_pipeline.orchestrator.containers import host_has_nvidia_gpu, step_docker_args
from cifar_pipeline.orchestrator.wheelhouse import pip_build_args
from cifar_pipeline.tracking import (
    BUILD,
    CHECKPOINT,
    FETCH,
    PIPELINE_NAME,
    PIPELINE_TAG,
    PRODUCES,
    QUALITY_GATE_TAG,
    STEP_TAG,
    STEPS,
    SYSTEMTEST,
    TRAIN,
    UPSTREAM_PARAM,
    UpstreamError,
    lineage,
    require_step_run,
)

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[2]
STEPS_DIR = PROJECT_DIR / "steps"
FINISHED = RunStatus.to_string(RunStatus.FINISHED)
FAILED = RunStatus.to_string(RunStatus.FAILED)

# Resume parameters, most downstream first: the one given decides where to start.
RESUME_START = (("image_run_id", SYSTEMTEST), ("model_run_id", BUILD), ("data_run_id", TRAIN))
RESUME_INPUT_STEP = {"data_run_id": FETCH, "model_run_id": TRAIN, "image_run_id": BUILD}


class PipelineError(RuntimeError):
    """The pipeline cannot go on; the message says which step or input and why."""


@dataclass
class StepResult:
    step: str
    run_id: str  # the run whose output the pipeline used
    status: str  # FINISHED, FAILED, ... or REUSED for a resumed-from run
    seconds: float
    action: str = "ran"  # ran | reused (cache hit) | given (a resume run ID)
    reasons: list[str] = field(default_factory=list)


def plan(resume: DictConfig) -> tuple[list[str], dict[str, str]]:
    """Steps to run, and the upstream run IDs given by the user."""
    given = {key: str(resume.get(key) or "").strip() for key, _ in RESUME_START}
    given = {key: value for key, value in given.items() if value}
    if len(given) > 1:
        raise PipelineError(
            f"give at most one of data_run_id, model_run_id, image_run_id; got {', '.join(given)}"
        )
    for key, first_step in RESUME_START:
        if key in given:
            return list(STEPS[STEPS.index(first_step) :]), given
    return list(STEPS), {}


def continue_unfinished_training(
    steps: list[str], upstream: dict[str, str], client: MlflowClient
) -> tuple[list[str], dict[str, str]]:
    """A `model_run_id` naming a train run that did not finish, but checkpointed, is continued.

    The plan becomes train (from that run's last checkpoint, on that run's data), build,
    system test. Any other `model_run_id` is left for `validate_resume` to judge.
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
    return [TRAIN, BUILD, SYSTEMTEST], {"data_run_id": data_run_id, "resume_run_id": run_id}


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
    log.info("resuming pipeline %s with its configuration", run_id)
    return merged


def validate_resume(given: dict[str, str], client: MlflowClient) -> None:
    for key, run_id in given.items():
        try:
            require_step_run(run_id, RESUME_INPUT_STEP[key], client)
        except UpstreamError as exc:
            raise PipelineError(f"cannot resume: {exc}") from exc


def absolute_tracking_uri(uri: str) -> str:
    """Make a relative sqlite/file store absolute: containers mount it by path."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite" and not parsed.path.startswith("//"):
        return f"sqlite:///{Path(parsed.path.lstrip('/')).resolve()}"
    if parsed.scheme in ("", "file") and not parsed.netloc:
        return Path(parsed.path).resolve().as_uri()
    return uri


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """An http(s) tracking server must answer now: one clear error instead of MLflow's
    retries (minutes) on the first call, and before any run or container exists."""
    if urlparse(uri).scheme not in ("http", "https"):
        return
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout).raise_for_status()
    except requests.RequestException as exc:
        raise PipelineError(
            f"MLflow tracking server {uri} is unreachable ({exc.__class__.__name__}: {exc}); "
            "start it, or set MLFLOW_TRACKING_URI to one that runs"
        ) from None


def local_artifact_root(experiment_id: str, client: MlflowClient) -> Path | None:
    location = client.get_experiment(experiment_id).artifact_location
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return None
    # Experiments live under one root by default (mlruns/<experiment id>).
    return Path(parsed.path).parent


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


def step_parameters(step: str, cfg: DictConfig, upstream: dict[str, str]) -> dict[str, Any]:
    if step == FETCH:
        params = {**as_dict(cfg.data), "seed": cfg.seed}
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
    return {"image_run_id": upstream["image_run_id"], **as_dict(cfg.systemtest)}


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(config, dict):
        out: dict[str, Any] = {}
        for key, value in config.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): config}


class Pipeline:
    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.client = MlflowClient()
        self.results: list[StepResult] = []

    def run(self) -> None:
        resume_pipeline = str(self.cfg.resume.get("pipeline_run_id") or "")
        finished: dict[str, str] = {}
        if resume_pipeline:
            steps, upstream, finished = plan_resume(self.client, resume_pipeline)
        else:
            steps, upstream = continue_unfinished_training(*plan(self.cfg.resume), self.client)
            validate_resume({k: v for k, v in upstream.items() if k in RESUME_INPUT_STEP}, self.client)
        for key, run_id in upstream.items():
            if key in RESUME_INPUT_STEP and RESUME_INPUT_STEP[key] not in finished:
                self.results.append(StepResult(RESUME_INPUT_STEP[key], run_id, "REUSED", 0.0, "given"))
                mlflow.set_tag(f"pipeline.{key}", run_id)
        for step, run_id in finished.items():
            self.results.append(self._record_reuse(step, run_id, [f"finished in pipeline {resume_pipeline}"]))
            mlflow.set_tag(f"pipeline.{PRODUCES[step]}", run_id)
        if TRAIN in finished:
            self._stop_unless_blessed(finished[TRAIN])
        try:
            rerun = parse_rerun(self.cfg.cache.rerun, STEPS)
        except ValueError as exc:
            raise PipelineError(str(exc)) from exc
        if not isinstance(self.cfg.cache.enabled, bool):
            raise PipelineError(f"cache.enabled={self.cfg.cache.enabled!r}: expected true or false")
        data_mount = local_data_path(self.cfg.data) if FETCH in steps else None
        wants_gpu = self._wants_gpu(steps)
        docker = docker_utils.connect()
        image_id = self._step_image_id(docker)
        cache = StepCache(self.client, self.cfg.cache.enabled, rerun, lambda i: image_present(docker, i))
        for step in steps:
            param = UPSTREAM_PARAM.get(step)
            mounts = [data_mount] if step == FETCH and data_mount else []
            params = step_parameters(step, self.cfg, upstream)
            decision = cache.decide(step, image_id, params, upstream)
            log.info(
                "step %s: %s (%s)",
                step,
                "reusing" if decision.reuse else "running",
                "; ".join(decision.reasons),
            )
            if decision.reuse:
                result = self._record_reuse(step, decision.reuse.info.run_id, decision.reasons)
            else:
                result = self._run_step(step, params, wants_gpu, mounts)
                result.reasons = decision.reasons
                if result.status == FINISHED and decision.key is not None:
                    cache.record(result.run_id, decision.key)
            self.results.append(result)
            if result.status != FINISHED:
                raise PipelineError(
                    f"step {step} {result.status} (run {result.run_id}"
                    + (f", {param}={upstream[param]}" if param else "")
                    + "); its log is in the run's logs/ artifact"
                )
            if step == TRAIN:
                self._stop_unless_blessed(result.run_id)
            if step in PRODUCES:
                upstream[PRODUCES[step]] = result.run_id
                mlflow.set_tag(f"pipeline.{PRODUCES[step]}", result.run_id)

    def _stop_unless_blessed(self, train_run_id: str) -> None:
        run = self.client.get_run(train_run_id)
        if run.data.tags.get(QUALITY_GATE_TAG) == "failed":
            accuracy = run.data.metrics.get("final_test_accuracy", float("nan"))
            raise PipelineError(
                f"train run {train_run_id}: test accuracy {accuracy:.4f} is below "
                f"train.min_accuracy={self.cfg.train.min_accuracy}; the model is not blessed, "
                "stopping before build"
            )

    def _wants_gpu(self, steps: list[str]) -> bool:
        if TRAIN not in steps:
            return False
        device = self.cfg.train.device
        if device == "cpu":
            return False
        has_gpu = host_has_nvidia_gpu()
        if device == "cuda" and not has_gpu:
            raise PipelineError("train.device=cuda but no NVIDIA GPU on this host (nvidia-smi -L)")
        return has_gpu

    def _step_image_id(self, docker: Any) -> str:
        """Build the step image (or find the one configured); its ID is part of every step key."""
        settings = self.cfg.docker
        if not settings.build_step_image:
            try:
                image_id = str(docker.images.get(settings.step_image).id)
            except NotFound as exc:
                raise PipelineError(
                    f"docker.step_image={settings.step_image!r} is not in the Docker engine "
                    "and docker.build_step_image=false"
                ) from exc
            mlflow.set_tag("pipeline.step_image_id", image_id)
            return image_id
        log.info("building step image %s (base %s)", settings.step_image, settings.base_image)
        with pip_build_args(settings.wheelhouse, settings.wheelhouse_port) as pip_args:
            image = docker_utils.build_image(
                docker,
                PROJECT_DIR,
                settings.step_image,
                buildargs={"BASE_IMAGE": settings.base_image, **pip_args},
                network_mode="host",
            )
        mlflow.set_tag("pipeline.step_image_id", image.id)
        return str(image.id)

    def _record_reuse(self, step: str, reused: str, reasons: list[str]) -> StepResult:
        """A child run that says which run this step reused, so the UI shows the whole pipeline."""
        parent = mlflow.active_run()
        assert parent is not None
        record = self.client.create_run(
            parent.info.experiment_id,
            run_name=f"{step} (reused)",
            tags={
                "mlflow.parentRunId": parent.info.run_id,
                PIPELINE_TAG: PIPELINE_NAME,
                REUSED_STEP_TAG: step,
                REUSED_FROM_TAG: reused,
                "mlflow.note.content": f"reused {reused}: {'; '.join(reasons)}",
            },
        )
        self.client.set_terminated(record.info.run_id, FINISHED)
        return StepResult(step, reused, FINISHED, 0.0, "reused", reasons)

    def _run_step(self, step: str, params: dict[str, Any], gpus: bool, mounts: list[Path]) -> StepResult:
        parent = mlflow.active_run()
        assert parent is not None
        experiment_id = parent.info.experiment_id
        args = step_docker_args(
            step, mlflow.get_tracking_uri(), local_artifact_root(experiment_id, self.client), gpus, mounts
        )
        container = f"cifar-pipeline-{step}-{uuid.uuid4().hex[:8]}"
        args["name"] = container
        log.info("=== step %s: %s", step, json.dumps(params))
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"{step}-container-") as work:
            recorder = docker_utils.ContainerLogRecorder(container, Path(work) / "container.log")
            submitted = mlflow.projects.run(
                uri=str(STEPS_DIR / step),
                entry_point="main",
                parameters=params,
                experiment_id=experiment_id,
                docker_args=args,
                env_manager="local",
                synchronous=False,
                build_image=False,
            )
            try:
                submitted.wait()
            except BaseException:
                submitted.cancel()
                raise
            finally:
                # MLflow runs containers with --rm, but a cancelled `docker run` client
                # leaves its container running: remove it, whatever happened.
                docker_utils.remove_container(docker_utils.connect(), container)
                self._fail_if_still_running(submitted.run_id)
                # The container's whole output, also when it was killed before the step
                # could attach its own log.
                if (recorded := recorder.stop()) is not None:
                    self.client.log_artifact(submitted.run_id, str(recorded), "logs")
        status = self.client.get_run(submitted.run_id).info.status
        return StepResult(step, submitted.run_id, status, time.monotonic() - started)

    def _fail_if_still_running(self, run_id: str) -> None:
        if self.client.get_run(run_id).info.status == RunStatus.to_string(RunStatus.RUNNING):
            self.client.set_terminated(run_id, FAILED)


def summary_table(results: list[StepResult]) -> str:
    lines = [f"{'step':<11}{'run id':<34}{'status':<10}{'action':<8}{'seconds':>8}"]
    for r in results:
        lines.append(f"{r.step:<11}{r.run_id:<34}{r.status:<10}{r.action:<8}{r.seconds:>8.1f}")
        lines += [f"{'':<11}why: {reason}" for reason in r.reasons]
    return "\n".join(lines)


def image_present(docker: Any, image_id: str) -> bool:
    try:
        docker.images.get(image_id)
    except NotFound:
        return False
    return bool(image_id)


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    run_id: str  # the pipeline run; empty if none was started


def run_pipeline(cfg: DictConfig, point_tags: dict[str, str] | None = None) -> Outcome:
    """Run the pipeline in the current (or a new) parent run; return its exit code and run ID.

    With `point_tags` (a sweep point) the pipeline run is nested under the active sweep run.
    """
    mlflow.set_tracking_uri(absolute_tracking_uri(mlflow.get_tracking_uri()))
    try:
        check_tracking_server(mlflow.get_tracking_uri())
    except PipelineError as exc:
        log.error("pipeline failed: %s", exc)
        return Outcome(1, "")
    # Under `mlflow run .` this is the main entry point's run; in a sweep, a run of its own.
    parent = mlflow.start_run(nested=point_tags is not None)
    mlflow.set_tags({STEP_TAG: "pipeline", PIPELINE_TAG: PIPELINE_NAME, **(point_tags or {})})
    try:
        cfg = resumed_config(cfg, MlflowClient())
    except PipelineError as exc:
        log.error("pipeline failed: %s", exc)
        mlflow.set_tag("pipeline.error", str(exc))
        mlflow.end_run(FAILED)
        return Outcome(1, parent.info.run_id)
    resolved = as_dict(cfg)
    mlflow.log_dict(resolved, "config.yaml")
    mlflow.log_params(flatten(resolved))
    pipeline = Pipeline(cfg)
    status, error = FINISHED, ""
    try:
        pipeline.run()
    except (
        PipelineError,
        docker_utils.DockerUnavailable,
        docker_utils.ImageBuildError,
        OSError,
        MlflowException,
    ) as exc:
        status, error = FAILED, str(exc)
    except BaseException as exc:  # Ctrl-C included: the parent must not stay RUNNING
        status, error = FAILED, f"{exc.__class__.__name__}: {exc}"
        raise
    finally:
        table = summary_table(pipeline.results)
        log.info("pipeline %s (run %s)\n%s", status, parent.info.run_id, table)
        mlflow.log_text(table + "\n", "summary.txt")
        mlflow.log_dict(
            {"status": status, "error": error, "steps": [asdict(r) for r in pipeline.results]}, "summary.json"
        )
        for result in pipeline.results:
            mlflow.log_metric(f"seconds_{result.step}", result.seconds)
        if error:
            mlflow.set_tag("pipeline.error", error[:5000])
            log.error("pipeline failed: %s", error)
        mlflow.end_run(status)
    return Outcome(0 if status == FINISHED else 1, parent.info.run_id)
