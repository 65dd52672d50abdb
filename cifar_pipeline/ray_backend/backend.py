"""`mlflow run <project> --backend ray`: the project's `docker_env` container as a Ray job.

MLflow hands a plugin backend the project, its entry point and parameters, and expects a
run it can follow (`SubmittedRun`). This one creates the MLflow run as MLflow's local
backend does, then submits a Ray job whose entrypoint is `docker run` of the project's
image on a node that has the resources the config asks for. The container reaches the
tracking server over HTTP, as a step container does on one machine, so any node that
reaches the server can run it; the image must be one the node can run (pulled from a
registry by the node's Docker engine).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from mlflow.exceptions import ExecutionException
from mlflow.projects.backend.abstract_backend import AbstractBackend
from mlflow.projects.submitted_run import SubmittedRun
from mlflow.projects.utils import (
    PROJECT_STORAGE_DIR,
    fetch_and_validate_project,
    get_entry_point_command,
    get_or_create_run,
    get_run_env_vars,
    load_project,
)
from mlflow.tracking import MlflowClient

from cifar_pipeline import names
from cifar_pipeline.ray_backend.config import RayBackendConfig, parse_config
from cifar_pipeline.ray_backend.entrypoint import (
    docker_run,
    job_entrypoint,
    remote_tracking_uri,
    stop_wait_seconds,
)

log = logging.getLogger(__name__)


def job_client(address: str) -> Any:
    """Ray's Jobs API client (imported here: only a Ray run needs Ray installed)."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise ExecutionException(
            "the ray backend needs Ray on this machine: `make ray-venv` (or pip install 'ray[default]')"
        ) from exc
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ExecutionException(f"Ray at {address!r} cannot be reached: {exc}") from exc


class RayBackend(AbstractBackend):
    def run(
        self,
        project_uri: str,
        entry_point: str,
        params: dict[str, Any],
        version: str | None,
        backend_config: dict[str, Any] | str | None,
        tracking_uri: str,
        experiment_id: str,
    ) -> SubmittedRun:
        config = parse_config(backend_config)
        served_uri = remote_tracking_uri(tracking_uri)
        work_dir = fetch_and_validate_project(project_uri, version, entry_point, params)
        project = load_project(work_dir)
        if not project.docker_env or not project.docker_env.get("image"):
            raise ExecutionException(
                f"the ray backend runs a project's docker_env container; {project_uri} has no "
                "docker_env image"
            )
        jobs = job_client(config.address)  # before the run: an unreachable cluster leaves no run behind
        run = get_or_create_run(None, project_uri, experiment_id, work_dir, version, entry_point, params)
        run_id = run.info.run_id
        tracking = MlflowClient(tracking_uri)
        try:
            submission_id = submit(
                jobs, config, project, entry_point, params, backend_config, run, served_uri
            )
        except BaseException as exc:  # the run must not stay RUNNING for a job that never was
            tracking.set_terminated(run_id, names.FAILED)
            if isinstance(exc, Exception) and not isinstance(exc, ExecutionException):
                raise ExecutionException(f"Ray at {config.address} refused the job: {exc}") from exc
            raise
        tracking.set_tag(run_id, names.RAY_SUBMISSION_TAG, submission_id)
        from cifar_pipeline.ray_backend.submitted_run import RaySubmittedRun  # needs Ray, as job_client

        log.info("=== run %s submitted to Ray at %s as job %s ===", run_id, config.address, submission_id)
        return RaySubmittedRun(
            run_id, submission_id, jobs, tracking,
            poll_seconds=config.poll_seconds, stop_timeout=stop_wait_seconds(config.stop_grace_seconds) + 30,
        )  # fmt: skip


def project_environment(entries: list[Any]) -> dict[str, str]:
    """MLproject's docker_env `environment`: [name, value] pairs, or names copied from here."""
    env: dict[str, str] = {}
    for entry in entries:
        if isinstance(entry, list) and len(entry) == 2:
            env[str(entry[0])] = str(entry[1])
        elif isinstance(entry, str):
            if entry not in os.environ:
                raise ExecutionException(f"the project's docker_env copies {entry}, which is not set here")
            env[entry] = os.environ[entry]
        else:
            raise ExecutionException(
                f"docker_env environment entry {entry!r}: expected NAME or [NAME, value]"
            )
    return env


def submit(
    jobs: Any,
    config: RayBackendConfig,
    project: Any,
    entry_point: str,
    params: dict[str, Any],
    backend_config: dict[str, Any] | str | None,
    run: Any,
    tracking_uri: str,
) -> str:
    run_id = run.info.run_id
    storage_dir = backend_config.get(PROJECT_STORAGE_DIR) if isinstance(backend_config, dict) else None
    [command] = get_entry_point_command(project, entry_point, params, storage_dir)
    env = project_environment(project.docker_env.get("environment") or [])
    env |= get_run_env_vars(run_id, run.info.experiment_id) | {"MLFLOW_TRACKING_URI": tracking_uri}
    container = f"mlflow-ray-{run_id[:12]}"
    # a project's volumes must be paths every node has (a shared mount)
    volumes = [str(v) for v in project.docker_env.get("volumes") or []]
    docker = docker_run(project.docker_env["image"], container, env, config.docker_args, run_id, volumes)
    return str(
        jobs.submit_job(
            entrypoint=job_entrypoint(docker, command, container, config.stop_grace_seconds),
            submission_id=f"mlflow-{run_id}",
            metadata={"mlflow_run_id": run_id},
            runtime_env={
                "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(stop_wait_seconds(config.stop_grace_seconds))}
            },
            **config.submit_resources(),
        )
    )
