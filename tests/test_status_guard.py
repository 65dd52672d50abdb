"""A cancelled `mlflow run` entry run stays KILLED although MLflow's CLI marks it FAILED."""

import os
import subprocess
import sys
import textwrap

from mlflow.tracking import MlflowClient

from cifar_pipeline.orchestrator.faults.status_guard import restore_killed
from cifar_pipeline.processes import process_exists


def test_the_run_is_killed_again_with_its_end_time_once_the_cli_is_gone(mlflow_store: str) -> None:
    client = MlflowClient(mlflow_store)
    run = client.create_run(client.get_experiment_by_name("Default").experiment_id)
    client.set_terminated(run.info.run_id, "KILLED", end_time=1_000_000)
    # what MLflow's CLI does after a Ctrl-C, once the entry point has exited
    cli = subprocess.Popen([
        sys.executable, "-c", textwrap.dedent(f"""
            import time
            from mlflow.tracking import MlflowClient
            time.sleep(1)
            MlflowClient({mlflow_store!r}).set_terminated({run.info.run_id!r}, "FAILED")
        """),
    ])  # fmt: skip
    try:
        assert restore_killed(run.info.run_id, cli.pid, client)
    finally:
        cli.wait()
    restored = client.get_run(run.info.run_id)
    assert restored.info.status == "KILLED"
    assert restored.info.end_time == 1_000_000


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
