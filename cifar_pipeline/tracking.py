"""How steps find each other in MLflow: step tags, lineage tags, required artifacts.

Steps pass run IDs, never paths: a step downloads its inputs from the upstream run
through the MLflow artifacts API, so it works the same against a local store and a
remote tracking server.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cifar_pipeline import code_trace, names
from cifar_pipeline.cancellation import Cancelled, cancellable
from cifar_pipeline.names import KILLED, upstream_tag
from cifar_pipeline.step_declarations import PIPELINE_STEPS, StepGraph

log = logging.getLogger(__name__)

STEP_TAG = names.STEP_TAG
UPSTREAM_PREFIX = names.UPSTREAM_PREFIX
PIPELINE_TAG = names.PIPELINE_TAG
PIPELINE_NAME = "cifar-pipeline"
QUALITY_GATE_TAG = names.QUALITY_GATE_TAG  # "passed" / "failed" on train runs
# a train run's latest checkpoint, replaced every epoch
CHECKPOINT = PIPELINE_STEPS["train"].continue_from
# The project files a step run loaded, with their digests: its code identity (code_trace.py).
CODE_TRACE_ARTIFACT = names.CODE_TRACE_ARTIFACT

# A step's own code names its step by these; the orchestrator reads the declarations only.
FETCH, TRAIN, BUILD, SYSTEMTEST, PROMOTE = "fetch", "train", "build", "systemtest", "promote"
STEPS = PIPELINE_STEPS.names

# Derived from the declarations (step_declarations.py):
# what a finished run of each step must have logged for the next step to use it,
REQUIRED_ARTIFACTS = {d.name: d.required_artifacts for d in PIPELINE_STEPS}
# which upstream run ID each step takes (the parameter and tag name), and which it gives.
UPSTREAM_PARAM = {d.name: d.consumes for d in PIPELINE_STEPS if d.consumes}
PRODUCES = {d.name: d.produces.param for d in PIPELINE_STEPS if d.produces}


class UpstreamError(ValueError):
    """A run ID handed to a step cannot be used as its input."""


def require_step_run(
    run_id: str,
    step: str,
    client: MlflowClient | None = None,
    label: str = "",
    graph: StepGraph = PIPELINE_STEPS,
) -> Run:
    """Return the run if it is a FINISHED run of `step` with its artifacts; else raise,
    naming it as `label` (default: the parameter that passes it on, e.g. data_run_id='...')."""
    client = client or MlflowClient()
    declaration = graph[step]
    label = label or f"{declaration.produces.param if declaration.produces else 'run_id'}={run_id!r}"
    if not run_id or not run_id.isalnum():
        raise UpstreamError(f"{label}: not a run ID (expected 32 hex characters)")
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise UpstreamError(f"{label}: no such run in {mlflow.get_tracking_uri()}") from exc
    if run.info.lifecycle_stage == "deleted":
        raise UpstreamError(f"{label}: the run is deleted (mlflow runs restore --run-id {run_id})")
    actual_step = run.data.tags.get(STEP_TAG)
    if actual_step != step:
        raise UpstreamError(f"{label}: is a run of step {actual_step or '(none)'!r}, expected a {step!r} run")
    if run.info.status != names.FINISHED:
        raise UpstreamError(f"{label}: {step} run has status {run.info.status}, expected FINISHED")
    missing = [path for path in declaration.required_artifacts if not _artifact_exists(client, run_id, path)]
    if missing:
        raise UpstreamError(f"{label}: {step} run lacks artifacts: {', '.join(missing)}")
    return run


def find_reusable_run(step: str, tag: str, value: str, exclude_run_id: str = "") -> Run | None:
    """The newest FINISHED run of `step`, in any experiment, tagged `tag=value`, whose artifacts exist."""
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    query = f"tags.`{STEP_TAG}` = '{step}' and tags.`{tag}` = '{value}' and attributes.status = 'FINISHED'"
    for run in client.search_runs(experiments, query, order_by=["attributes.start_time DESC"]):
        if run.info.run_id == exclude_run_id:
            continue
        try:
            return require_step_run(run.info.run_id, step, client)
        except UpstreamError as exc:
            log.info("cannot reuse %s: %s", run.info.run_id, exc)
    return None


def _artifact_exists(client: MlflowClient, run_id: str, path: str) -> bool:
    parent = path.rpartition("/")[0]
    try:
        return any(info.path == path for info in client.list_artifacts(run_id, parent or None))
    except (MlflowException, OSError):
        return False


def lineage(run: Run) -> dict[str, str]:
    """The upstream run IDs recorded on a run, by parameter name."""
    return {
        key[len(UPSTREAM_PREFIX) :]: value
        for key, value in run.data.tags.items()
        if key.startswith(UPSTREAM_PREFIX)
    }


def download(run_id: str, artifact_path: str, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(dst))
    return Path(local)


@contextmanager
def step_run(
    step: str, upstream: dict[str, str] | None = None, system_metrics: bool = False
) -> Iterator[Run]:
    """The MLflow run of a step, tagged with the step and its lineage, logs attached.

    Under `mlflow run` the run already exists (MLFLOW_RUN_ID); `start_run` attaches
    to it. The step's log file is attached to the run whether the step succeeds or
    fails, so a failure keeps its logs. A step that succeeds also records the project
    files it loaded (CODE_TRACE_ARTIFACT), which decides when the run may be reused.
    `system_metrics`: MLflow samples CPU, memory, disk, network (and GPU, with pynvml)
    while the run lasts, for the UI's System metrics tab.
    """
    trace = code_trace.start()
    with tempfile.TemporaryDirectory(prefix=f"{step}-log-") as log_dir:
        log_path = Path(log_dir) / f"{step}.log"
        handler = logging.FileHandler(log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        try:
            with cancellable(), mlflow.start_run(log_system_metrics=system_metrics) as run:
                mlflow.set_tags({STEP_TAG: step, PIPELINE_TAG: PIPELINE_NAME})
                mlflow.set_tags({upstream_tag(k): v for k, v in (upstream or {}).items() if v})
                try:
                    yield run
                    mlflow.log_dict(trace.snapshot(), CODE_TRACE_ARTIFACT)
                except Cancelled as exc:
                    # `docker stop` (the pipeline cancelled) or Ctrl-C: the run was killed, it did not fail
                    log.warning("step %s %s", step, exc)
                    handler.flush()
                    mlflow.log_artifact(str(log_path), "logs")
                    mlflow.end_run(KILLED)
                    raise
                except BaseException:
                    log.exception("step %s failed", step)
                    raise
                finally:
                    if mlflow.active_run() is not None:
                        handler.flush()
                        mlflow.log_artifact(str(log_path), "logs")
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()
