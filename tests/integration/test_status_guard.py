"""A cancelled `mlflow run` entry run stays KILLED although MLflow's CLI marks it FAILED: against a
process that does what the CLI does (the guard's own checks: tests/unit/test_status_guard.py)."""

import subprocess
import sys
import textwrap

import pytest
from mlflow.tracking import MlflowClient

from cifar_pipeline.orchestrator.faults.status_guard import restore_killed

pytestmark = pytest.mark.slow


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
