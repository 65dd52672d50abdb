"""fetch: turn a data source into the dataset format, validate it, and log it, with pictures,
as the run's artifacts.

Artifacts: data/{train,test}_{images,labels}.npy, data/manifest.json, plots/samples.png,
plots/class_balance.png, validation/{statistics,schema,report}.json, validation/report.png.
Everything is written to a staging folder and logged in one call at the end, so a refused or
failed fetch leaves no data artifact behind (only its log). Data that fails a validation
check whose policy is "error" is refused the same way; its validation report is logged, so
the run shows why.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from cifar_pipeline import data_plots, names
from cifar_pipeline.cli import parse_bool, parse_int, run_main
from cifar_pipeline.dataset import Dataset, read_dataset, write_dataset
from cifar_pipeline.mlflow_datasets import CONTEXTS, SPLITS, split_dataset
from cifar_pipeline.sources.download import RetryPolicy
from cifar_pipeline.sources.request import FetchRequest
from cifar_pipeline.tracking import FETCH, download, find_reusable_run, step_run
from cifar_pipeline.validation import checks, report, statistics
from cifar_pipeline.validation.artifacts import FOLDER
from cifar_pipeline.validation.reference import ReferenceData, load_reference
from cifar_pipeline.validation.settings import Settings

log = logging.getLogger(__name__)

INPUT_KEY_TAG = names.DATA_INPUT_KEY_TAG
REUSED_TAG = names.DATA_REUSED_FROM_TAG


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", required=True)
    parser.add_argument("--data-url", default="")
    parser.add_argument("--data-checksum", default="")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--split-seed", type=parse_int, default=0, help="seed of the train/test split")
    parser.add_argument("--reuse", type=parse_bool, default=False)
    parser.add_argument("--download-attempts", type=parse_int, default=5)
    parser.add_argument("--reference-run-id", default="", help="fetch run to validate against; empty: none")
    for name, default in Settings().as_params().items():
        parser.add_argument(f"--{name.replace('_', '-')}", default=default, type=_setting)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _setting(value: str) -> str | float:
    """A validation setting as MLflow passes it: a policy name, or a number ("5", "0.05")."""
    try:
        return float(value)
    except ValueError:
        return value


def fetch_request(args: argparse.Namespace) -> FetchRequest:
    """What to fetch and how to split it; checked here, before any download."""
    return FetchRequest(
        source=args.source,
        data_url=args.data_url,
        data_checksum=args.data_checksum,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        retry=RetryPolicy(attempts=args.download_attempts),
    )


def validate(dataset: Dataset, settings: Settings, reference: ReferenceData, stage: Path) -> None:
    """Statistics, schema and every check into stage/validation; refuse the data on an error."""
    stats = statistics.compute(dataset.train, dataset.test, dataset.class_names, settings.blank_std)
    found = checks.validate(stats, settings, reference.statistics, reference.schema)
    content = report.write(
        stage / FOLDER, stats, checks.infer_schema(stats, settings), found,
        reference.statistics, reference.identity, reference.note,
    )  # fmt: skip
    mlflow.set_tags(report.tags(content, found))
    mlflow.log_metrics(report.metrics(found))
    log.info(
        "data validation %s, %d anomalies; reference: %s",
        content["status"],
        content["anomalies"],
        reference.note,
    )
    for check in found:
        if check.anomaly:
            log.warning("data validation: %s", check.line())
    if failed := checks.blocking(found):
        mlflow.log_artifacts(str(stage / FOLDER), FOLDER)  # why, for people; no data
        raise report.ValidationFailed(failed)


def fetch_fresh(request: FetchRequest, work_dir: Path, stage: Path) -> Dataset:
    train, test, names, source = request.load(work_dir)
    source["input_key"] = request.input_key(source["input_digest"])
    manifest = write_dataset(stage / "data", train, test, names, source)
    data_plots.save(data_plots.sample_grid(train, names), stage / "plots" / "samples.png")
    data_plots.save(
        data_plots.class_balance(names, manifest["class_counts"]), stage / "plots" / "class_balance.png"
    )
    return Dataset(train, test, names, manifest)


def reuse(run_id: str, stage: Path) -> Dataset:
    """Copy an earlier run's data and plots into this run, re-verifying the arrays on the way."""
    for folder in ("data", "plots"):
        download(run_id, folder, stage)
    return read_dataset(stage / "data")


def log_dataset(dataset: Dataset, source_name: str) -> None:
    manifest: dict[str, Any] = dataset.manifest
    mlflow.set_tags(
        {
            "data.source": source_name,
            names.DATA_DIGEST_TAG: manifest["digest"],
            "data.input_digest": manifest["source"]["input_digest"],
            INPUT_KEY_TAG: manifest["source"]["input_key"],
        }
    )
    mlflow.log_params(
        {
            "num_train": len(dataset.train.labels),
            "num_test": len(dataset.test.labels),
            "num_classes": len(dataset.class_names),
            "dataset_bytes": manifest["bytes"],
            "data_digest": manifest["digest"][:12],
        }
    )
    # MLflow's own dataset tracking: the UI's "Datasets" column and filter show name and digest.
    for split in SPLITS:
        mlflow.log_input(split_dataset(dataset, split), context=CONTEXTS[split])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = Settings.parse(vars(args), prefix="")  # names as MLproject has them
    with step_run(FETCH) as run, tempfile.TemporaryDirectory(prefix="fetch-") as work:
        reference = load_reference(args.reference_run_id, MlflowClient())  # before the download: fails fast
        request = fetch_request(args)
        work_dir, stage = Path(work), Path(work) / "stage"
        earlier = None
        if args.reuse:
            digest = request.known_input_digest()
            if digest is None:
                log.warning(
                    "reuse=true, but %s has no data_checksum: fetching to learn its content", args.data_url
                )
            else:
                earlier = find_reusable_run(FETCH, INPUT_KEY_TAG, request.input_key(digest), run.info.run_id)
        if earlier is not None:
            log.info(
                "already have it: run %s fetched the same input; reusing its artifacts", earlier.info.run_id
            )
            dataset = reuse(earlier.info.run_id, stage)
            mlflow.set_tag(REUSED_TAG, earlier.info.run_id)
        else:
            dataset = fetch_fresh(request, work_dir, stage)
            shutil.rmtree(work_dir / "extracted", ignore_errors=True)
        validate(dataset, settings, reference, stage)
        log_dataset(dataset, args.source)
        mlflow.log_artifacts(str(stage))  # the only artifact call: nothing partial is ever logged
        log.info("logged %d train / %d test images, %d classes, digest %s",
                 len(dataset.train.labels), len(dataset.test.labels), len(dataset.class_names),
                 dataset.manifest["digest"][:12])  # fmt: skip


if __name__ == "__main__":
    run_main(FETCH, main)
