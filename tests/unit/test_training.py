"""The training loop's parts on CPU: augmentation semantics, rank slices, schedules, bad config
(whole epochs, for determinism and both recipes: tests/integration/test_training.py)."""

from itertools import pairwise

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cifar_pipeline.distributed import World
from cifar_pipeline.model import Classifier
from cifar_pipeline.training import (
    CROP_PADDING,
    CpuAugmentedImages,
    DeviceError,
    TrainConfig,
    augment,
    device_batches,
    lr_schedule,
    resolve_device,
)
from tests.helpers import tiny_splits


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
        ({"schedule": "step"}, "schedule='step': expected one of onecycle, cosine"),
        ({"arch": "resnet18"}, "arch='resnet18': expected one of vgg11, vgg13, vgg16, vgg19"),
        ({"batch_size": 30, "nproc": 4}, "batch_size=30 with nproc=4"),
        ({"warmup_fraction": 1.0}, "warmup_fraction=1.0"),
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


def test_ranks_train_disjoint_slices_that_make_up_the_single_process_batch() -> None:
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8))
    labels = torch.arange(40)

    def batches(world: World) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(device_batches(images, labels, 8, torch.Generator().manual_seed(3), world))

    single = batches(World())
    ranks = [batches(World(rank=r, local_rank=r, size=2)) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 5
    for step, (x, y) in enumerate(single):
        (x0, y0), (x1, y1) = ranks[0][step], ranks[1][step]
        assert len(y0) == len(y1) == 4
        assert not set(y0.tolist()) & set(y1.tolist())  # each image trained by one rank only
        assert torch.equal(torch.cat([x0, x1]), x)
        assert torch.equal(torch.cat([y0, y1]), y)


def learning_rates(**overrides: object) -> list[float]:
    config = TrainConfig(**overrides)  # type: ignore[arg-type]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.peak_lr)
    schedule = lr_schedule(optimizer, config, total_steps=100)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_peak_learning_rate_scales_with_the_batch(schedule: str) -> None:
    base = max(learning_rates(schedule=schedule, lr=0.1, batch_size=64, base_batch_size=64))
    doubled = max(learning_rates(schedule=schedule, lr=0.1, batch_size=128, base_batch_size=64))
    assert base == pytest.approx(0.1, rel=1e-3)
    assert doubled == pytest.approx(0.2, rel=1e-3)


def test_cosine_schedule_warms_up_then_decays_to_zero() -> None:
    rates = learning_rates(schedule="cosine", lr=0.1, warmup_fraction=0.1)
    peak = rates.index(max(rates))
    assert peak == 9  # the tenth step ends the warm-up
    assert all(a < b for a, b in pairwise(rates[: peak + 1]))
    assert all(a >= b for a, b in pairwise(rates[peak:]))
    assert rates[-1] < 0.001 * max(rates)


def test_model_group_changes_the_network() -> None:
    plain = Classifier(10, [0.5] * 3, [0.25] * 3, arch="vgg11", batch_norm=False)
    deeper = Classifier(10, [0.5] * 3, [0.25] * 3, arch="vgg13")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, torch.nn.Conv2d) for m in deeper.modules()) == 10
