"""The training loop: one readable loop, fed by one of two recipes.

- `fast` (default): the whole data set (uint8) is moved to the device once; each batch
  is cropped and flipped there, so no CPU DataLoader sits on the hot path. On CUDA the
  forward pass runs under bf16 autocast; the model is channels_last; `compile` wraps
  it in `torch.compile`.
- `classic`: the conventional recipe, kept as the measured baseline: a DataLoader with
  worker processes doing per-sample crop+flip on the CPU, batches copied to the device.

Both feed the same optimiser step, schedule and metrics, so the recipes differ only in
how batches are made and in the numeric format.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from cifar_pipeline.dataset import Split

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
RECIPES = ("fast", "classic")
CROP_PADDING = 4
Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]
Checkpoint = dict[str, Any]
# Settings that change how fast training runs, not what it computes: a resumed run may
# change them; every other TrainConfig field must match the checkpoint.
RUNTIME_FIELDS = ("device", "workers", "compile")


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
    recipe: str = "fast"  # fast | classic (see the module docstring)
    channels_last: bool = True
    bf16: bool = True  # bf16 autocast on CUDA; the CPU always trains in fp32
    compile: bool = False  # torch.compile the model (fast recipe)
    workers: int = 4  # DataLoader worker processes (classic recipe)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe={self.recipe!r}: expected one of {', '.join(RECIPES)}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: expected at least 1")


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


def device_batches(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Batches:
    """Fast recipe: shuffle, slice and augment on the device; the ragged last batch is dropped."""
    order = torch.randperm(len(images), device=images.device, generator=generator)
    for step in range(len(images) // batch_size):
        index = order[step * batch_size : (step + 1) * batch_size]
        yield augment(images[index], generator), labels[index]


class CpuAugmentedImages(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Classic recipe: one image at a time, cropped and flipped by torchvision on the CPU."""

    def __init__(self, split: Split) -> None:
        self.images = torch.from_numpy(split.images).permute(0, 3, 1, 2)  # CHW views for torchvision
        self.labels = torch.from_numpy(split.labels)
        self.transform = v2.Compose([v2.RandomCrop(32, padding=CROP_PADDING), v2.RandomHorizontalFlip()])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]).permute(1, 2, 0), self.labels[index]


def loader_batches(loader: DataLoader[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> Batches:
    for images, labels in loader:
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


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
    on_epoch: Callable[[EpochMetrics, Checkpoint], None] | None = None,
    resume_from: Checkpoint | None = None,
) -> list[EpochMetrics]:
    """Train `model` for `config.epochs`; `on_epoch` gets each epoch's metrics and a checkpoint.

    With `resume_from` (a checkpoint from `on_epoch`), training continues after its
    epoch with the model, optimiser, schedule and every random state restored, so the
    result equals an uninterrupted run's.
    """
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)

    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if config.compile else model
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=config.bf16 and device.type == "cuda"
    )
    test_x = torch.from_numpy(test_split.images).to(device)
    test_y = torch.from_numpy(test_split.labels).to(device)
    loader_generator = torch.Generator().manual_seed(config.seed)  # the classic recipe's shuffle
    if config.recipe == "fast":
        train_x = torch.from_numpy(train_split.images).to(device)
        train_y = torch.from_numpy(train_split.labels).to(device)
        batches: Callable[[], Batches] = partial(
            device_batches, train_x, train_y, config.batch_size, generator
        )
    else:
        loader = DataLoader(
            CpuAugmentedImages(train_split),
            batch_size=config.batch_size,
            shuffle=True,
            drop_last=True,  # a batch of one breaks batch norm
            num_workers=config.workers,
            persistent_workers=config.workers > 0,
            # Forking a process whose OpenMP/CUDA/MLflow threads already run can deadlock
            # the workers; spawned workers start clean.
            multiprocessing_context="spawn" if config.workers > 0 else None,
            pin_memory=device.type == "cuda",
            generator=loader_generator,
        )
        batches = partial(loader_batches, loader, device)

    steps_per_epoch = max(1, len(train_split.labels) // config.batch_size)
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
    log.info("training on %s (%s recipe): %d images, %d steps/epoch", device, config.recipe,
             len(train_split.labels), steps_per_epoch)  # fmt: skip

    def checkpoint(epoch: int) -> Checkpoint:
        return {
            "epoch": epoch,
            "config": asdict(config),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "generator": generator.get_state(),
                "loader": loader_generator.get_state() if config.recipe == "classic" else None,
                "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            },
        }

    first_epoch = 1
    if resume_from is not None:
        model.load_state_dict(resume_from["model"])
        optimizer.load_state_dict(resume_from["optimizer"])
        schedule.load_state_dict(resume_from["schedule"])
        rng = resume_from["rng"]
        torch.set_rng_state(rng["torch"])
        generator.set_state(rng["generator"])
        if rng["loader"] is not None and config.recipe == "classic":
            loader_generator.set_state(rng["loader"])
        if rng["cuda"] is not None and device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        first_epoch = int(resume_from["epoch"]) + 1
        log.info("resuming after epoch %d of %d", first_epoch - 1, config.epochs)

    history: list[EpochMetrics] = []
    for epoch in range(first_epoch, config.epochs + 1):
        model.train()  # evaluate() leaves the model in eval mode
        started = time.perf_counter()
        # Sums stay on the device: a .item() per step would stall the GPU every step.
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for images, target in batches():
            with autocast:
                logits = step_model(images)
                loss = criterion(logits.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach() * len(target)
            correct += (logits.argmax(1) == target).sum()
            seen += len(target)
        train_loss, train_correct = loss_sum.item(), int(correct.item())  # waits for the device
        seconds = time.perf_counter() - started
        with autocast:
            test_loss, test_accuracy = evaluate(model, test_x, test_y)
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=train_loss / seen,
            train_accuracy=train_correct / seen,
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
            on_epoch(metrics, checkpoint(epoch))
    model.cpu().eval()
    model.to(memory_format=torch.contiguous_format)
    return history


def config_differences(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """`key: saved -> given` for every non-runtime field where a checkpoint and a config differ."""
    given = asdict(config)
    keys = sorted((set(saved) | set(given)) - set(RUNTIME_FIELDS))
    return [f"{k}: {saved.get(k)!r} -> {given.get(k)!r}" for k in keys if saved.get(k) != given.get(k)]


def reference_indices(num_test: int, size: int) -> np.ndarray:
    """A fixed, evenly spaced held-out subset: the same images for training and serving."""
    size = min(size, num_test)
    return np.linspace(0, num_test - 1, size).round().astype(np.int64)
