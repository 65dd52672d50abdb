"""What a dead orchestrator left running is found and ended by the next pipeline: its step
containers, on a real Docker engine (its owner, runs and launcher: tests/unit/test_orphans.py)."""

import os
import uuid
from collections.abc import Iterator

import docker
import pytest
from mlflow.tracking import MlflowClient

from cifar_pipeline.docker_utils import remove_container
from cifar_pipeline.orchestrator.faults import orphans
from cifar_pipeline.orchestrator.faults.orphans import Owner
from cifar_pipeline.tracking import STEP_TAG

pytestmark = pytest.mark.docker


@pytest.fixture
def step_container(mlflow_store: str) -> Iterator[tuple[str, MlflowClient]]:
    """A sleeping container labelled as a step of a pipeline run, with its step run RUNNING."""
    base = os.environ.get("PIPELINE_BASE_IMAGE", "python:3.11-slim")
    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("Default").experiment_id
    pipeline = client.create_run(experiment, tags={STEP_TAG: "pipeline"})
    step = client.create_run(experiment, tags={STEP_TAG: "train"})
    name = f"cifar-pipeline-test-orphan-{uuid.uuid4().hex[:8]}"
    engine = docker.from_env()
    labels = orphans.container_labels("train", pipeline.info.run_id, mlflow_store)
    engine.containers.run(
        base,
        ["sleep", "300"],
        name=name,
        labels=labels,
        environment={"MLFLOW_RUN_ID": step.info.run_id},
        detach=True,
        init=True,  # sleep as PID 1 ignores SIGTERM
    )
    yield name, client
    remove_container(engine, name)


def test_a_live_orchestrators_container_is_left_alone(step_container: tuple[str, MlflowClient]) -> None:
    name, _ = step_container
    assert name not in orphans.end_orphaned_containers(docker.from_env(), grace=1)
    assert docker.from_env().containers.get(name).status == "running"


def test_a_dead_orchestrators_container_is_ended_and_its_runs_killed(
    step_container: tuple[str, MlflowClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, client = step_container
    container = docker.from_env().containers.get(name)
    step_run_id = next(
        e.split("=", 1)[1] for e in container.attrs["Config"]["Env"] if e.startswith("MLFLOW_RUN_ID=")
    )
    pipeline_run_id = container.labels[orphans.PIPELINE_RUN_LABEL]
    # the orchestrator that labelled it is gone
    monkeypatch.setattr(Owner, "is_alive", lambda self: self.pid != os.getpid())
    assert orphans.end_orphaned_containers(docker.from_env(), grace=1) == [name]
    assert docker.from_env().containers.list(all=True, filters={"name": name}) == []
    for run_id in (step_run_id, pipeline_run_id):
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert "its orchestrator (pid" in run.data.tags[orphans.KILLED_REASON_TAG]
