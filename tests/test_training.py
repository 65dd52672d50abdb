"""The training loop on CPU: determinism, both recipes, augmentation semantics, bad config."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cifar_pipeline.dataset import Split
from cifar_pipeline.model import Classifier
from cifar_pipeline.training import (
    CROP_PADDING,
    CpuAugmentedImages,
    DeviceError,
    TrainConfig,
    augment,
    resolve_device,
    train,
)


def tiny_splits(count: int = 96, seed: int = 0) -> tuple[Split, Split]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, count)
    return Split(images, labels), Split(images[:32], labels[:32])


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


def _is_crop_or_flipped_crop(out: torch.Tensor, padded: torch.Tensor) -> bool:
    for dy in range(2 * CROP_PADDING + 1):
        for dx in range(2 * CROP_PADDING + 1):
            window = padded[dy : dy + 32, dx : dx + 32]
            if torch.equal(out, window) or torch.equal(out, window.flip(1)):
                return True
    return False


def test_device_augmentation_is_a_padded_crop_with_optional_flip() -> None:
    images = torch.from_numpy(np.random.default_rng(0).integers(1, 256, (16, 32, 32, 3), dtype=np.uint8))
    out = augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    assert out.dtype == torch.uint8
    padded = F.pad(images, (0, 0, CROP_PADDING, CROP_PADDING, CROP_PADDING, CROP_PADDING))
    assert all(_is_crop_or_flipped_crop(out[i], padded[i]) for i in range(len(images)))
    assert not torch.equal(out, images)  # 16 images all left untouched: not augmentation


def test_cpu_augmentation_matches_the_device_semantics() -> None:
    train_split, _ = tiny_splits(8)
    dataset = CpuAugmentedImages(train_split)
    torch.manual_seed(0)
    for i in range(len(dataset)):
        image, label = dataset[i]
        original = torch.from_numpy(train_split.images[i])
        padded = F.pad(original, (0, 0, CROP_PADDING, CROP_PADDING, CROP_PADDING, CROP_PADDING))
        assert image.shape == (32, 32, 3)
        assert _is_crop_or_flipped_crop(image, padded)
        assert int(label) == train_split.labels[i]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"recipe": "turbo"}, "recipe='turbo': expected one of fast, classic"),
        ({"epochs": 0}, "epochs=0: expected at least 1"),
        ({"batch_size": 0}, "batch_size=0: expected at least 1"),
    ],
)
def test_bad_config_is_refused_naming_the_key(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides)  # type: ignore[arg-type]


def test_cuda_without_a_gpu_is_refused_and_auto_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"device='cuda'.*device=auto"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(DeviceError, match="device='tpu'"):
        resolve_device("tpu")
