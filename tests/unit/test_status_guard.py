"""A cancelled `mlflow run` entry run stays KILLED although MLflow's CLI marks it FAILED: the guard's
checks (against a process that marks it FAILED: tests/integration/test_status_guard.py)."""

import os
import subprocess
import sys

from mlflow.tracking import MlflowClient

from cifar_pipeline.orchestrator.faults.status_guard import restore_killed
from cifar_pipeline.processes import process_exists


def test_a_run_still_killed_is_left_as_it_is(mlflow_store: str) -> None:
    client = MlflowClient(mlflow_store)
    run = client.create_run(client.get_experiment_by_name("Default").experiment_id)
    client.set_terminated(run.info.run_id, "KILLED")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert not restore_killed(run.info.run_id, gone.pid, client)


def test_an_exited_but_unreaped_process_does_not_exist() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left a zombie
    assert not process_exists(child.pid)
    child.wait()
    assert not process_exists(child.pid)
