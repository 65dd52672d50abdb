"""The training loop: one readable loop, fed by one of two recipes.

- `fast` (default): the whole data set (uint8) is moved to the device once; each batch
  is cropped and flipped there, so no CPU DataLoader sits on the hot path. On CUDA the
  forward pass runs under bf16 autocast; the model is channels_last; `compile` wraps
  it in `torch.compile`.
- `classic`: the conventional recipe, kept as the measured baseline: a DataLoader with
  worker processes doing per-sample crop+flip on the CPU, batches copied to the device.

Both feed the same optimiser step, schedule and metrics, so the recipes differ only in
how batches are made and in the numeric format.

`batch_size` is the global batch. Under torchrun each rank trains its slice of every
global batch (the fast recipe draws the permutation and the crop/flip offsets for the
whole batch on every rank, so the union of the ranks' slices is exactly the batch one
process would train on) and DDP averages the gradients.

The learning rate follows the batch size (linear scaling, Goyal et al. 2017): `lr` is
the peak rate for a batch of `base_batch_size`, and the run uses
`lr * batch_size / base_batch_size`. The schedule is one-cycle or linear warm-up +
cosine decay, both over `warmup_fraction` of the steps.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.transforms import v2

from cifar_pipeline.dataset import Split
from cifar_pipeline.distributed import SINGLE, World, all_sum, device_for, replica_divergence
from cifar_pipeline.model import VGG_CONFIGS

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
RECIPES = ("fast", "classic")
SCHEDULES = ("onecycle", "cosine")
CROP_PADDING = 4
Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]
Checkpoint = dict[str, Any]
# Settings that change how fast training runs, not what it computes: a resumed run may
# change them; every other TrainConfig field must match the checkpoint.
RUNTIME_FIELDS = ("device", "workers", "compile", "nproc")
REPLICA_TOLERANCE = 1e-6


class DeviceError(RuntimeError):
    """The requested device cannot be used here."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a train run is configured with: the Hydra groups model/, optim/ and train/."""

    # model/
    arch: str = "vgg11"
    batch_norm: bool = True
    # optim/
    lr: float = 0.01  # peak learning rate for a batch of base_batch_size
    base_batch_size: int = 64
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle | cosine
    warmup_fraction: float = 0.3  # of all steps: rising to the peak rate
    # train/
    epochs: int = 10
    batch_size: int = 64  # global: split across the processes of a torchrun launch
    label_smoothing: float = 0.1
    seed: int = 0
    device: str = "auto"
    recipe: str = "fast"  # fast | classic (see the module docstring)
    channels_last: bool = True
    bf16: bool = True  # bf16 autocast on CUDA; the CPU always trains in fp32
    compile: bool = False  # torch.compile the model (fast recipe)
    workers: int = 4  # DataLoader worker processes (classic recipe)
    nproc: int = 1  # processes (one per GPU) launched by torchrun

    def __post_init__(self) -> None:
        for name, choices in (("recipe", RECIPES), ("schedule", SCHEDULES), ("arch", tuple(VGG_CONFIGS))):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected one of {', '.join(choices)}")
        for name in ("epochs", "batch_size", "base_batch_size", "nproc"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: expected at least 1")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction={self.warmup_fraction}: expected 0 <= value < 1")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr}: expected a positive learning rate")
        if self.batch_size % self.nproc:
            raise ValueError(
                f"batch_size={self.batch_size} with nproc={self.nproc}: "
                "the global batch must divide evenly between the processes"
            )

    @property
    def peak_lr(self) -> float:
        """The linear scaling rule: the rate grows with the batch."""
        return self.lr * self.batch_size / self.base_batch_size


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


CropFlip = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def crop_flip_offsets(n: int, device: torch.device, generator: torch.Generator) -> CropFlip:
    """Per image: crop offsets (dy, dx) in the padded image, and whether to flip."""
    span = 2 * CROP_PADDING + 1
    dy = torch.randint(0, span, (n, 1), device=device, generator=generator)
    dx = torch.randint(0, span, (n, 1), device=device, generator=generator)
    flip = torch.rand(n, 1, device=device, generator=generator) < 0.5
    return dy, dx, flip


def crop_flip(images: torch.Tensor, offsets: CropFlip) -> torch.Tensor:
    """Random crop (zero padding 4) and horizontal flip, per image, on uint8 NHWC, as one gather."""
    dy, dx, flip = offsets
    n, height, width, _ = images.shape
    device = images.device
    padded = F.pad(images, (0, 0, CROP_PADDING, CROP_PADDING, CROP_PADDING, CROP_PADDING))
    rows = dy + torch.arange(height, device=device)
    cols = dx + torch.arange(width, device=device)
    cols = torch.where(flip, cols.flip(1), cols)
    batch_index = torch.arange(n, device=device)[:, None, None]
    return padded[batch_index, rows[:, :, None], cols[:, None, :]]


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return crop_flip(images, crop_flip_offsets(len(images), images.device, generator))


def device_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    world: World = SINGLE,
) -> Batches:
    """Fast recipe: shuffle, slice and augment on the device; the ragged last batch is dropped.

    Every rank draws the same permutation and offsets for the whole global batch (the
    generators share a seed) and keeps its own slice.
    """
    order = torch.randperm(len(images), device=images.device, generator=generator)
    mine = world.shard(batch_size)
    for step in range(len(images) // batch_size):
        index = order[step * batch_size : (step + 1) * batch_size]
        dy, dx, flip = crop_flip_offsets(batch_size, images.device, generator)
        yield crop_flip(images[index[mine]], (dy[mine], dx[mine], flip[mine])), labels[index[mine]]


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
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, world: World = SINGLE, batch_size: int = 512
) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy; under torchrun each rank scores every size-th image."""
    model.eval()
    images, labels = images[world.rank :: world.size], labels[world.rank :: world.size]
    sums = torch.zeros(3, device=images.device, dtype=torch.float64)  # loss, correct, count
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size]).float()
        target = labels[start : start + batch_size]
        sums[0] += F.cross_entropy(logits, target, reduction="sum")
        sums[1] += (logits.argmax(1) == target).sum()
        sums[2] += len(target)
    loss, correct, count = all_sum(sums, world).tolist()
    return loss / count, correct / count


def lr_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "onecycle":
        warmup = config.warmup_fraction
        if abs(warmup * total_steps - 1) < 1e-9:  # a one-step warm-up makes OneCycleLR divide by zero
            warmup = 0.5 / total_steps
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.peak_lr, total_steps=total_steps, pct_start=warmup
        )
    warmup = int(config.warmup_fraction * total_steps)

    def factor(step: int) -> float:  # linear warm-up to the peak, then cosine to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(
    model: nn.Module,
    train_split: Split,
    test_split: Split,
    config: TrainConfig,
    on_epoch: Callable[[EpochMetrics, Checkpoint], None] | None = None,
    resume_from: Checkpoint | None = None,
    world: World = SINGLE,
) -> list[EpochMetrics]:
    """Train `model` for `config.epochs`; `on_epoch` gets each epoch's metrics and a checkpoint.

    With `resume_from` (a checkpoint from `on_epoch`), training continues after its
    epoch with the model, optimiser, schedule and every random state restored, so the
    result equals an uninterrupted run's. Under torchrun (`world`, process group
    initialised), every rank calls this; metrics are summed over the ranks.
    """
    device = device_for(world, resolve_device(config.device))
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)  # the same on every rank
    per_rank_batch = config.batch_size // world.size

    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    ddp_model: nn.Module = model
    if world.size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        ddp_model = DistributedDataParallel(model, device_ids=device_ids)
    step_model = torch.compile(ddp_model) if config.compile else ddp_model
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=config.bf16 and device.type == "cuda"
    )
    test_x = torch.from_numpy(test_split.images).to(device)
    test_y = torch.from_numpy(test_split.labels).to(device)
    sampler: DistributedSampler[Any] | None = None
    if config.recipe == "fast":
        train_x = torch.from_numpy(train_split.images).to(device)
        train_y = torch.from_numpy(train_split.labels).to(device)
        batches: Callable[[], Batches] = partial(
            device_batches, train_x, train_y, config.batch_size, generator, world
        )
    else:
        dataset = CpuAugmentedImages(train_split)
        # Shuffles by (seed, epoch) on every rank alike, and hands each rank its share;
        # also with one process, so a resumed epoch sees the same order.
        sampler = DistributedSampler(
            dataset, num_replicas=world.size, rank=world.rank, shuffle=True, seed=config.seed, drop_last=True
        )
        loader = DataLoader(
            dataset,
            batch_size=per_rank_batch,
            sampler=sampler,
            drop_last=True,  # a batch of one breaks batch norm
            num_workers=config.workers,
            persistent_workers=config.workers > 0,
            # Forking a process whose OpenMP/CUDA/MLflow threads already run can deadlock
            # the workers; spawned workers start clean.
            multiprocessing_context="spawn" if config.workers > 0 else None,
            pin_memory=device.type == "cuda",
        )
        batches = partial(loader_batches, loader, device)

    steps_per_epoch = max(1, len(train_split.labels) // config.batch_size)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.peak_lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )
    schedule = lr_schedule(optimizer, config, config.epochs * steps_per_epoch)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    log.info("training on %s (%s recipe, %d process(es)): %d images, %d steps/epoch, peak lr %.4g",
             device, config.recipe, world.size, len(train_split.labels), steps_per_epoch,
             config.peak_lr)  # fmt: skip

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
        if rng["cuda"] is not None and device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        first_epoch = int(resume_from["epoch"]) + 1
        log.info("resuming after epoch %d of %d", first_epoch - 1, config.epochs)

    history: list[EpochMetrics] = []
    for epoch in range(first_epoch, config.epochs + 1):
        ddp_model.train()  # evaluate() leaves the model in eval mode
        if sampler is not None:
            sampler.set_epoch(epoch)
        started = time.perf_counter()
        # Sums stay on the device: a .item() per step would stall the GPU every step.
        sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss, correct, count
        for images, target in batches():
            with autocast:
                logits = step_model(images)
                loss = criterion(logits.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            sums[0] += loss.detach() * len(target)
            sums[1] += (logits.argmax(1) == target).sum()
            sums[2] += len(target)
        train_loss, train_correct, seen = all_sum(sums, world).tolist()  # waits for the device
        seconds = time.perf_counter() - started
        with autocast:
            test_loss, test_accuracy = evaluate(model, test_x, test_y, world)
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
    if world.size > 1:  # DDP's promise, checked: a wrapping mistake would train N different models
        divergence = replica_divergence(model, world)
        if divergence > REPLICA_TOLERANCE:
            raise RuntimeError(f"the {world.size} replicas' parameters differ by up to {divergence:.3g}")
        log.info("the %d replicas agree: max parameter difference %.3g", world.size, divergence)
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
