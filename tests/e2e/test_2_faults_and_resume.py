"""End to end, faults: a killed train container, Ctrl-C, SIGTERM and a killed orchestrator end every
run and container, and `resume` continues the training; two pipelines at once in one checkout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from cifar_pipeline.orchestrator.faults import orphans
from tests.e2e.helpers import (
    FIRST_RUN_PARAMS,
    children,
    leftover_containers,
    mlflow_run,
    pipeline_runs,
    start_pipeline,
    summary_steps,
    wait_for_checkpoint,
    wait_until,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]


def test_killed_train_container_fails_the_pipeline_and_resume_finishes_it(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    since_ms = int(time.time() * 1000)
    # two epochs: killed after the first, the resumed run trains the second
    pipeline = start_pipeline(project, "source=digits", "epochs=2", "overrides=seed=1")
    try:
        killed_train = wait_for_checkpoint(local_store, since_ms)
        [container] = [
            c for c in docker.from_env().containers.list() if c.name.startswith("cifar-pipeline-train-")
        ]
        container.kill()
        output, _ = pipeline.communicate(timeout=300)
    finally:
        pipeline.kill()
    assert pipeline.returncode != 0
    assert "step train FAILED" in output
    failed = pipeline_runs(local_store)[0]
    assert failed.info.status == "FAILED"
    train = local_store.get_run(killed_train.info.run_id)
    assert train.info.status == "FAILED"
    # the container's output up to the kill is on the run
    logs = local_store.download_artifacts(train.info.run_id, "logs/container.log", str(tmp_path))
    assert "training on" in Path(logs).read_text()
    assert leftover_containers() == []

    result = mlflow_run(project, f"resume={failed.info.run_id}")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = pipeline_runs(local_store)[0]
    assert resumed.info.status == "FINISHED"
    steps = summary_steps(local_store, resumed, tmp_path)
    assert steps["fetch"]["action"] == "reused"
    assert steps["fetch"]["reasons"] == [f"finished in pipeline {failed.info.run_id}"]
    assert steps["train"]["action"] == "ran"
    assert steps["train"]["reasons"] == [
        f"not cacheable: continues the interrupted train run {train.info.run_id}"
    ]
    continued = local_store.get_run(steps["train"]["run_id"])
    assert int(continued.data.tags["train.resumed_after_epoch"]) >= 1
    assert continued.data.params["epochs"] == "2"  # the failed pipeline's configuration
    assert continued.data.params["seed"] == "1"
    assert [steps[s]["action"] for s in ("build", "systemtest", "promote")] == ["ran"] * 3


def pipeline_containers(pipeline_run_id: str) -> list[str]:
    """The step containers (running or not) of one pipeline run, by their label."""
    label = f"{orphans.PIPELINE_RUN_LABEL}={pipeline_run_id}"
    return [c.name for c in docker.from_env().containers.list(all=True, filters={"label": label})]


@contextmanager
def training_pipeline(
    project: Path, store: MlflowClient, epochs: int, seed: int, new_session: bool = False
) -> Iterator[tuple[subprocess.Popen[str], Run]]:
    """A digits pipeline in the background, handed over once its train run has checkpointed;
    killed on the way out, whatever the test did to it. Its own seed: a train run of its own."""
    since_ms = int(time.time() * 1000)
    params = ("source=digits", f"epochs={epochs}", f"overrides=seed={seed}")
    pipeline = start_pipeline(project, *params, new_session=new_session)
    try:
        yield pipeline, wait_for_checkpoint(store, since_ms)
    finally:
        pipeline.kill()


def test_ctrl_c_during_training_kills_every_run_and_resume_continues_it(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    with training_pipeline(project, local_store, epochs=2, seed=2, new_session=True) as (pipeline, train):
        parent_id = train.data.tags["mlflow.parentRunId"]
        assert pipeline_containers(parent_id)
        signalled = time.monotonic()
        os.killpg(pipeline.pid, signal.SIGINT)  # what a terminal sends its foreground job on Ctrl-C
        output, _ = pipeline.communicate(timeout=120)
        gone = wait_until(lambda: not pipeline_containers(parent_id), 60, "the train container is gone")
        sys.stdout.write(f"Ctrl-C to the last container gone: {time.monotonic() - signalled:.1f} s\n")
    assert gone < 60
    assert pipeline.returncode != 0
    assert "stopping step train" in output
    time.sleep(3)  # nothing that outlived the signal overwrites the statuses
    parent = local_store.get_run(parent_id)
    assert parent.info.status == "KILLED"
    assert parent.data.tags["pipeline.error"] == "cancelled by SIGINT"
    killed_train = local_store.get_run(train.info.run_id)
    assert killed_train.info.status == "KILLED"
    assert leftover_containers() == []

    result = mlflow_run(project, f"resume={parent_id}")
    assert result.returncode == 0, result.stderr[-3000:]
    steps = summary_steps(local_store, pipeline_runs(local_store)[0], tmp_path)
    assert steps["train"]["reasons"] == [
        f"not cacheable: continues the interrupted train run {train.info.run_id}"
    ]
    continued = local_store.get_run(steps["train"]["run_id"])
    assert continued.info.status == "FINISHED"
    assert int(continued.data.tags["train.resumed_after_epoch"]) >= 1


def test_sigterm_to_mlflow_run_alone_stops_the_pipeline_and_its_container(
    project: Path, first_run: Run, local_store: MlflowClient
) -> None:
    """What `kill`, a CI cancel or systemd send, to the `mlflow run` process only."""
    with training_pipeline(project, local_store, epochs=6, seed=3) as (pipeline, train):
        parent_id = train.data.tags["mlflow.parentRunId"]
        signalled = time.monotonic()
        pipeline.send_signal(signal.SIGTERM)
        pipeline.communicate(timeout=60)
        wait_until(lambda: not pipeline_containers(parent_id), 60, "the train container is gone")
        wait_until(
            lambda: local_store.get_run(parent_id).info.status != "RUNNING", 60, "the pipeline run has ended"
        )
        sys.stdout.write(f"SIGTERM to the last container gone: {time.monotonic() - signalled:.1f} s\n")
    parent = local_store.get_run(parent_id)
    assert parent.info.status == "KILLED"
    assert parent.data.tags["pipeline.error"] == "cancelled by SIGTERM"
    assert local_store.get_run(train.info.run_id).info.status == "KILLED"
    assert leftover_containers() == []


def test_a_killed_orchestrators_container_is_ended_by_the_next_pipeline(
    project: Path, first_run: Run, local_store: MlflowClient
) -> None:
    with training_pipeline(project, local_store, epochs=7, seed=4) as (pipeline, train):
        [name] = pipeline_containers(train.data.tags["mlflow.parentRunId"])
        owner = orphans.Owner.parse(docker.from_env().containers.get(name).labels[orphans.OWNER_LABEL])
        assert owner is not None
        os.kill(owner.pid, signal.SIGKILL)  # the orchestrator dies without a word
        # `mlflow run` exits; its output stays open as long as the orphaned `docker run` runs
        pipeline.wait(timeout=60)
    assert docker.from_env().containers.get(name).status == "running"  # orphaned, training on

    result = mlflow_run(project, *FIRST_RUN_PARAMS)  # anything: all reused here
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ending container {name} (step train" in result.stdout + result.stderr
    assert pipeline_containers(train.data.tags["mlflow.parentRunId"]) == []
    ended = local_store.get_run(train.info.run_id)
    assert ended.info.status == "KILLED"
    assert f"pid {owner.pid}" in ended.data.tags[orphans.KILLED_REASON_TAG]


def test_two_pipelines_started_together_in_one_checkout_both_finish(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    running = [start_pipeline(project, *FIRST_RUN_PARAMS, "rerun=systemtest") for _ in range(2)]
    outputs = [process.communicate(timeout=900)[0] for process in running]
    for process, output in zip(running, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    parents = pipeline_runs(local_store)[:2]
    assert all(parent.info.status == "FINISHED" for parent in parents)
    systemtests = {children(local_store, parent)["systemtest"].info.run_id for parent in parents}
    assert len(systemtests) == 2  # each ran its own
    assert leftover_containers() == []
