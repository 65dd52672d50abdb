"""Plain helpers the tests share: generated data sets (CIFAR-format tarballs, image folders,
a finished fetch run) and the checksums they are fetched by. Fixtures are in conftest.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient
from PIL import Image

from cifar_pipeline.dataset import Split, write_dataset
from cifar_pipeline.sources import cifar10
from cifar_pipeline.tracking import FETCH, STEP_TAG

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


def fake_fetch_run(tmp_path: Path, seed: int) -> str:
    """A FINISHED fetch run holding a tiny random dataset (96 train / 32 test images)."""
    rng = np.random.default_rng(seed)

    def split(count: int) -> Split:
        return Split(rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), rng.integers(0, 4, count))

    out = tmp_path / f"data-{seed}"
    write_dataset(
        out, split(96), split(32), ["a", "b", "c", "d"], {"name": "test", "url": "", "input_digest": ""}
    )
    with mlflow.start_run() as run:
        mlflow.set_tag(STEP_TAG, FETCH)
        mlflow.log_artifacts(str(out), "data")
    return run.info.run_id


def reference_logits(client: MlflowClient, run_id: str, tmp_path: Path) -> np.ndarray:
    """The logits a train run logged for its reference images."""
    path = client.download_artifacts(run_id, "reference/predictions.npz", str(tmp_path))
    return np.load(path)["logits"]


def assert_same(actual: Split, expected: Split) -> None:
    """The same images and labels, in the same order."""
    np.testing.assert_array_equal(actual.images, expected.images)
    np.testing.assert_array_equal(actual.labels, expected.labels)


def tiny_splits(count: int = 96, seed: int = 0) -> tuple[Split, Split]:
    """Random images in 10 classes; the test split is the first 32 of the training split."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, count)
    return Split(images, labels), Split(images[:32], labels[:32])
