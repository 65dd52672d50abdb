"""The training loop: data on the device, augmentation on the device, one readable loop.

The whole data set (uint8) is moved to the device once; each batch is cropped and
flipped there, so no CPU DataLoader sits on the hot path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cifar_pipeline.dataset import Split

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
CROP_PADDING = 4


class DeviceError(RuntimeError):
    """The requested device cannot be used here."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    seed: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float
    images_per_second: float


def resolve_device(requested: str) -> torch.device:
    if requested not in DEVICES:
        raise DeviceError(f"device={requested!r}: expected one of {', '.join(DEVICES)}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "device='cuda' but no CUDA device is visible to torch (use device=auto to fall back to the CPU)"
        )
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding 4) and horizontal flip, per image, on uint8 NHWC."""
    n, height, width, _ = images.shape
    device = images.device
    padded = F.pad(images, (0, 0, CROP_PADDING, CROP_PADDING, CROP_PADDING, CROP_PADDING))
    span = 2 * CROP_PADDING + 1
    dy = torch.randint(0, span, (n, 1), device=device, generator=generator)
    dx = torch.randint(0, span, (n, 1), device=device, generator=generator)
    rows = dy + torch.arange(height, device=device)
    cols = dx + torch.arange(width, device=device)
    flip = torch.rand(n, 1, device=device, generator=generator) < 0.5
    cols = torch.where(flip, cols.flip(1), cols)
    batch_index = torch.arange(n, device=device)[:, None, None]
    return padded[batch_index, rows[:, :, None], cols[:, None, :]]


@torch.no_grad()
def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512
) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy."""
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size]).float()
        target = labels[start : start + batch_size]
        total_loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += int((logits.argmax(1) == target).sum().item())
    return total_loss / len(images), correct / len(images)


def train(
    model: nn.Module,
    train_split: Split,
    test_split: Split,
    config: TrainConfig,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
) -> list[EpochMetrics]:
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)

    model.to(device)
    train_x = torch.from_numpy(train_split.images).to(device)
    train_y = torch.from_numpy(train_split.labels).to(device)
    test_x = torch.from_numpy(test_split.images).to(device)
    test_y = torch.from_numpy(test_split.labels).to(device)

    steps_per_epoch = max(1, len(train_x) // config.batch_size)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=True,
        weight_decay=config.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    log.info("training on %s: %d images, %d steps/epoch", device, len(train_x), steps_per_epoch)

    history: list[EpochMetrics] = []
    for epoch in range(1, config.epochs + 1):
        model.train()  # evaluate() leaves the model in eval mode
        started = time.perf_counter()
        order = torch.randperm(len(train_x), device=device, generator=generator)
        loss_sum, correct, seen = 0.0, 0, 0
        # Drop the ragged last batch: a batch of one breaks batch norm.
        for step in range(steps_per_epoch):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            images = augment(train_x[index], generator)
            target = train_y[index]
            logits = model(images)
            loss = criterion(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(index)
            correct += int((logits.argmax(1) == target).sum().item())
            seen += len(index)
        seconds = time.perf_counter() - started
        test_loss, test_accuracy = evaluate(model, test_x, test_y)
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=loss_sum / seen,
            train_accuracy=correct / seen,
            test_loss=test_loss,
            test_accuracy=test_accuracy,
            seconds=seconds,
            images_per_second=seen / seconds,
        )
        log.info(
            "epoch %d/%d: loss %.4f, train acc %.3f, test acc %.3f, %.0f img/s",
            epoch,
            config.epochs,
            metrics.train_loss,
            metrics.train_accuracy,
            metrics.test_accuracy,
            metrics.images_per_second,
        )
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
    model.cpu().eval()
    return history


def reference_indices(num_test: int, size: int) -> np.ndarray:
    """A fixed, evenly spaced held-out subset: the same images for training and serving."""
    size = min(size, num_test)
    return np.linspace(0, num_test - 1, size).round().astype(np.int64)
