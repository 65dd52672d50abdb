"""What a dead orchestrator left running is found and ended by the next pipeline: its owner label,
its pipeline runs and its launcher (its containers: tests/integration/test_orphans.py)."""

import os
import socket
import subprocess
import sys

import mlflow
from mlflow.tracking import MlflowClient

from cifar_pipeline.orchestrator.faults import orphans
from cifar_pipeline.orchestrator.faults.orphans import Owner
from cifar_pipeline.tracking import STEP_TAG


def dead_process() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_an_owner_label_round_trips() -> None:
    me = Owner.current()
    assert Owner.parse(str(me)) == me
    assert me.host == socket.gethostname()
    assert me.pid == os.getpid()
    assert Owner.parse("") is None
    assert Owner.parse("host/not-a-pid/123") is None


def test_a_live_process_is_alive_and_a_dead_or_reused_pid_is_not() -> None:
    me = Owner.current()
    assert me.is_alive()
    assert not Owner(me.host, dead_process(), "1").is_alive()
    if me.started:  # Linux: the same PID with another start time is another process
        assert not Owner(me.host, me.pid, str(int(me.started) + 1)).is_alive()


def test_another_hosts_owner_is_not_local() -> None:
    assert not Owner("some-other-host", os.getpid(), "").is_local()


def test_a_running_pipeline_run_of_a_dead_orchestrator_is_killed(mlflow_store: str) -> None:
    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("Default").experiment_id
    me = Owner.current()
    dead = Owner(me.host, dead_process(), "1")
    tags = {STEP_TAG: "pipeline"}
    orphaned = client.create_run(experiment, tags=tags | {orphans.OWNER_TAG: str(dead)})
    alive = client.create_run(experiment, tags=tags | {orphans.OWNER_TAG: str(me)})
    elsewhere = client.create_run(experiment, tags=tags | {orphans.OWNER_TAG: f"other-host/{dead.pid}/1"})
    assert orphans.end_orphaned_pipeline_runs(client, experiment) == [orphaned.info.run_id]
    assert client.get_run(orphaned.info.run_id).info.status == "KILLED"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    assert client.get_run(elsewhere.info.run_id).info.status == "RUNNING"
    assert mlflow.active_run() is None


def test_the_launcher_of_a_step_run_is_ended_with_its_process_group(mlflow_store: str) -> None:
    """MLflow's `mlflow run` watcher of a step: it would mark the run FAILED later."""
    client = MlflowClient(mlflow_store)
    run = client.create_run(client.get_experiment_by_name("Default").experiment_id)
    launcher = subprocess.Popen(["sleep", "300"], start_new_session=True)
    client.set_tag(run.info.run_id, orphans.LAUNCHER_TAG, str(Owner.of(launcher.pid)))
    orphans.end_launcher(client, run.info.run_id)
    assert launcher.wait(timeout=10) == -9
