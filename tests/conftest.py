"""Shared fixtures: generated CIFAR-format tarballs, a throwaway MLflow store, and a check
that the suite leaves the user's images and containers alone."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import docker
import mlflow
import numpy as np
import pytest
from docker.errors import DockerException
from mlflow.tracking import MlflowClient
from PIL import Image

from cifar_pipeline.dataset import Split
from cifar_pipeline.sources import cifar10

CLASS_NAMES = [f"class{i}" for i in range(10)]


def write_cifar_tarball(path: Path, count: int = 120, seed: int = 0) -> tuple[Split, Split]:
    """A tarball in the official cifar-10-python layout with `count` random images per split."""
    rng = np.random.default_rng(seed)

    def split() -> Split:
        return Split(rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, count))

    train, test = split(), split()
    cifar10.write_archive(path, train, test, CLASS_NAMES)
    return train, test


def noise_image(rng: np.random.Generator, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """An image of random pixels: no two alike, none blank, as a data set's photos are."""
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], *channels), dtype=np.uint8), mode)


def write_image_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """Class folders of PNGs of random pixels, of mixed sizes."""
    rng = np.random.default_rng(seed)
    for name, count in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            noise_image(rng, (32 + 3 * i, 30)).save(root / name / f"{i}.png")
    return root


def md5_spec(path: Path) -> str:
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


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


@pytest.fixture(scope="module")
def served_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A small exported classifier in a model folder, as the inference image serves it; and the
    PyTorch model, for the reference logits."""
    from tests.serving_server import exported_model

    directory = tmp_path_factory.mktemp("model")
    return directory, exported_model(directory)


@pytest.fixture(scope="module")
def served_url(served_model: tuple[Path, Any]) -> Iterator[str]:
    """The inference app under uvicorn on a loopback port: its base URL."""
    from tests.serving_server import serving

    with serving(served_model[0]) as url:
        yield url
