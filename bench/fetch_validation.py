"""What data validation adds to the fetch step, on a CIFAR-10-sized tarball (60,000 images).

    python -m bench.fetch_validation                 # generates the tarball in a temp folder
    python -m bench.fetch_validation --tarball /tmp/cifar-10-python.tar.gz --repeat 3

Runs the fetch step in-process (`steps.fetch.step.main`: verify, extract, convert, write,
plot, log the artifacts) against a throwaway local MLflow store, in the same session:
  without     validation switched off (the step's `validate` replaced by a no-op)
  with        statistics, schema and checks, no reference (a first fetch)
  with ref    the same, against the previous run as reference (drift checks too)
and prints each wall time (the best of --repeat runs) and its ratio to `without`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import mlflow
import numpy as np

from cifar_pipeline.dataset import Split
from cifar_pipeline.sources import cifar10
from steps.fetch import step

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def generate(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)

    def split(count: int) -> Split:
        return Split(rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), np.arange(count) % 10)

    cifar10.write_archive(path, split(50_000), split(10_000), NAMES)


def best_of(repeat: int, run: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tarball", type=Path, help="a cifar-10-python.tar.gz (default: generate one)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as work:
        os.chdir(work)
        mlflow.set_tracking_uri(f"sqlite:///{Path(work) / 'mlflow.db'}")
        tarball = args.tarball or Path(work) / "cifar-10-python.tar.gz"
        if args.tarball is None:
            generate(tarball)
        checksum = "md5:" + hashlib.md5(tarball.read_bytes()).hexdigest()
        argv = ["--source", "cifar10", "--data-url", str(tarball), "--data-checksum", checksum]

        def last_run_id() -> str:
            return str(
                mlflow.search_runs(order_by=["attributes.start_time DESC"], max_results=1)["run_id"][0]
            )

        with mock.patch.object(step, "validate", return_value=None):
            without = best_of(args.repeat, lambda: step.main(argv))
        with_validation = best_of(args.repeat, lambda: step.main(argv))
        reference = last_run_id()
        with_reference = best_of(args.repeat, lambda: step.main([*argv, "--reference-run-id", reference]))
    print(f"fetch step on {tarball.name} (60,000 images), best of {args.repeat}:")  # noqa: T201
    for label, seconds in (("without validation", without), ("with validation", with_validation),
                           ("with validation + reference", with_reference)):  # fmt: skip
        print(f"  {label:<30}{seconds:8.2f} s   ratio {seconds / without:.2f}")  # noqa: T201


if __name__ == "__main__":
    main()
