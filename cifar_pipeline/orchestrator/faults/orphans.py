"""Step containers and pipeline runs whose orchestrator died, found and ended.

A SIGKILLed orchestrator (or a crashed host process) cannot stop its step container:
the container trains on, unwatched, and its runs stay RUNNING. Every step container
carries labels naming its orchestrator process (host, PID and the process's start time,
so a reused PID is not mistaken for it), its pipeline run and its tracking store; the
pipeline run carries the same owner tag. The next pipeline on the same host ends what
such a dead orchestrator left: it stops and removes the containers and marks their runs
KILLED, saying so. Containers of orchestrators on other hosts (a shared remote engine)
are left alone: their liveness cannot be known from here.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.models.containers import Container
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cifar_pipeline import docker_utils, names
from cifar_pipeline.names import FINISHED, RUNNING
from cifar_pipeline.processes import process_exists, process_start_time
from cifar_pipeline.tracking import KILLED, STEP_TAG

log = logging.getLogger(__name__)

STEP_LABEL = "cifar-pipeline.step"
OWNER_LABEL = "cifar-pipeline.orchestrator"  # host/pid/start time of the orchestrator process
PIPELINE_RUN_LABEL = "cifar-pipeline.pipeline-run"
TRACKING_URI_LABEL = "cifar-pipeline.tracking-uri"
OWNER_TAG = names.OWNER_TAG  # the same on the pipeline run
# On a step run: the `mlflow run` process that MLflow starts to watch the container (in a
# session of its own). It outlives a killed orchestrator, and once the container is gone
# it marks the run FAILED whatever its status, so it is ended first.
LAUNCHER_TAG = names.LAUNCHER_TAG
KILLED_REASON_TAG = names.KILLED_REASON_TAG


@dataclass(frozen=True)
class Owner:
    """An orchestrator process, identified across PID reuse."""

    host: str
    pid: int
    started: str

    @classmethod
    def current(cls) -> Owner:
        return cls.of(os.getpid())

    @classmethod
    def of(cls, pid: int) -> Owner:
        return cls(socket.gethostname(), pid, process_start_time(pid))

    @classmethod
    def parse(cls, label: str) -> Owner | None:
        host, _, rest = label.rpartition("/")
        host, _, pid = host.rpartition("/")
        if not host or not pid.isdigit():
            return None
        return cls(host, int(pid), rest)

    def __str__(self) -> str:
        return f"{self.host}/{self.pid}/{self.started}"

    def is_local(self) -> bool:
        return self.host == socket.gethostname()

    def is_alive(self) -> bool:
        """Whether this (local) process still runs: its PID exists with the same start time."""
        if not process_exists(self.pid):
            return False
        return not self.started or process_start_time(self.pid) in (self.started, "")

    def death_reason(self) -> str:
        return f"its orchestrator (pid {self.pid} on {self.host}) died; ended by a later pipeline"


def container_labels(step: str, pipeline_run_id: str, tracking_uri: str) -> dict[str, str]:
    return {
        STEP_LABEL: step,
        OWNER_LABEL: str(Owner.current()),
        PIPELINE_RUN_LABEL: pipeline_run_id,
        TRACKING_URI_LABEL: tracking_uri,
    }


def write_label_file(labels: dict[str, str], path: Path) -> Path:
    """A `docker run --label-file`: MLflow's docker_args pass one `--label` only."""
    path.write_text("".join(f"{key}={value}\n" for key, value in labels.items()))
    return path


def _container_run_id(container: Container) -> str:
    env = container.attrs.get("Config", {}).get("Env") or []
    return next((e.split("=", 1)[1] for e in env if e.startswith("MLFLOW_RUN_ID=")), "")


def kill_run(client: MlflowClient, run_id: str, reason: str, ended_by_us: bool = False) -> None:
    """Mark a RUNNING run KILLED with the reason. `ended_by_us`: a step run whose container
    we stopped, whatever it or MLflow's watcher wrote meanwhile (not if it FINISHED first)."""
    try:
        status = client.get_run(run_id).info.status
        if status == FINISHED or (status != RUNNING and not ended_by_us):
            return
        client.set_tag(run_id, KILLED_REASON_TAG, reason)
        if status != KILLED:
            client.set_terminated(run_id, KILLED)
    except MlflowException as exc:
        log.warning("run %s: cannot mark it KILLED: %s", run_id, exc)


def end_orphaned_containers(engine: docker.DockerClient, grace: float) -> list[str]:
    """Stop and remove the step containers of dead local orchestrators; their names."""
    ended = []
    for container in engine.containers.list(all=True, filters={"label": OWNER_LABEL}):
        owner = Owner.parse(container.labels.get(OWNER_LABEL, ""))
        if owner is None or not owner.is_local() or owner.is_alive():
            continue
        step = container.labels.get(STEP_LABEL, "?")
        pipeline_run = container.labels.get(PIPELINE_RUN_LABEL, "")
        reason = owner.death_reason()
        log.warning(
            "ending container %s (step %s of pipeline run %s): %s", container.name, step, pipeline_run, reason
        )
        uri = container.labels.get(TRACKING_URI_LABEL, "")
        client = MlflowClient(uri) if uri else None
        step_run = _container_run_id(container)
        if client is not None and step_run:
            end_launcher(client, step_run)
        docker_utils.stop_container(engine, container.id, grace)
        docker_utils.remove_container(engine, container.id)
        if client is not None:
            if step_run:
                kill_run(client, step_run, reason, ended_by_us=True)
            if pipeline_run:
                kill_run(client, pipeline_run, reason)
        ended.append(container.name)
    return ended


def end_launcher(client: MlflowClient, step_run_id: str) -> None:
    """End the step run's `mlflow run` watcher process (and its `docker run` client)."""
    try:
        launcher = Owner.parse(client.get_run(step_run_id).data.tags.get(LAUNCHER_TAG, ""))
    except MlflowException as exc:
        log.warning("run %s: %s", step_run_id, exc)
        return
    if launcher is None or not launcher.is_local() or not launcher.is_alive():
        return
    try:
        os.killpg(launcher.pid, signal.SIGKILL)  # it leads its own process group (MLflow's setsid)
    except (ProcessLookupError, PermissionError) as exc:
        log.warning("cannot end the launcher %s of run %s: %s", launcher, step_run_id, exc)


def end_orphaned_pipeline_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING pipeline runs here whose (local) orchestrator is gone."""
    ended = []
    runs = client.search_runs(
        [experiment_id], f"attributes.status = '{RUNNING}' and tags.`{STEP_TAG}` = 'pipeline'"
    )
    for run in runs:
        owner = Owner.parse(run.data.tags.get(OWNER_TAG, ""))
        if owner is None or not owner.is_local() or owner.is_alive():
            continue
        reason = owner.death_reason()
        log.warning("pipeline run %s: %s", run.info.run_id, reason)
        kill_run(client, run.info.run_id, reason)
        ended.append(run.info.run_id)
    return ended
