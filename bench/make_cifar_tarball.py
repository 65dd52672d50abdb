"""Write a synthetic tarball in the official cifar-10-python layout, for timing the fetch step.

    python -m bench.make_cifar_tarball /tmp/cifar-10-python.tar.gz --train 50000 --test 10000

Prints the path, size and the `data_checksum` to pass to fetch. Random pixels compress
worse than real photos, so the file is a little larger than the official 163 MB one.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from cifar_pipeline.dataset import Split
from cifar_pipeline.sources import cifar10


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", type=Path)
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    def split(count: int) -> Split:
        return Split(rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, count))

    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    cifar10.write_archive(args.path, split(args.train), split(args.test), names)
    md5 = hashlib.md5(args.path.read_bytes()).hexdigest()
    print(f"{args.path}  {args.path.stat().st_size / 1e6:.1f} MB  data_checksum=md5:{md5}")  # noqa: T201


if __name__ == "__main__":
    main()
