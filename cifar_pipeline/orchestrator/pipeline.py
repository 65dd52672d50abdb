"""The orchestrator: run the planned steps, each as an MLflow project in its own
container (child runs of one parent run), pass run IDs between them, summarise.

planning.py decides which steps run and with what; caching.py decides, step by step,
whether an earlier run can be reused (its key: the step's environment, parameters and
input digests; and the project files it loaded, unchanged). This module does: it builds
each step's image, runs the step or records the reuse, and writes the summary.

Everything that can be checked before a container starts is checked first: resume run
IDs, the Docker engine, the GPU request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import mlflow
import requests
from docker.errors import NotFound
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from cifar_pipeline import docker_utils
from cifar_pipeline.cancellation import Cancelled, cancellable
from cifar_pipeline.code_trace import CodeIdentityError
from cifar_pipeline.local_store import absolute_tracking_uri, ensure_registered
from cifar_pipeline.orchestrator import orphans, promotion, validation
from cifar_pipeline.orchestrator.caching import (
    REUSED_FROM_TAG,
    REUSED_STEP_TAG,
    StepCache,
    StepKey,
    parse_rerun,
)
from cifar_pipeline.orchestrator.containers import host_has_nvidia_gpu
from cifar_pipeline.orchestrator.images import StepImages
from cifar_pipeline.orchestrator.naming import pipeline_run_name, reused_step_run_name
from cifar_pipeline.orchestrator.planning import (
    RESUME_INPUT_STEP,
    PipelineError,
    as_dict,
    continue_unfinished_training,
    local_data_path,
    plan,
    plan_resume,
    resumed_config,
    step_parameters,
    stop_after,
    validate_resume,
)
from cifar_pipeline.orchestrator.requirements import RequirementsError
from cifar_pipeline.orchestrator.status_guard import guard_killed_run
from cifar_pipeline.orchestrator.step_container import StepContainers, StepResult
from cifar_pipeline.orchestrator.summary import Summary, write_summary
from cifar_pipeline.orchestrator.sweep import POINT_TAG
from cifar_pipeline.orchestrator.wheelhouse import pip_build_args
from cifar_pipeline.promotion.registry import Champion
from cifar_pipeline.tracking import (
    FETCH,
    KILLED,
    PIPELINE_NAME,
    PIPELINE_TAG,
    PRODUCES,
    PROMOTE,
    QUALITY_GATE_TAG,
    STEP_TAG,
    STEPS,
    TRAIN,
    UPSTREAM_PARAM,
)

log = logging.getLogger(__name__)

FINISHED = RunStatus.to_string(RunStatus.FINISHED)
FAILED = RunStatus.to_string(RunStatus.FAILED)


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


def stop_grace_seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
        raise PipelineError(f"docker.stop_grace_seconds={value!r}: expected seconds, from 0 to 3600")
    return float(value)


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
        self.containers = StepContainers(self.client, stop_grace=30.0)
        self.promotion = ""  # the promote step's verdict, for the summary
        self.left_out: list[str] = []  # steps after `until`, not run on purpose
        self.validation: list[str] = []  # the fetch step's anomalies, for the summary
        self.validation_settings: dict[str, Any] = {}
        self.reference = validation.Reference.none("no reference")
        self.planned_champion: Champion | None = (
            None  # as the pipeline planned (None: none, or promotion off)
        )

    def hurry(self, signum: int) -> None:
        self.containers.hurry(signum)

    def end_orphans(self, docker: Any, experiment_id: str) -> None:
        ended = orphans.end_orphaned_containers(docker, self.containers.stop_grace)
        ended += orphans.end_orphaned_pipeline_runs(self.client, experiment_id)
        if ended:
            log.warning("ended what dead orchestrators left running: %s", ", ".join(ended))

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
        steps, self.left_out = stop_after(steps, str(self.cfg.get("stop_after") or ""))
        try:
            rerun = parse_rerun(self.cfg.cache.rerun, STEPS)
        except ValueError as exc:
            raise PipelineError(str(exc)) from exc
        if not isinstance(self.cfg.cache.enabled, bool):
            raise PipelineError(f"cache.enabled={self.cfg.cache.enabled!r}: expected true or false")
        self.containers.stop_grace = stop_grace_seconds(self.cfg.docker.stop_grace_seconds)
        self.validation_settings = validation.settings(self.cfg.validation)
        if not promotion.check_settings(self.cfg.promote):
            steps = [step for step in steps if step != PROMOTE]
            self.promotion = "off: promote.registered_model is empty, nothing registered"
        elif PROMOTE in steps or FETCH in steps:
            # a broken champion stops us before training; fetch validates against its data
            self.planned_champion = promotion.champion(self.client, self.cfg.promote)
        data_mount = local_data_path(self.cfg.data) if FETCH in steps else None
        wants_gpu = self._wants_gpu(steps)
        docker = docker_utils.connect()
        active = mlflow.active_run()
        assert active is not None
        self.end_orphans(docker, active.info.experiment_id)
        try:
            images = StepImages(
                docker, self.cfg.docker.base_image, pip_build_args(self.cfg.docker.pip_find_links)
            )
        except (RequirementsError, ValueError) as exc:
            raise PipelineError(str(exc)) from exc
        cache = StepCache(self.client, self.cfg.cache.enabled, rerun, lambda i: image_present(docker, i))
        for step in steps:
            param = UPSTREAM_PARAM.get(step)
            mounts = [data_mount] if step == FETCH and data_mount else []
            resolved, extra_inputs = self._resolve(step)
            params = step_parameters(step, self.cfg, upstream, resolved)
            log.info("step %s: building its environment", step)
            environment = images.environment(step)
            try:
                decision = cache.decide(step, environment, params, upstream, extra_inputs)
            except CodeIdentityError as exc:
                raise PipelineError(f"step {step}: {exc}") from exc
            log.info(
                "step %s: %s (%s)",
                step,
                "reusing" if decision.reuse else "running",
                "; ".join(decision.reasons),
            )
            if decision.reuse:
                result = self._record_reuse(step, decision.reuse.info.run_id, decision.reasons)
            else:
                try:
                    result = self.containers.run(step, images.image(step), params, wants_gpu, mounts)
                except Cancelled:
                    if self.containers.killed is not None:
                        self.results.append(self.containers.killed)
                    raise
                result.reasons = decision.reasons
                if result.status == FINISHED and decision.key is not None:
                    after = self._key_after(step, decision.key, result.run_id)
                    cache.record(result.run_id, decision.key, after)
            self.results.append(result)
            if step == FETCH:
                fetch_run = self.client.get_run(result.run_id)
                self.validation = validation.summary_lines(fetch_run, self.reference)
                if refusal := validation.refusal(fetch_run):
                    raise PipelineError(refusal)
            if result.status != FINISHED:
                raise PipelineError(
                    f"step {step} {result.status} (run {result.run_id}"
                    + (f", {param}={upstream[param]}" if param else "")
                    + "); its log is in the run's logs/ artifact"
                )
            if step == TRAIN and step != steps[-1]:
                self._stop_unless_blessed(result.run_id)
            if step == PROMOTE:
                self.promotion = promotion.summary_line(self.client, result.run_id)
                log.info("promotion: %s", self.promotion)
            if step in PRODUCES:
                upstream[PRODUCES[step]] = result.run_id
                mlflow.set_tag(f"pipeline.{PRODUCES[step]}", result.run_id)

    def _resolve(self, step: str) -> tuple[dict[str, Any], dict[str, str]]:
        """Parameters and key inputs that depend on the registry as the step starts."""
        if step == PROMOTE:  # the champion as it is now, after training and testing
            version, inputs = promotion.champion_inputs(promotion.champion(self.client, self.cfg.promote))
            return {"champion_version": version}, inputs
        if step == FETCH:  # validated against the champion's data, unless configured otherwise
            self.reference = validation.reference(self.client, self.cfg.validation, self.planned_champion)
            log.info("step fetch: data validated against %s", self.reference.note)
            resolved = {**self.validation_settings, "reference_run_id": self.reference.run_id}
            return resolved, {validation.KEY_INPUT: self.reference.data_digest}
        return {}, {}

    def _key_after(self, step: str, key: StepKey, run_id: str) -> StepKey | None:
        """A second key the finished run's output also stands under (see caching.py)."""
        if step == PROMOTE:
            return promotion.key_after(key, self.client.get_run(run_id))
        if step == FETCH:
            return validation.key_after(key, self.client.get_run(run_id))
        return None

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

    def _record_reuse(self, step: str, reused: str, reasons: list[str]) -> StepResult:
        """A child run that says which run this step reused, so the UI shows the whole pipeline."""
        parent = mlflow.active_run()
        assert parent is not None
        record = self.client.create_run(
            parent.info.experiment_id,
            run_name=reused_step_run_name(step),
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

    @property
    def cancelled(self) -> bool:
        return self.exit_code > 128  # 128 + the signal's number


def run_pipeline(
    cfg: DictConfig, point_tags: dict[str, str] | None = None, parent_run_id: str = ""
) -> Outcome:
    """Run the pipeline in the current (or a new) parent run; return its exit code and run ID.

    With `point_tags` (a sweep point) the pipeline run is nested under the sweep run: the
    active run, or `parent_run_id` for a point run in a process of its own.
    SIGINT or SIGTERM cancels it: the running step's container is stopped, and the step
    run and the pipeline run end KILLED (exit code 128 + the signal's number).
    """
    mlflow.set_tracking_uri(absolute_tracking_uri(mlflow.get_tracking_uri()))
    ensure_registered()
    try:
        check_tracking_server(mlflow.get_tracking_uri())
    except PipelineError as exc:
        log.error("pipeline failed: %s", exc)
        return Outcome(1, "")
    built: list[Pipeline] = []  # for a second Ctrl-C to reach the running step

    def hurry(signum: int) -> None:
        for pipeline in built:
            pipeline.hurry(signum)

    with cancellable(on_repeat=hurry):
        # Under `mlflow run .` this is the main entry point's run; in a sweep, a run of its own.
        parent = mlflow.start_run(nested=point_tags is not None, parent_run_id=parent_run_id or None)
        try:
            outcome = _run_in(parent.info.run_id, cfg, point_tags or {}, built)
        except Cancelled as exc:  # while the run was being set up or closed
            if (active := mlflow.active_run()) and active.info.run_id == parent.info.run_id:
                mlflow.set_tag("pipeline.error", str(exc))
                mlflow.end_run(KILLED)
            outcome = Outcome(exc.exit_code, parent.info.run_id)
    if outcome.cancelled:
        guard_killed_run(outcome.run_id)
    return outcome


def _run_in(run_id: str, cfg: DictConfig, point_tags: dict[str, str], built: list[Pipeline]) -> Outcome:
    mlflow.set_tags(
        {STEP_TAG: "pipeline", PIPELINE_TAG: PIPELINE_NAME, orphans.OWNER_TAG: str(orphans.Owner.current())}
        | point_tags
    )
    try:
        cfg = resumed_config(cfg, MlflowClient())
    except PipelineError as exc:
        log.error("pipeline failed: %s", exc)
        mlflow.set_tag("pipeline.error", str(exc))
        mlflow.end_run(FAILED)
        return Outcome(1, run_id)
    client = MlflowClient()
    client.update_run(run_id, name=pipeline_run_name(cfg, point_tags.get(POINT_TAG, "")))
    resolved = as_dict(cfg)
    mlflow.log_dict(resolved, "config.yaml")
    mlflow.log_params(flatten(resolved))
    pipeline = Pipeline(cfg)
    built.append(pipeline)
    status, error, exit_code = FINISHED, "", 0
    try:
        pipeline.run()
    except (
        PipelineError,
        docker_utils.DockerUnavailable,
        docker_utils.ImageBuildError,
        OSError,
        MlflowException,
    ) as exc:
        status, error, exit_code = FAILED, str(exc), 1
    except Cancelled as exc:
        status, error, exit_code = KILLED, str(exc), exc.exit_code
    except BaseException as exc:  # the parent must not stay RUNNING
        status, error = FAILED, f"{exc.__class__.__name__}: {exc}"
        raise
    finally:
        pipeline.containers.close()  # no step container runs any more
        summary = Summary(
            status,
            error,
            pipeline.results,
            validation=pipeline.validation,
            promotion=pipeline.promotion,
            left_out=pipeline.left_out,
            until=str(cfg.get("stop_after") or ""),
        )
        write_summary(summary, run_id, pipeline.client)
        if error:
            mlflow.set_tag("pipeline.error", error[:5000])
            log.error("pipeline %s: %s", "cancelled" if status == KILLED else "failed", error)
        mlflow.end_run(status)
    return Outcome(exit_code, run_id)
