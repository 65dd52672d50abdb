"""The Ray project backend on a real two-node Ray cluster on this machine (tests/ray_cluster.py):
`mlflow run --backend ray` places a project's container where its resources are, and the run's
status, tags and log come from Ray's own job records; a cancelled job leaves no container."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import mlflow
import pytest
import yaml
from mlflow.exceptions import ExecutionException
from mlflow.projects.submitted_run import SubmittedRun
from mlflow.tracking import MlflowClient
from ray.job_submission import JobDetails, JobSubmissionClient

from cifar_pipeline import names
from cifar_pipeline.orchestrator.running.tracking_server import LocalTrackingServer
from cifar_pipeline.ray_backend.submitted_run import JOB_LOG_ARTIFACT
from tests.ray_cluster import LOOPBACK_ENV, LocalRayCluster, local_ray_cluster

pytestmark = [pytest.mark.docker, pytest.mark.slow]

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens
BASE_IMAGE = os.environ.get("PIPELINE_BASE_IMAGE", "python:3.11-slim")
PROBE = """python3 -c "import os, sys, time; print('in run', os.environ['MLFLOW_RUN_ID'], flush=True); \
time.sleep({seconds}); sys.exit({code})\""""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    with local_ray_cluster() as started:
        yield started


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tracking server every node reaches (all are on this machine), artifacts proxied."""
    store = tmp_path_factory.mktemp("ray-store")
    with LocalTrackingServer(f"sqlite:///{store / 'mlflow.db'}") as server:
        yield server.url()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose container prints its run ID, sleeps and exits with the code it is given."""
    spec = {
        "name": "ray-backend-probe",
        "docker_env": {"image": BASE_IMAGE},
        "entry_points": {"main": {
            "parameters": {
                "seconds": {"type": "float", "default": 0}, "code": {"type": "float", "default": 0},
            },
            "command": PROBE,
        }},
    }  # fmt: skip
    (tmp_path / "MLproject").write_text(yaml.safe_dump(spec))
    return tmp_path


def ray_config(cluster: LocalRayCluster, **extra: object) -> dict[str, object]:
    return {"address": cluster.address, "docker_args": {"network": "host"}, **extra}


@pytest.fixture(autouse=True)
def loopback_ray_client(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in LOOPBACK_ENV.items():
        monkeypatch.setenv(key, value)


def submit_probe(
    project: Path,
    tracking_uri: str,
    backend_config: dict[str, object],
    synchronous: bool = False,
    **params: float,
) -> SubmittedRun:
    """The probe as a Ray job through `mlflow.projects.run`, as the pipeline submits a step."""
    mlflow.set_tracking_uri(tracking_uri)
    try:
        return mlflow.projects.run(
            str(project), parameters=params, backend="ray", backend_config=backend_config,
            env_manager="local", synchronous=synchronous,
        )  # fmt: skip
    finally:
        mlflow.set_tracking_uri("")


def job_info(cluster: LocalRayCluster, submission_id: str) -> JobDetails:
    return JobSubmissionClient(cluster.address).get_job_info(submission_id)


def job_status(info: JobDetails) -> str:
    return str(getattr(info.status, "value", info.status))


def mlflow_containers(run_id: str) -> list[str]:
    running = docker.from_env().containers.list(all=True, filters={"label": f"mlflow.run_id={run_id}"})
    return [c.name for c in running]


def test_the_container_runs_on_the_node_with_the_gpu_and_docker_and_the_run_says_so(
    cluster: LocalRayCluster, tracking_uri: str, project: Path, tmp_path: Path
) -> None:
    config = ray_config(cluster, num_gpus=1, resources={"docker": 1})
    submitted = submit_probe(project, tracking_uri, config, synchronous=True, seconds=1)
    client = MlflowClient(tracking_uri)
    run = client.get_run(submitted.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.backend"] == "ray"
    submission = run.data.tags[names.RAY_SUBMISSION_TAG]
    # Ray's own record: the job succeeded, on the worker that declared the GPU and `docker`
    info = job_info(cluster, submission)
    assert job_status(info) == "SUCCEEDED"
    assert info.driver_node_id == cluster.worker_node_id != cluster.head_node_id
    assert run.data.tags[names.RAY_NODE_TAG] == cluster.worker_node_id
    log = client.download_artifacts(run.info.run_id, f"logs/{JOB_LOG_ARTIFACT}", str(tmp_path))
    assert f"in run {run.info.run_id}" in Path(log).read_text()
    assert run.data.params["seconds"] == "1"
    assert mlflow_containers(run.info.run_id) == []


def test_mlflow_run_cli_submits_with_a_config_file_and_returns(
    cluster: LocalRayCluster, tracking_uri: str, project: Path, tmp_path: Path
) -> None:
    """MLflow's CLI waits for its local and Kubernetes backends only: with a plugin backend it
    submits and returns, and the project's own code ends its run."""
    config = tmp_path / "ray.json"
    config.write_text(json.dumps(ray_config(cluster, resources={"docker": 1})))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mlflow"), "run", str(project), "--backend", "ray",
         "--backend-config", str(config), "--env-manager", "local", "-P", "seconds=1.5"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        env=os.environ | LOOPBACK_ENV | {"MLFLOW_TRACKING_URI": tracking_uri},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    [run] = client.search_runs(experiments, "params.seconds = '1.5'")
    assert run.data.tags["mlflow.project.backend"] == "ray"
    submission = run.data.tags[names.RAY_SUBMISSION_TAG]
    deadline = time.monotonic() + 120
    while job_status(info := job_info(cluster, submission)) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.5)
    assert job_status(info) == "SUCCEEDED"
    assert info.driver_node_id == cluster.worker_node_id  # the config file's `docker` resource


def test_a_failing_container_fails_the_run(
    cluster: LocalRayCluster, tracking_uri: str, project: Path
) -> None:
    submitted = submit_probe(project, tracking_uri, ray_config(cluster), code=3)
    assert submitted.wait() is False
    assert submitted.get_status() == "FAILED"
    assert MlflowClient(tracking_uri).get_run(submitted.run_id).info.status == "FAILED"


def test_a_cancelled_job_stops_its_container_and_the_run_is_killed(
    cluster: LocalRayCluster, tracking_uri: str, project: Path
) -> None:
    submitted = submit_probe(project, tracking_uri, ray_config(cluster, stop_grace_seconds=5), seconds=300)
    deadline = time.monotonic() + 120
    while not mlflow_containers(submitted.run_id):
        assert time.monotonic() < deadline, "the job's container did not start"
        time.sleep(0.5)
    started = time.monotonic()
    submitted.cancel()
    stopped_in = time.monotonic() - started
    assert submitted.get_status() == "KILLED"
    assert MlflowClient(tracking_uri).get_run(submitted.run_id).info.status == "KILLED"
    assert mlflow_containers(submitted.run_id) == []
    assert stopped_in < 60, f"took {stopped_in:.0f} s"  # not the 300 s the job would have slept


def test_an_unreachable_cluster_or_a_local_store_is_refused_before_any_run(
    tracking_uri: str, project: Path, mlflow_store: str
) -> None:
    unreachable = {"address": UNREACHABLE}
    with pytest.raises(ExecutionException, match="needs a tracking server that every node reaches"):
        submit_probe(project, mlflow_store, unreachable)
    assert MlflowClient(mlflow_store).search_runs(["0"]) == []
    client = MlflowClient(tracking_uri)
    before = len(client.search_runs(["0"]))
    with pytest.raises(ExecutionException, match=r"Ray at 'http://127.0.0.1:9' cannot be reached"):
        submit_probe(project, tracking_uri, unreachable)
    assert len(client.search_runs(["0"])) == before
