"""The training loop on CPU for whole epochs: determinism and both recipes, one with worker
processes (its parts: tests/unit/test_training.py)."""

import numpy as np
import pytest
import torch

from cifar_pipeline.model import Classifier
from cifar_pipeline.training import TrainConfig, train
from tests.helpers import tiny_splits

pytestmark = pytest.mark.slow


def first_epoch_loss(**overrides: object) -> float:
    train_split, test_split = tiny_splits()
    torch.manual_seed(123)  # the model's initial weights
    model = Classifier(10, [0.5] * 3, [0.25] * 3)
    config = TrainConfig(**{"epochs": 1, "batch_size": 32, "device": "cpu", "workers": 0, **overrides})
    return train(model, train_split, test_split, config)[0].train_loss


@pytest.mark.parametrize("recipe", ["fast", "classic"])
def test_same_seed_gives_the_same_first_epoch_loss(recipe: str) -> None:
    assert first_epoch_loss(recipe=recipe, seed=1) == first_epoch_loss(recipe=recipe, seed=1)


def test_another_seed_gives_another_first_epoch_loss() -> None:
    assert first_epoch_loss(seed=1) != first_epoch_loss(seed=2)


def test_classic_recipe_with_worker_processes_trains() -> None:
    train_split, test_split = tiny_splits()
    model = Classifier(10, [0.5] * 3, [0.25] * 3)
    config = TrainConfig(epochs=2, batch_size=32, device="cpu", recipe="classic", workers=2)
    history = train(model, train_split, test_split, config)
    assert [m.epoch for m in history] == [1, 2]
    assert all(np.isfinite(m.train_loss) and m.images_per_second > 0 for m in history)
    assert not model.training  # handed back in eval mode, on the CPU
    assert next(model.parameters()).device.type == "cpu"
