"""Helpers for the end-to-end tests: `mlflow run .` in a copy of the project, and the runs and
containers it makes. Fixtures are in conftest.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from cifar_pipeline.orchestrator.experiment import PROJECT_NAME
from cifar_pipeline.orchestrator.planning.cache import REUSED_STEP_TAG
from cifar_pipeline.tracking import STEP_TAG

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The suite's own inference image repository: a user's `cifar-classifier` images stay as they are.
TEST_IMAGE_REPO = f"cifar-classifier-e2e-{uuid.uuid4().hex[:8]}"
# The first pipeline's parameters (conftest.first_run): a pipeline given these again reuses it. Two
# epochs, the fewest that learn digits (about 0.86 test accuracy); one epoch of the one-cycle
# schedule leaves a model at chance.
FIRST_RUN_PARAMS = ("source=digits", "epochs=2")
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".wheelhouse", ".build", "mlruns", "mlartifacts", "mlflow.db", "outputs",
    "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
)  # fmt: skip


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def mlflow_run_args(*params: str, uri: str = ".", docker_args: tuple[str, ...] = ()) -> list[str]:
    args = [str(BIN / "mlflow"), "run", uri, "--env-manager", "local"]
    for param in params:
        args += ["-P", param]
    for arg in docker_args:
        args += ["-A", arg]
    return args


def start_pipeline(
    project: Path, *params: str, new_session: bool = False, **env: str
) -> subprocess.Popen[str]:
    """`mlflow run .` in the background, its output (both streams) readable at the end.

    `new_session`: in a process group of its own, as a terminal's foreground job is.
    """
    return subprocess.Popen(
        mlflow_run_args(*params),
        cwd=project,
        env=subprocess_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=new_session,
    )


def mlflow_run(
    project: Path, *params: str, uri: str = ".", docker_args: tuple[str, ...] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    args = mlflow_run_args(*params, uri=uri, docker_args=docker_args)
    result = subprocess.run(
        args,
        cwd=project,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    sys.stdout.write(result.stdout[-20000:])
    sys.stderr.write(result.stderr[-20000:])
    return result


def copy_project(destination: Path) -> Path:
    """A copy of the project whose inference images are the suite's own (TEST_IMAGE_REPO),
    so that no test replaces or removes an image a user built."""
    shutil.copytree(ROOT, destination, ignore=COPY_IGNORE)
    serve_config = destination / "configs" / "serve" / "default.yaml"
    original = serve_config.read_text()
    serve_config.write_text(
        original.replace("image_repo: cifar-classifier\n", f"image_repo: {TEST_IMAGE_REPO}\n")
    )
    assert serve_config.read_text() != original
    return destination


def in_project(client: MlflowClient) -> list[str]:
    """The experiment `mlflow run .` uses in the project by default: the project's own."""
    experiment = client.get_experiment_by_name(PROJECT_NAME)
    assert experiment is not None, f"no experiment {PROJECT_NAME!r}: is the project installed in the venv?"
    return [experiment.experiment_id]


def pipeline_runs(client: MlflowClient) -> list[Run]:
    return client.search_runs(
        in_project(client), f"tags.`{STEP_TAG}` = 'pipeline'", order_by=["start_time DESC"]
    )


def children(client: MlflowClient, parent: Run) -> dict[str, Run]:
    """The parent's step runs by step; a reused step's record run under its step name too."""
    runs = client.search_runs(in_project(client), f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return {(run.data.tags.get(STEP_TAG) or run.data.tags[REUSED_STEP_TAG]): run for run in runs}


def summary_steps(client: MlflowClient, parent: Run, tmp_path: Path) -> dict[str, dict]:
    path = client.download_artifacts(parent.info.run_id, "summary.json", str(tmp_path))
    return {step["step"]: step for step in json.loads(Path(path).read_text())["steps"]}


def leftover_containers() -> list[str]:
    names = [c.name for c in docker.from_env().containers.list(all=True)]
    return [n for n in names if n.startswith(("cifar-pipeline-", "cifar-systemtest-"))]


@dataclass
class SeenContainer:
    name: str
    mounts: list[str]  # host paths
    env: dict[str, str]


@contextmanager
def watching_step_containers() -> Iterator[list[SeenContainer]]:
    """Each step container's mounts and environment, looked at as it starts."""
    seen: list[SeenContainer] = []
    engine = docker.from_env()
    started = {"type": "container", "event": "start", "label": "cifar-pipeline.step"}
    events = engine.events(since=int(time.time()), filters=started, decode=True)

    def look() -> None:
        for event in events:
            try:
                attrs = engine.containers.get(event["id"]).attrs
            except docker.errors.NotFound:
                continue
            env = dict(item.partition("=")[::2] for item in attrs["Config"]["Env"])
            mounts = [mount["Source"] for mount in attrs["Mounts"]]
            seen.append(SeenContainer(attrs["Name"].lstrip("/"), mounts, env))

    watcher = threading.Thread(target=look, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        time.sleep(1)  # the last start event
        events.close()
        watcher.join(timeout=10)


def wait_for_checkpoint(client: MlflowClient, since_ms: int, timeout: float = 300) -> Run:
    """The train run started after `since_ms` once it has logged a checkpoint."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        query = f"tags.`{STEP_TAG}` = 'train' and attributes.start_time > {since_ms}"
        experiment = client.get_experiment_by_name(PROJECT_NAME)  # made by the pipeline's start
        for run in client.search_runs([experiment.experiment_id], query) if experiment else []:
            if any(
                a.path == "checkpoints/last.pt" for a in client.list_artifacts(run.info.run_id, "checkpoints")
            ):
                return run
        time.sleep(0.5)
    raise AssertionError("no train run checkpointed in time")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `condition()` held."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)
    return time.monotonic() - started
