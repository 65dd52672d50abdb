"""The orchestrator: run the planned steps, each as an MLflow project in its own
container (child runs of one parent run), pass run IDs between them, report.

planning.py decides which steps run and with what; caching.py decides, step by step,
whether an earlier run can be reused; each step's hooks (hooks/) do what is particular to
it; a StepRunner (runner.py) runs it. This module is the loop over the plan: it names no
step, and returns a PipelineReport that summary.py logs on the pipeline run.

Everything that can be checked before a container starts is checked first: resume run
IDs, settings, the Docker engine, the GPU request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import mlflow
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from cifar_pipeline import docker_utils, names
from cifar_pipeline.cancellation import Cancelled, cancellable
from cifar_pipeline.code_trace import CodeIdentityError
from cifar_pipeline.local_store import absolute_tracking_uri, ensure_registered
from cifar_pipeline.names import FAILED, FINISHED
from cifar_pipeline.orchestrator.faults import orphans
from cifar_pipeline.orchestrator.faults.status_guard import guard_killed_run
from cifar_pipeline.orchestrator.hooks import HookContext, StepHooks, load_hooks
from cifar_pipeline.orchestrator.planning.cache import (
    REUSED_FROM_TAG,
    REUSED_STEP_TAG,
    StepCache,
    parse_rerun,
)
from cifar_pipeline.orchestrator.planning.plan import (
    PipelineError,
    as_dict,
    continue_unfinished_run,
    output_tag,
    plan,
    plan_resume,
    resumed_config,
    step_parameters,
    stop_after,
    validate_resume,
)
from cifar_pipeline.orchestrator.reporting.naming import pipeline_run_name, reused_step_run_name
from cifar_pipeline.orchestrator.reporting.report import PipelineReport, StepResult
from cifar_pipeline.orchestrator.reporting.summary import write_summary
from cifar_pipeline.orchestrator.running.runner import DockerStepRunner, StepRunner
from cifar_pipeline.orchestrator.sweep import POINT_TAG
from cifar_pipeline.step_declarations import PIPELINE_STEPS, StepDeclaration, StepGraph
from cifar_pipeline.tracking import KILLED, PIPELINE_NAME, PIPELINE_TAG, STEP_TAG

log = logging.getLogger(__name__)

ERROR_TAG = names.ERROR_TAG
# What stops a pipeline with a message (exit 1); anything else is a bug, re-raised.
EXPECTED_FAILURES = (
    PipelineError,
    docker_utils.DockerUnavailable,
    docker_utils.ImageBuildError,
    OSError,
    MlflowException,
)


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


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(config, dict):
        out: dict[str, Any] = {}
        for key, value in config.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): config}


class Pipeline:
    """One pipeline run: plan, check, then a plain loop over the planned steps."""

    def __init__(
        self,
        cfg: DictConfig,
        runner: StepRunner,
        client: MlflowClient | None = None,
        graph: StepGraph = PIPELINE_STEPS,
    ) -> None:
        self.cfg = cfg
        self.runner = runner
        self.client = client or MlflowClient()
        self.graph = graph
        self.report = PipelineReport(until=str(cfg.get("stop_after") or ""))
        self.context = HookContext(cfg, self.client, self.report)
        self.hooks: dict[str, StepHooks] = {d.name: load_hooks(d, self.context) for d in graph}

    def hurry(self, signum: int) -> None:
        self.runner.hurry(signum)

    def run(self) -> PipelineReport:
        """Run the pipeline in the active MLflow run; the report says how it ended.

        A failure the pipeline can name (bad input, a failed step, an unreachable engine)
        ends it FAILED with exit code 1; a cancellation ends it KILLED (128 + the signal).
        """
        try:
            steps, upstream = self._plan()
            cache = self._prepare(steps)
            for name in steps:
                self._run_step(self.graph[name], upstream, cache, goes_on=name != steps[-1])
        except EXPECTED_FAILURES as exc:
            self.report.end(FAILED, str(exc), 1)
        except Cancelled as exc:
            self.report.end(KILLED, str(exc), exc.exit_code)
        except BaseException as exc:  # the pipeline run must not stay RUNNING: report, then raise
            self.report.end(FAILED, f"{exc.__class__.__name__}: {exc}", 1)
            raise
        else:
            self.report.end(FINISHED, "", 0)
        return self.report

    def _plan(self) -> tuple[list[str], dict[str, str]]:
        """Which steps run, from which upstream runs; the runs it starts from, recorded."""
        resume_pipeline = str(self.cfg.resume.get("pipeline_run_id") or "")
        finished: dict[str, str] = {}
        if resume_pipeline:
            steps, upstream, finished = plan_resume(self.client, resume_pipeline, self.graph)
        else:
            steps, upstream = continue_unfinished_run(
                *plan(self.cfg.resume, self.graph), self.client, self.graph
            )
            validate_resume(upstream, self.client, self.graph)
        for param, run_id in upstream.items():
            producer = self.graph.producer_of.get(param)
            if producer is not None and producer.name not in finished:
                self.report.results.append(StepResult(producer.name, run_id, "REUSED", 0.0, "given"))
                mlflow.set_tag(output_tag(param), run_id)
        for name, run_id in finished.items():
            result = self._record_reuse(name, run_id, [f"finished in pipeline {resume_pipeline}"])
            self.report.results.append(result)
            mlflow.set_tag(output_tag(self.graph.output_param(name)), run_id)
            self.hooks[name].after(result, goes_on=True)  # e.g. train's quality gate
        steps, self.report.left_out = stop_after(steps, self.report.until, self.graph)
        return steps, upstream

    def _prepare(self, steps: list[str]) -> StepCache:
        """Check every setting and each step's own, then get the runner ready."""
        try:
            rerun = parse_rerun(self.cfg.cache.rerun, self.graph.names)
        except ValueError as exc:
            raise PipelineError(str(exc)) from exc
        if not isinstance(self.cfg.cache.enabled, bool):
            raise PipelineError(f"cache.enabled={self.cfg.cache.enabled!r}: expected true or false")
        for declaration in self.graph:
            reason = self.hooks[declaration.name].check(list(steps))
            if reason and declaration.name in steps:
                log.info("step %s left out: %s", declaration.name, reason)
                steps.remove(declaration.name)
        active = mlflow.active_run()
        assert active is not None
        self.runner.start(active.info.experiment_id)
        self.context.engine = self.runner
        return StepCache(
            self.client,
            self.cfg.cache.enabled,
            rerun,
            output_gone=lambda step, run: self.hooks[step].output_gone(run),
            graph=self.graph,
        )

    def _run_step(
        self, step: StepDeclaration, upstream: dict[str, str], cache: StepCache, goes_on: bool
    ) -> None:
        hooks = self.hooks[step.name]
        resolved = hooks.resolve(upstream)
        params = step_parameters(step, self.cfg, upstream, resolved.params)
        environment = self.runner.environment(step)
        try:
            decision = cache.decide(
                step, environment, params, upstream, resolved.key_inputs, resolved.uncacheable
            )
        except CodeIdentityError as exc:
            raise PipelineError(f"step {step.name}: {exc}") from exc
        action = "reusing" if decision.reuse else "running"
        log.info("step %s: %s (%s)", step.name, action, "; ".join(decision.reasons))
        if decision.reuse:
            result = self._record_reuse(step.name, decision.reuse.info.run_id, decision.reasons)
        else:
            try:
                result = self.runner.run(step, params, resolved)
            except Cancelled:
                if self.runner.killed is not None:
                    self.report.results.append(self.runner.killed)
                raise
            result.reasons = decision.reasons
            if result.status == FINISHED and decision.key is not None:
                after = hooks.key_after(decision.key, self.client.get_run(result.run_id))
                cache.record(result.run_id, decision.key, after)
        self.report.results.append(result)
        hooks.after(result, goes_on)
        if result.status != FINISHED:
            given = f", {step.consumes}={upstream[step.consumes]}" if step.consumes else ""
            raise PipelineError(
                f"step {step.name} {result.status} (run {result.run_id}{given}); "
                "its log is in the run's logs/ artifact"
            )
        if step.produces:
            upstream[step.produces.param] = result.run_id
            mlflow.set_tag(output_tag(step.produces.param), result.run_id)

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
                mlflow.set_tag(ERROR_TAG, str(exc))
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
        mlflow.set_tag(ERROR_TAG, str(exc))
        mlflow.end_run(FAILED)
        return Outcome(1, run_id)
    client = MlflowClient()
    client.update_run(run_id, name=pipeline_run_name(cfg, point_tags.get(POINT_TAG, "")))
    resolved = as_dict(cfg)
    mlflow.log_dict(resolved, names.CONFIG_ARTIFACT)
    mlflow.log_params(flatten(resolved))
    pipeline = Pipeline(cfg, DockerStepRunner(client, cfg.docker), client)
    built.append(pipeline)
    try:
        report = pipeline.run()
    finally:
        pipeline.runner.close()  # no step container runs any more
        report = pipeline.report
        write_summary(report, run_id, client)
        if report.error:
            mlflow.set_tag(ERROR_TAG, report.error[:5000])
            log.error("pipeline %s: %s", "cancelled" if report.status == KILLED else "failed", report.error)
        mlflow.end_run(report.status)
    return Outcome(report.exit_code, run_id)
