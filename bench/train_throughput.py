"""Training throughput of the fast recipe against the classic DataLoader recipe, same run, same device.

    python -m bench.train_throughput                      # auto device, sizes picked for it
    python -m bench.train_throughput --device cuda --images 50000 --batch-size 512 --compile

Both recipes train the same VGG11-BN on the same synthetic CIFAR-shaped data (random
uint8 images, 10 classes) through `cifar_pipeline.training.train`; images/s counts the
training passes only (evaluation excluded), as the median over the epochs after warm-up.
Prints a table and the ratio of each variant to the classic baseline, plus peak memory:
allocated CUDA memory on a GPU, the process's peak RSS on a CPU (a high-water mark, so it
only grows from one row to the next).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cifar_pipeline.dataset import Split
from cifar_pipeline.model import Classifier
from cifar_pipeline.training import TrainConfig, resolve_device, train


@dataclass
class Row:
    variant: str
    images_per_second: float
    epoch_seconds: float
    peak_memory_mb: float
    ratio_to_classic: float = 0.0


def synthetic(count: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    return Split(rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, count))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(variant: str, config: TrainConfig, data: Split, held_out: Split, warmup: int) -> Row:
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(config.seed)
    model = Classifier(10, [0.5] * 3, [0.25] * 3)
    history = train(model, data, held_out, config)
    timed = history[warmup:]
    return Row(
        variant=variant,
        images_per_second=statistics.median(m.images_per_second for m in timed),
        epoch_seconds=statistics.median(m.seconds for m in timed),
        peak_memory_mb=peak_memory_mb(device),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, help="training images (default 50000 on CUDA, 4096 on CPU)")
    parser.add_argument("--batch-size", type=int, help="default 512 on CUDA, 128 on CPU")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per variant, warm-up included")
    parser.add_argument("--warmup", type=int, default=1, help="epochs left out of the median")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="classic recipe")
    parser.add_argument(
        "--compile", action="store_true", help="also measure the fast recipe with torch.compile"
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if args.epochs <= args.warmup:
        parser.error(f"--epochs={args.epochs} must exceed --warmup={args.warmup}")

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    images = args.images or (50_000 if cuda else 4096)
    batch_size = args.batch_size or (512 if cuda else 128)
    data, held_out = synthetic(images, 0), synthetic(batch_size, 1)
    base = TrainConfig(
        epochs=args.epochs, batch_size=batch_size, lr=0.05, device=str(device), workers=args.workers
    )
    variants = {
        "classic (DataLoader, CPU augmentation, fp32)": replace(
            base, recipe="classic", bf16=False, channels_last=False
        ),
        "fast (on-device data + augmentation" + (", bf16" if cuda else "") + ", channels_last)": base,
    }
    if args.compile:
        variants["fast + torch.compile"] = replace(base, compile=True)

    rows = [measure(name, config, data, held_out, args.warmup) for name, config in variants.items()]
    for row in rows:
        row.ratio_to_classic = row.images_per_second / rows[0].images_per_second

    name = (
        torch.cuda.get_device_name(device) if cuda else f"{platform.processor() or 'CPU'} x{os.cpu_count()}"
    )
    print(f"device: {name}; torch {torch.__version__}; {images} images, batch {batch_size}, "  # noqa: T201
          f"median of {args.epochs - args.warmup} epochs after {args.warmup} warm-up")  # fmt: skip
    print("| variant | images/s | s/epoch | peak memory (MB) | ratio to classic |\n|---|---|---|---|---|")  # noqa: T201
    for row in rows:
        print(f"| {row.variant} | {row.images_per_second:,.0f} | {row.epoch_seconds:.2f} | "  # noqa: T201
              f"{row.peak_memory_mb:,.0f} | {row.ratio_to_classic:.2f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
