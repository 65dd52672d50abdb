"""Statistics of a data set version, computed once when it is fetched (TFDV's StatisticsGen).

Per split: class counts and shares; per-channel pixel histograms, mean and std; per-image
brightness and contrast; near-constant (blank) images; exact duplicates, found by hashing
each image's bytes. Across splits: test images whose bytes also occur in the training split
(leakage). Plain JSON, so a later run validates against it without the reference's images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from cifar_pipeline.dataset import Split

FORMAT_VERSION = 1
HISTOGRAM_BINS = 64  # per channel: four intensity levels per bin
CHANNELS = ("red", "green", "blue")
_CHUNK = 2048  # images per pass: small enough for the cache, and no 60,000-image temporary copy


def image_hash(image: np.ndarray) -> bytes:
    """Identity of an image's pixels: equal for byte-identical images, whatever their label."""
    return hashlib.blake2b(image.tobytes(), digest_size=16).digest()


def image_hashes(images: Iterable[np.ndarray]) -> list[bytes]:
    return [image_hash(image) for image in images]


def _pixels(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass in chunks: each channel's 256-level histogram, and each image's brightness
    (mean pixel) and contrast (pixel std) on the 0-1 scale. Sums are exact integers."""
    histograms = np.zeros((len(CHANNELS), 256), np.int64)
    brightness, contrast = np.empty(len(images)), np.empty(len(images))
    size = images[0].size if len(images) else 1
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK]
        for channel in range(len(CHANNELS)):
            histograms[channel] += np.bincount(chunk[..., channel].ravel(), minlength=256)
        flat = chunk.reshape(len(chunk), -1)
        wide = flat.astype(np.int32)  # a square of 255 and 3,072 of them fit in int32
        total = flat.sum(axis=1, dtype=np.int64)
        squares = np.einsum("ij,ij->i", wide, wide).astype(np.int64)
        mean = total / size
        brightness[start : start + len(chunk)] = mean / 255.0
        contrast[start : start + len(chunk)] = np.sqrt(np.maximum(squares / size - mean**2, 0.0)) / 255.0
    return histograms, brightness, contrast


def _summary(values: np.ndarray) -> dict[str, float]:
    quantiles = np.quantile(values, [0.01, 0.5, 0.99])
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "p01": float(quantiles[0]),
        "p50": float(quantiles[1]),
        "p99": float(quantiles[2]),
    }


def _channels(histograms: np.ndarray) -> dict[str, Any]:
    levels = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for counts in histograms:
        mean = float(counts @ levels / counts.sum())
        means.append(mean)
        stds.append(float(np.sqrt(counts @ (levels - mean) ** 2 / counts.sum())))
    binned = histograms.reshape(len(CHANNELS), HISTOGRAM_BINS, -1).sum(axis=2)
    return {"channel_histograms": binned.tolist(), "channel_mean": means, "channel_std": stds}


def split_statistics(split: Split, hashes: list[bytes], num_classes: int, blank_std: float) -> dict[str, Any]:
    counts = np.bincount(split.labels, minlength=num_classes)
    histograms, brightness, contrast = _pixels(split.images)
    labels_by_image: dict[bytes, set[int]] = {}
    for digest, label in zip(hashes, split.labels.tolist(), strict=True):
        labels_by_image.setdefault(digest, set()).add(label)
    return {
        "count": len(split.labels),
        "class_counts": counts.tolist(),
        "class_shares": (counts / max(len(split.labels), 1)).tolist(),
        **_channels(histograms),
        "brightness": _summary(brightness),
        "contrast": _summary(contrast),
        "blank_images": int((contrast < blank_std).sum()),
        "duplicate_images": len(hashes) - len(labels_by_image),
        "conflicting_labels": sum(len(labels) > 1 for labels in labels_by_image.values()),
    }


def compute(train: Split, test: Split, class_names: list[str], blank_std: float) -> dict[str, Any]:
    """The statistics of one data set version. `blank_std`: an image whose pixel std (0-1
    scale) is below it counts as blank."""
    train_hashes, test_hashes = image_hashes(train.images), image_hashes(test.images)
    in_train = set(train_hashes)
    labels = np.concatenate([train.labels, test.labels])
    return {
        "format_version": FORMAT_VERSION,
        "class_names": list(class_names),
        "image_shape": list(train.images.shape[1:]),
        "dtype": str(train.images.dtype),
        "label_range": [int(labels.min()), int(labels.max())],
        "blank_std": blank_std,
        "splits": {
            "train": split_statistics(train, train_hashes, len(class_names), blank_std),
            "test": split_statistics(test, test_hashes, len(class_names), blank_std),
        },
        "leaked_test_images": sum(digest in in_train for digest in test_hashes),
        "leaked_distinct_images": len(set(test_hashes) & in_train),
    }
