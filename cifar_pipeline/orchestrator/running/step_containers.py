"""One step run in its container, as an MLflow project, watched until it ends.

Whatever ends the wait, no container is left and no run stays RUNNING: the step run is
FAILED if the container died, KILLED (after `docker stop` with a grace period) if the
pipeline was cancelled. The container carries labels naming this orchestrator process,
so that a later pipeline can end it should this process die first (orphans.py).
"""

from __future__ import annotations

import json
import logging
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import yaml
from mlflow.projects.submitted_run import LocalSubmittedRun, SubmittedRun
from mlflow.tracking import MlflowClient

from cifar_pipeline import docker_utils, names
from cifar_pipeline.cancellation import Cancelled
from cifar_pipeline.local_store import is_local_store
from cifar_pipeline.names import FAILED, RUNNING
from cifar_pipeline.orchestrator.faults import orphans
from cifar_pipeline.orchestrator.reporting.report import StepResult
from cifar_pipeline.orchestrator.running.docker_args import DockerArgs, step_docker_args
from cifar_pipeline.orchestrator.running.tracking_server import LocalTrackingServer
from cifar_pipeline.step_declarations import StepDeclaration
from cifar_pipeline.tracking import KILLED

log = logging.getLogger(__name__)

STEP_IMAGE_TAG = names.STEP_IMAGE_TAG  # on each step run: the exact image it ran
GIT_SOURCE_TAGS = ("mlflow.source.git.commit", "mlflow.source.git.branch", "mlflow.source.git.repoURL")


def pinned_project(step: StepDeclaration, image: str, work: Path) -> Path:
    """A copy of steps/<step>/MLproject whose docker_env names `image` (an immutable tag).

    MLflow takes a project's image only from its MLproject; the file in the repository
    names `:latest` for running a step alone. The pipeline runs the exact image it built.
    """
    spec = yaml.safe_load((step.project / "MLproject").read_text())
    spec["docker_env"]["image"] = image
    project = work / step.name
    project.mkdir(parents=True, exist_ok=True)
    (project / "MLproject").write_text(yaml.safe_dump(spec, sort_keys=False))
    return project


def file_artifact_root(experiment_id: str, client: MlflowClient) -> Path | None:
    """The folder of an experiment whose artifacts are files, not proxied by a server.

    Only an experiment made that way (by MLflow for a new MLFLOW_EXPERIMENT_NAME, or by an
    earlier version of the project) has one: its steps' containers must mount it.
    """
    location = client.get_experiment(experiment_id).artifact_location
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return None
    # Experiments live under one root by default (mlruns/<experiment id>).
    return Path(parsed.path).parent


@contextmanager
def tracking_uri_as(uri: str) -> Iterator[None]:
    """MLflow's tracking URI for this process, for the duration."""
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def submit_step(
    project: Path,
    params: dict[str, Any],
    experiment_id: str,
    docker_args: DockerArgs,
    container_tracking_uri: str,
    run_name: str | None = None,
) -> SubmittedRun:
    """Start a step's MLflow project in its container, asynchronously.

    MLflow creates the step run, and hands the container its tracking URI, with the URI it
    is set to: `container_tracking_uri`, a local store's server, so no store is mounted.
    """
    with tracking_uri_as(container_tracking_uri):
        return mlflow.projects.run(
            uri=str(project),
            entry_point="main",
            parameters=params,
            experiment_id=experiment_id,
            docker_args=docker_args,
            env_manager="local",
            synchronous=False,
            build_image=False,
            run_name=run_name,
        )


class StepContainers:
    """Runs steps as child runs of the active run; knows the one running now."""

    def __init__(self, client: MlflowClient, stop_grace: float) -> None:
        self.client = client
        self.stop_grace = stop_grace
        self.running = ""  # the name of the step container running now, if any
        self.killed: StepResult | None = None  # the step a cancellation stopped
        self.server: LocalTrackingServer | None = None  # a local store's, once a step needs it

    def container_tracking_uri(self, tracking_uri: str) -> str:
        """The tracking URI the step containers get: a local store served over HTTP."""
        if not is_local_store(tracking_uri):
            return tracking_uri
        if self.server is None:
            self.server = LocalTrackingServer(tracking_uri)
        return self.server.url()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def hurry(self, signum: int) -> None:
        """A second Ctrl-C while cancelling: kill the step container now, no grace."""
        if signum == signal.SIGINT and self.running:
            log.warning("killing %s now", self.running)
            docker_utils.remove_container(docker_utils.connect(), self.running)

    def run(
        self, declaration: StepDeclaration, image: str, params: dict[str, Any], gpus: bool, mounts: list[Path]
    ) -> StepResult:
        step = declaration.name
        parent = mlflow.active_run()
        assert parent is not None
        experiment_id = parent.info.experiment_id
        tracking_uri = mlflow.get_tracking_uri()
        served_uri = self.container_tracking_uri(tracking_uri)
        artifact_root = (
            file_artifact_root(experiment_id, self.client) if is_local_store(tracking_uri) else None
        )
        args = step_docker_args(declaration, artifact_root, gpus, mounts)
        container = f"cifar-pipeline-{step}-{uuid.uuid4().hex[:8]}"
        args["name"] = container
        log.info("=== step %s in %s: %s", step, image, json.dumps(params))
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"{step}-container-") as work:
            labels = orphans.container_labels(step, parent.info.run_id, tracking_uri)
            args["label-file"] = str(orphans.write_label_file(labels, Path(work) / "labels"))
            recorder = docker_utils.ContainerLogRecorder(container, Path(work) / "container.log")
            project = pinned_project(declaration, image, Path(work))
            submitted = submit_step(project, params, experiment_id, args, served_uri)
            self.running = container
            try:
                if isinstance(submitted, LocalSubmittedRun):
                    launcher = orphans.Owner.of(submitted.command_proc.pid)
                    self.client.set_tag(submitted.run_id, orphans.LAUNCHER_TAG, str(launcher))
                self.client.update_run(submitted.run_id, name=step)  # not MLflow's random name
                self.client.set_tag(submitted.run_id, STEP_IMAGE_TAG, image)
                self._record_source(submitted.run_id, declaration.project, parent.info.run_id)
                self._wait(submitted, step, container)
            finally:
                self.running = ""
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

    def _wait(self, submitted: SubmittedRun, step: str, container: str) -> None:
        """Wait for the step. Cancelled: stop its container, then mark its run KILLED."""
        started = time.monotonic()
        try:
            submitted.wait()
        except Cancelled as exc:
            # SIGTERM to the step, SIGKILL after the grace period: a train step ends its
            # run KILLED, with its last epoch's checkpoint logged, for `resume`.
            log.warning("%s: stopping step %s (%.0f s to finish)", exc, step, self.stop_grace)
            docker_utils.stop_container(docker_utils.connect(), container, self.stop_grace)
            submitted.cancel()  # MLflow's watcher (`mlflow run` in a session of its own), too
            # The step's process and its watcher are gone: nothing can overwrite this any more.
            self.client.set_tag(submitted.run_id, orphans.KILLED_REASON_TAG, str(exc))
            self.client.set_terminated(submitted.run_id, KILLED)
            self.killed = StepResult(
                step, submitted.run_id, KILLED, time.monotonic() - started, reasons=[str(exc)]
            )
            raise
        except BaseException:
            submitted.cancel()
            raise

    def _record_source(self, run_id: str, project: Path, parent_run_id: str) -> None:
        """The step run's source is the step's project in this checkout (with the checkout's
        git commit, as the pipeline run has it), not the pinned copy MLflow was given."""
        self.client.set_tag(run_id, "mlflow.source.name", str(project))
        parent_tags = self.client.get_run(parent_run_id).data.tags
        for tag in GIT_SOURCE_TAGS:
            if tag in parent_tags:
                self.client.set_tag(run_id, tag, parent_tags[tag])

    def _fail_if_still_running(self, run_id: str) -> None:
        if self.client.get_run(run_id).info.status == RUNNING:
            self.client.set_terminated(run_id, FAILED)
