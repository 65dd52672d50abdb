"""Shared fixtures: generated CIFAR-format tarballs, a throwaway MLflow store."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest

CLASS_NAMES = [f"class{i}" for i in range(10)]


def _batch(rng: np.random.Generator, count: int) -> dict[bytes, object]:
    return {
        b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
        b"labels": rng.integers(0, 10, count).tolist(),
    }


def write_cifar_tarball(path: Path, per_batch: int = 20, seed: int = 0) -> dict[str, dict[bytes, object]]:
    """A tarball in the official cifar-10-python layout; returns the batches written."""
    rng = np.random.default_rng(seed)
    batches: dict[str, dict[bytes, object]] = {f"data_batch_{i}": _batch(rng, per_batch) for i in range(1, 6)}
    batches["test_batch"] = _batch(rng, per_batch)
    meta = {b"label_names": [n.encode() for n in CLASS_NAMES]}
    with tarfile.open(path, "w:gz") as archive:
        for name, content in [*batches.items(), ("batches.meta", meta)]:
            payload = pickle.dumps(content)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return batches


def md5_spec(path: Path) -> str:
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def cifar_tarball(tmp_path: Path) -> tuple[Path, dict[str, dict[bytes, object]]]:
    path = tmp_path / "cifar-10-python.tar.gz"
    return path, write_cifar_tarball(path)


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh sqlite tracking store for the test, with artifacts under tmp_path."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri("")
