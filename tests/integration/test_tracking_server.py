"""The tracking server the orchestrator serves a local store with: started on first use, what a
client that has only its URL logs lands in the store, and it never outlives the orchestrator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from cifar_pipeline.orchestrator.experiment import PROJECT_NAME, project_experiment_id
from cifar_pipeline.orchestrator.running.tracking_server import (
    LocalTrackingServer,
    TrackingServerError,
    serving,
)

pytestmark = pytest.mark.slow

CLIENT = """
import mlflow, sys
with mlflow.start_run(experiment_id=sys.argv[1]) as run:
    mlflow.log_metric("accuracy", 0.5)
    mlflow.log_text("through the server", "notes/a.txt")
print(run.info.run_id)
"""


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.2)
    return False


def test_a_client_with_only_the_url_writes_runs_and_artifacts_into_the_store(
    mlflow_store: str, tmp_path: Path
) -> None:
    experiment_id = project_experiment_id(mlflow_store)
    with LocalTrackingServer(mlflow_store) as server:
        assert server.process is None  # nothing started before a container needs it
        url = server.url()
        assert url.startswith("http://127.0.0.1:")
        assert server.url() == url  # one server
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        client = subprocess.run(
            [sys.executable, "-c", CLIENT, experiment_id],
            cwd=elsewhere,  # no store here: all it has is the URL
            env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"MLFLOW_TRACKING_URI": url},  # noqa: E501
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        group = server.process.pid if server.process else 0
    run_id = client.stdout.strip().splitlines()[-1]
    run = MlflowClient(mlflow_store).get_run(run_id)  # the host, without the server
    assert run.data.metrics["accuracy"] == 0.5
    stored = tmp_path / "mlruns" / PROJECT_NAME / run_id / "artifacts" / "notes" / "a.txt"
    assert stored.read_text() == "through the server"
    assert list(elsewhere.iterdir()) == []
    # closed: the server and its worker are gone, the port answers no more
    assert not group_alive(group)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=2)


def test_a_tracking_server_is_not_served_again() -> None:
    with serving("http://mlflow.example:5000") as server:
        assert server is None
    with pytest.raises(ValueError, match="not a local store"):
        LocalTrackingServer("http://mlflow.example:5000")


def test_the_server_ends_with_an_orchestrator_killed_by_sigkill(mlflow_store: str) -> None:
    orchestrator = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from cifar_pipeline.orchestrator.running.tracking_server import LocalTrackingServer
            server = LocalTrackingServer({mlflow_store!r})
            print(server.url(), server.process.pid, flush=True)
            time.sleep(600)
        """)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert orchestrator.stdout is not None
    url, group = orchestrator.stdout.readline().split()
    assert requests.get(f"{url}/health", timeout=5).ok
    orchestrator.send_signal(signal.SIGKILL)
    orchestrator.wait()
    assert wait_for(lambda: not group_alive(int(group)), 30), "the server outlived its orchestrator"


def test_a_server_that_cannot_start_is_an_error_with_its_output(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    store = f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}"
    with (
        LocalTrackingServer(store) as server,
        pytest.raises(TrackingServerError, match="did not start") as error,
    ):
        server.url()
    assert store in str(error.value)
    assert "its output ends:" in str(error.value)
