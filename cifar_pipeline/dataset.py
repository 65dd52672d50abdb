"""The one on-disk data format that every source writes and training reads.

A dataset directory holds uint8 image arrays (N, 32, 32, 3), int64 label arrays and
`manifest.json`. Arrays are `.npy` files, loaded with `allow_pickle=False`: reading a
dataset never executes code from it. The manifest records each file's sha256, and
`read_dataset` refuses files that do not match.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cifar_pipeline import __version__
from cifar_pipeline.checksums import ChecksumError, file_digest

IMAGE_SHAPE = (32, 32, 3)
MANIFEST = "manifest.json"
SPLITS = ("train", "test")


@dataclass
class Split:
    images: np.ndarray  # (N, 32, 32, 3) uint8, RGB, HWC
    labels: np.ndarray  # (N,) int64

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.shape[1:] != IMAGE_SHAPE:
            raise ValueError(
                f"images must be uint8 (N, 32, 32, 3), got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must have shape ({len(self.images)},), got {self.labels.shape}")
        self.labels = self.labels.astype(np.int64)


@dataclass
class Dataset:
    train: Split
    test: Split
    class_names: list[str]
    manifest: dict[str, Any]


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, on the 0-1 scale."""
    pixels = images.reshape(-1, 3).astype(np.float64) / 255.0
    return pixels.mean(axis=0).tolist(), pixels.std(axis=0).tolist()


def dataset_digest(file_digests: dict[str, str]) -> str:
    """The data version: one sha256 over every array's sha256 (what runs are filtered by)."""
    return hashlib.sha256(json.dumps(file_digests, sort_keys=True).encode()).hexdigest()


def write_dataset(
    out_dir: Path,
    train: Split,
    test: Split,
    class_names: list[str],
    source: dict[str, Any],
) -> dict[str, Any]:
    """Write arrays and manifest to `out_dir`; return the manifest."""
    for name, split in (("train", train), ("test", test)):
        if not len(split.labels):
            raise ValueError(f"the {name} split is empty")
        if split.labels.min() < 0 or split.labels.max() >= len(class_names):
            raise ValueError(
                f"{name} labels span {split.labels.min()}..{split.labels.max()}; "
                f"expected 0..{len(class_names) - 1} for {len(class_names)} classes"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for name, split in (("train", train), ("test", test)):
        for kind, array in (("images", split.images), ("labels", split.labels)):
            path = out_dir / f"{name}_{kind}.npy"
            np.save(path, array, allow_pickle=False)
            files[path.name] = file_digest(path)
    mean, std = channel_stats(train.images)
    manifest = {
        "format_version": 1,
        "source": source,
        "class_names": class_names,
        "num_classes": len(class_names),
        "shapes": {
            name: {"images": list(split.images.shape), "labels": list(split.labels.shape)}
            for name, split in (("train", train), ("test", test))
        },
        "class_counts": {
            name: np.bincount(split.labels, minlength=len(class_names)).tolist()
            for name, split in (("train", train), ("test", test))
        },
        "mean": mean,
        "std": std,
        "sha256": files,
        "digest": dataset_digest(files),
        "bytes": sum((out_dir / name).stat().st_size for name in files),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "code_version": __version__,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def read_dataset(data_dir: Path) -> Dataset:
    """Load a dataset directory, verifying every array against the manifest first."""
    manifest_path = data_dir / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: no manifest; not a dataset directory")
    manifest = json.loads(manifest_path.read_text())
    for name, expected in manifest["sha256"].items():
        actual = file_digest(data_dir / name)
        if actual != expected:
            raise ChecksumError(
                f"{name}: sha256 mismatch against manifest: expected {expected}, got {actual}"
            )
    splits = {
        name: Split(
            images=np.load(data_dir / f"{name}_images.npy", allow_pickle=False),
            labels=np.load(data_dir / f"{name}_labels.npy", allow_pickle=False),
        )
        for name in SPLITS
    }
    return Dataset(
        train=splits["train"],
        test=splits["test"],
        class_names=list(manifest["class_names"]),
        manifest=manifest,
    )
