"""Fixtures of the end-to-end tests: a copy of the project, its local store and its first pipeline.

Runs in a copy of the project with no tracking URI set, so it exercises the default
local store in the project directory, exactly as a user's first `mlflow run .`.

The fixtures are package-scoped: the files, numbered, run in that order against one project
and one store, and later tests build on what earlier ones left (the re-runs reuse the first
pipeline's steps; the tracking UI test, last, reads every pipeline before it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import docker
import mlflow
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.e2e.helpers import (
    FIRST_RUN_PARAMS,
    TEST_IMAGE_REPO,
    SeenContainer,
    copy_project,
    mlflow_run,
    pipeline_runs,
    watching_step_containers,
)


@pytest.fixture(scope="package")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    copy = copy_project(tmp_path_factory.mktemp("e2e") / "project")
    yield copy
    built = [t for i in docker.from_env().images.list(TEST_IMAGE_REPO) for t in i.tags]
    for tag in built:
        docker.from_env().images.remove(tag, force=True)


@pytest.fixture(scope="package")
def local_store(project: Path) -> Iterator[MlflowClient]:
    uri = f"sqlite:///{project / 'mlflow.db'}"
    # The first client to open the store creates it, with its default experiment's artifacts
    # under ./mlruns of the working directory: the project's, as for a user's first run.
    test_dir = Path.cwd()
    os.chdir(project)
    try:
        client = MlflowClient(uri)
        client.search_experiments()
    finally:
        os.chdir(test_dir)
    mlflow.set_tracking_uri(uri)
    yield client
    mlflow.set_tracking_uri("")


@pytest.fixture(scope="package")
def first_run_containers() -> list[SeenContainer]:
    return []


@pytest.fixture(scope="package")
def first_run(project: Path, local_store: MlflowClient, first_run_containers: list[SeenContainer]) -> Run:
    with watching_step_containers() as seen:
        result = mlflow_run(project, *FIRST_RUN_PARAMS)
    first_run_containers.extend(seen)
    assert result.returncode == 0, result.stderr[-3000:]
    return pipeline_runs(local_store)[0]
