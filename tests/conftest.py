"""Fixtures every kind of test uses: a throwaway MLflow store, a generated CIFAR-format tarball,
and a check that the suite leaves the user's images and containers alone.

Plain helpers are in tests/helpers.py; a fixture that one directory alone needs is in that
directory's conftest.py: unit/ (fast: no Docker, no servers), integration/ (a Docker engine, real
servers and processes, whole training runs) and e2e/ (the real `mlflow run .`)."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import docker
import mlflow
import pytest
from docker.errors import DockerException
from mlflow.tracking import MlflowClient

from cifar_pipeline.dataset import Split
from tests.helpers import write_cifar_tarball


@pytest.fixture
def cifar_tarball(tmp_path: Path) -> tuple[Path, tuple[Split, Split]]:
    path = tmp_path / "cifar-10-python.tar.gz"
    return path, write_cifar_tarball(path)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty sqlite tracking store, made once: creating one runs MLflow's ~50 schema
    migrations (seconds), copying it takes milliseconds."""
    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_store(empty_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh sqlite tracking store for the test, with artifacts under tmp_path."""
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    with closing(sqlite3.connect(tmp_path / "mlflow.db")) as db, db:
        # The default experiment keeps its artifacts where the store was made: here, under tmp_path.
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                   (str(tmp_path / "mlruns" / "0"),))  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri("")


def engine_state() -> tuple[dict[str, str], set[str]] | None:
    """Every image tag on the Docker engine with the image it names, and every container."""
    try:
        engine = docker.from_env()
        tags = {tag: image.id for image in engine.images.list() for tag in image.tags}
        # A pipeline's own step and serving containers end by themselves (a demo running
        # beside the suite): only other containers must be left as they were.
        containers = {
            container.id
            for container in engine.containers.list(all=True)
            if not any(label.startswith("cifar-pipeline") for label in container.labels)
        }
    except DockerException:
        return None
    return tags, containers


@pytest.fixture(scope="session", autouse=True)
def users_images_and_containers_untouched() -> Iterator[None]:
    """The suite removes and re-tags only what it made: a `make test` after `make demo`
    leaves the demo's images, tags and containers as they were (checked after the suite)."""
    before = engine_state()
    yield
    after = engine_state()
    if before is None or after is None:
        return
    (tags_before, containers_before), (tags_after, containers_after) = before, after
    changed = {
        tag: f"{image} -> {tags_after.get(tag, 'removed')}"
        for tag, image in tags_before.items()
        if tags_after.get(tag) != image
    }
    assert not changed, f"the test suite changed or removed images it did not make: {changed}"
    gone = containers_before - containers_after
    assert not gone, f"the test suite removed containers it did not make: {sorted(gone)}"
