"""Signals as `Cancelled`: a cancelled step or pipeline cleans up instead of vanishing."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest

from cifar_pipeline.cancellation import Cancelled, cancellable
from cifar_pipeline.tracking import STEP_TAG, step_run


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_raises_cancelled_with_the_shell_exit_code(signum: int) -> None:
    with pytest.raises(Cancelled) as cancelled, cancellable():
        os.kill(os.getpid(), signum)
    assert cancelled.value.signal_name == signal.Signals(signum).name
    assert cancelled.value.exit_code == 128 + signum
    assert str(cancelled.value) == f"cancelled by {signal.Signals(signum).name}"


def test_later_signals_go_to_on_repeat_and_do_not_interrupt_the_cleanup() -> None:
    repeats: list[int] = []
    cleaned_up = []

    def cancelled_then_signalled_again() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            cleaned_up.append(True)

    with pytest.raises(Cancelled), cancellable(on_repeat=repeats.append):
        cancelled_then_signalled_again()
    assert cleaned_up == [True]
    assert repeats == [signal.SIGTERM, signal.SIGINT]


def test_the_previous_handlers_are_back_afterwards() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with cancellable():
        pass
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_step_run_cancelled_by_sigterm_ends_killed_with_its_log(mlflow_store: str, tmp_path: Path) -> None:
    started: list[str] = []

    def step_stopped_by_docker() -> None:
        with step_run("train") as run:
            started.append(run.info.run_id)
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Cancelled):
        step_stopped_by_docker()
    [run_id] = started
    ended = mlflow.MlflowClient().get_run(run_id)
    assert ended.info.status == "KILLED"
    assert ended.data.tags[STEP_TAG] == "train"
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "logs")}
    assert logged == {"logs/train.log"}
    assert mlflow.active_run() is None


def test_the_orchestrator_gets_sigterm_when_its_parent_dies(tmp_path: Path) -> None:
    """`mlflow run` killed alone: the process it started hears of it (Linux)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    marker = tmp_path / "terminated"
    child = textwrap.dedent(f"""
        import signal, sys, time
        from cifar_pipeline.cancellation import term_when_parent_dies
        def on_term(signum, frame):
            open({str(marker)!r}, "w").write("SIGTERM")
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        term_when_parent_dies()
        print("ready", flush=True)
        time.sleep(60)
    """)
    # a parent that starts the child, says its PID, then waits to be killed
    parent_code = textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {child!r}], stdout=subprocess.PIPE, text=True)
        print(child.stdout.readline().strip(), child.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    )
    assert parent.stdout is not None
    ready, _child_pid = parent.stdout.readline().split()
    assert ready == "ready"
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.read_text() == "SIGTERM"
