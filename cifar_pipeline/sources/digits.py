"""scikit-learn's digits (1,797 8x8 grey images, 10 classes) as 32x32 RGB: the offline demo."""

from __future__ import annotations

from typing import Any

import numpy as np
import sklearn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from cifar_pipeline.dataset import Split

_MAX_PIXEL = 16.0  # digits pixels are 0-16
_SCALE = 4  # 8x8 -> 32x32


def to_rgb32(images: np.ndarray) -> np.ndarray:
    """8x8 0-16 grey images -> 32x32x3 uint8, nearest-neighbour upscaled."""
    scaled = np.rint(images / _MAX_PIXEL * 255.0).astype(np.uint8)
    big = scaled.repeat(_SCALE, axis=1).repeat(_SCALE, axis=2)
    return np.repeat(big[..., None], 3, axis=3)


def input_digest() -> str:
    """The digits ship inside scikit-learn: its version identifies them."""
    return f"scikit-learn:{sklearn.__version__}"


def load(test_fraction: float, split_seed: int) -> tuple[Split, Split, list[str], dict[str, Any]]:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction}: expected a number between 0 and 1")
    digits = load_digits()
    images = to_rgb32(digits.images)
    labels = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=test_fraction, random_state=split_seed, stratify=labels
    )
    source = {
        "name": "digits",
        "url": "sklearn.datasets.load_digits",
        "input_digest": input_digest(),
        "test_fraction": test_fraction,
        "split_seed": split_seed,
    }
    names = [str(d) for d in range(10)]
    return Split(train_x, train_y), Split(test_x, test_y), names, source
