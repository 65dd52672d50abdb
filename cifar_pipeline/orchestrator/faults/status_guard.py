"""Keep a cancelled `mlflow run` entry run KILLED after MLflow's CLI has exited.

MLflow's CLI (3.17), interrupted by Ctrl-C, waits for the entry point to exit and then
marks its run FAILED "unless it already ended"; but that check compares the status name
with MLflow's numeric statuses (`RunStatus.is_terminated("KILLED")` is False), so it
overwrites the KILLED that the pipeline set. The pipeline cannot outlive the CLI's wait,
so a small detached process waits for the CLI to exit, then puts KILLED back with the
original end time, and exits (within a second of the CLI).

    python -m cifar_pipeline.orchestrator.faults.status_guard <run id> <CLI pid>
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import mlflow
from mlflow.tracking import MlflowClient

from cifar_pipeline.processes import process_exists
from cifar_pipeline.tracking import KILLED

log = logging.getLogger(__name__)

WAIT_LIMIT_SECONDS = 600.0
# The entry run `mlflow run` created for this process, read now: `mlflow.end_run` unsets it.
CLI_ENTRY_RUN_ID = os.environ.get("MLFLOW_RUN_ID", "")


def guard_killed_run(run_id: str) -> None:
    """If `run_id` is the entry run of the `mlflow run` that started this process, restore
    its KILLED status after the CLI has exited (and overwritten it)."""
    if not run_id or run_id != CLI_ENTRY_RUN_ID:
        return  # not the CLI's entry run: nobody overwrites it
    subprocess.Popen(
        [sys.executable, "-m", __name__, run_id, str(os.getppid())],
        env=os.environ | {"MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()},
        start_new_session=True,  # a second Ctrl-C to the terminal's job does not reach it
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def restore_killed(run_id: str, cli_pid: int, client: MlflowClient, poll: float = 0.05) -> bool:
    """Wait for `cli_pid` to exit, then make the run KILLED again if it was overwritten."""
    end_time = client.get_run(run_id).info.end_time
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while process_exists(cli_pid) and time.monotonic() < deadline:
        time.sleep(poll)
    run = client.get_run(run_id)
    if run.info.status == KILLED:
        return False
    client.set_terminated(run_id, KILLED, end_time=end_time)
    return True


if __name__ == "__main__":
    restore_killed(sys.argv[1], int(sys.argv[2]), MlflowClient())
