"""fetch: turn a data source into the dataset format and log it as the run's `data/` artifact.

Artifacts: data/{train,test}_{images,labels}.npy, data/manifest.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile
from pathlib import Path

import mlflow

from cifar_pipeline.cli import run_main
from cifar_pipeline.dataset import write_dataset
from cifar_pipeline.sources import cifar10, digits
from cifar_pipeline.sources.errors import SourceError
from cifar_pipeline.tracking import FETCH, step_run

log = logging.getLogger(__name__)
SOURCES = ("cifar10", "digits")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", required=True)
    parser.add_argument("--data-url", default="")
    parser.add_argument("--data-checksum", default="")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.source not in SOURCES:
        raise SourceError(f"source={args.source!r}: expected one of {', '.join(SOURCES)}")
    with step_run(FETCH), tempfile.TemporaryDirectory(prefix="fetch-") as work:
        work_dir = Path(work)
        if args.source == "cifar10":
            train, test, names, source = cifar10.load(
                args.data_url or cifar10.OFFICIAL_URL,
                args.data_checksum or cifar10.OFFICIAL_CHECKSUM,
                work_dir,
            )
        else:
            train, test, names, source = digits.load(args.test_fraction, args.seed)
        out_dir = work_dir / "data"
        manifest = write_dataset(out_dir, train, test, names, source)
        # The data version: one digest over every array's digest, for filtering runs in the UI.
        digest = hashlib.sha256(json.dumps(manifest["sha256"], sort_keys=True).encode()).hexdigest()
        mlflow.set_tags({"data.source": args.source, "data.digest": digest})
        mlflow.log_params(
            {"num_train": len(train.labels), "num_test": len(test.labels), "num_classes": len(names)}
        )
        # Logged only once the whole dataset is written: a failure above leaves no artifact.
        mlflow.log_artifacts(str(out_dir), "data")
        log.info("logged %d train / %d test images (%s)", len(train.labels), len(test.labels), digest[:12])


if __name__ == "__main__":
    run_main(FETCH, main)
