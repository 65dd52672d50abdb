"""End to end, an image for a trained model: `model_run_id` runs only build and systemtest and pushes
the image to a registry; a failed push fails the build and leaves no image."""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest
import requests
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.e2e.helpers import TEST_IMAGE_REPO, children, leftover_containers, mlflow_run, pipeline_runs

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def registry() -> str:
    """A registry on 127.0.0.1 (`make test` starts one: scripts/ensure_local_registry.sh)."""
    address = os.environ.get("PIPELINE_TEST_REGISTRY", "")
    if not address:
        pytest.skip("PIPELINE_TEST_REGISTRY is not set: run `make test`, which starts a local registry")
    return address


def test_resume_from_model_runs_only_build_and_systemtest_and_pushes(
    project: Path, first_run: Run, local_store: MlflowClient, registry: str
) -> None:
    train_id = children(local_store, first_run)["train"].info.run_id
    result = mlflow_run(project, "source=digits", f"model_run_id={train_id}", f"registry={registry}")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = pipeline_runs(local_store)[0]
    assert resumed.info.run_id != first_run.info.run_id
    steps = children(local_store, resumed)
    assert set(steps) == {"build", "systemtest", "promote"}
    assert all(run.info.status == "FINISHED" for run in steps.values())
    build = steps["build"]
    assert build.data.tags["pipeline.upstream.model_run_id"] == train_id
    # the registry holds the image under the build's tag, with the digest the run recorded
    pushed = build.data.tags["image.pushed"]
    version = build.data.tags["image.tag"].split(":", 1)[1]
    assert pushed.startswith(f"{registry}/{TEST_IMAGE_REPO}:{version}@sha256:")
    manifest = requests.head(
        f"http://{registry}/v2/{TEST_IMAGE_REPO}/manifests/{version}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=10,
    )
    assert manifest.status_code == 200
    assert manifest.headers["Docker-Content-Digest"] == pushed.rsplit("@", 1)[1]
    docker.from_env().images.remove(pushed.split("@")[0], noprune=True)


def test_a_failed_push_fails_the_build_and_leaves_no_image(
    project: Path, first_run: Run, local_store: MlflowClient
) -> None:
    train_id = children(local_store, first_run)["train"].info.run_id
    images_before = {i.id for i in docker.from_env().images.list()}
    result = mlflow_run(project, "source=digits", f"model_run_id={train_id}", "registry=127.0.0.1:1")
    assert result.returncode != 0
    assert f"pushing 127.0.0.1:1/{TEST_IMAGE_REPO}:" in result.stdout + result.stderr
    failed = pipeline_runs(local_store)[0]
    assert failed.info.status == "FAILED"
    steps = children(local_store, failed)
    assert set(steps) == {"build"}  # the system test never ran
    assert steps["build"].info.status == "FAILED"
    assert "image.pushed" not in steps["build"].data.tags
    new_images = [i for i in docker.from_env().images.list() if i.id not in images_before]
    assert [t for i in new_images for t in i.tags] == []
    assert leftover_containers() == []
