"""train: VGG11-BN on the fetch run's data; export ONNX; record reference predictions.

Artifacts: onnx/model.onnx (uint8 NHWC input, normalisation inside the graph),
onnx/metadata.json, reference/predictions.npz (held-out indices + PyTorch logits,
which the system test compares the served model against), and an MLflow ONNX model
under `model` with its signature and input example.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import onnx
from mlflow.models import infer_signature

from cifar_pipeline.cli import parse_bool, parse_int, run_main
from cifar_pipeline.dataset import read_dataset
from cifar_pipeline.model import Classifier, parameter_count
from cifar_pipeline.onnx_export import export_onnx, onnx_logits, torch_logits
from cifar_pipeline.tracking import FETCH, TRAIN, download, require_step_run, step_run
from cifar_pipeline.training import EpochMetrics, TrainConfig, reference_indices, resolve_device, train

log = logging.getLogger(__name__)


class ParityError(RuntimeError):
    """The exported ONNX model does not reproduce the PyTorch model."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-run-id", required=True)
    parser.add_argument("--epochs", type=parse_int, default=TrainConfig.epochs)
    parser.add_argument("--batch-size", type=parse_int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--momentum", type=float, default=TrainConfig.momentum)
    parser.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay)
    parser.add_argument("--label-smoothing", type=float, default=TrainConfig.label_smoothing)
    parser.add_argument("--seed", type=parse_int, default=TrainConfig.seed)
    parser.add_argument("--device", default=TrainConfig.device)
    parser.add_argument("--recipe", default=TrainConfig.recipe)
    parser.add_argument("--channels-last", type=parse_bool, default=TrainConfig.channels_last)
    parser.add_argument("--bf16", type=parse_bool, default=TrainConfig.bf16)
    parser.add_argument("--compile", type=parse_bool, default=TrainConfig.compile)
    parser.add_argument("--workers", type=parse_int, default=TrainConfig.workers)
    parser.add_argument("--reference-size", type=parse_int, default=256)
    parser.add_argument("--parity-tolerance", type=float, default=1e-3)
    return parser.parse_args(argv)


def log_epoch(metrics: EpochMetrics) -> None:
    mlflow.log_metrics(
        {
            "train_loss": metrics.train_loss,
            "train_accuracy": metrics.train_accuracy,
            "test_loss": metrics.test_loss,
            "test_accuracy": metrics.test_accuracy,
            "epoch_seconds": metrics.seconds,
            "images_per_second": metrics.images_per_second,
        },
        step=metrics.epoch,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        seed=args.seed,
        device=args.device,
        recipe=args.recipe,
        channels_last=args.channels_last,
        bf16=args.bf16,
        compile=args.compile,
        workers=args.workers,
    )
    device = resolve_device(config.device)  # a bad device fails before any work
    with (
        step_run(TRAIN, {"data_run_id": args.data_run_id}) as run,
        tempfile.TemporaryDirectory(prefix="train-") as work,
    ):
        work_dir = Path(work)
        require_step_run(args.data_run_id, FETCH)
        dataset = read_dataset(download(args.data_run_id, "data", work_dir))
        manifest = dataset.manifest
        if "digest" in manifest:  # the data version, so train runs filter by it as fetch runs do
            mlflow.set_tag("data.digest", manifest["digest"])

        model = Classifier(len(dataset.class_names), manifest["mean"], manifest["std"])
        mlflow.log_params(
            {
                "parameters": parameter_count(model),
                "resolved_device": str(device),
                "architecture": "vgg11_bn_cifar",
            }
        )
        history = train(model, dataset.train, dataset.test, config, on_epoch=log_epoch)
        final = history[-1]
        mlflow.log_metric("final_test_accuracy", final.test_accuracy)

        onnx_path = export_onnx(model, work_dir / "onnx" / "model.onnx")
        metadata = {
            "model_run_id": run.info.run_id,
            "data_run_id": args.data_run_id,
            "class_names": dataset.class_names,
            "architecture": "vgg11_bn_cifar",
            "input": {"shape": [-1, 32, 32, 3], "dtype": "uint8", "layout": "NHWC", "range": [0, 255]},
            "normalization": {"mean": manifest["mean"], "std": manifest["std"]},
            "test_accuracy": final.test_accuracy,
        }
        (onnx_path.parent / "metadata.json").write_text(json.dumps(metadata, indent=2))

        # Reference predictions on a fixed held-out subset, from PyTorch (the training
        # environment): the system test demands the served image reproduce them.
        indices = reference_indices(len(dataset.test.labels), args.reference_size)
        reference_images = dataset.test.images[indices]
        reference = torch_logits(model, reference_images)
        exported = onnx_logits(onnx_path, reference_images)
        max_diff = float(np.abs(reference - exported).max())
        agreement = float((reference.argmax(1) == exported.argmax(1)).mean())
        mlflow.log_metrics({"onnx_max_logit_diff": max_diff, "onnx_top1_agreement": agreement})
        if max_diff > args.parity_tolerance:
            raise ParityError(
                f"ONNX export differs from PyTorch: max |logit diff| {max_diff:.2e} "
                f"> tolerance {args.parity_tolerance:.0e}"
            )
        reference_dir = work_dir / "reference"
        reference_dir.mkdir()
        np.savez(reference_dir / "predictions.npz", indices=indices, logits=reference)

        mlflow.log_artifacts(str(onnx_path.parent), "onnx")
        mlflow.log_artifacts(str(reference_dir), "reference")
        mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name="model",
            signature=infer_signature(reference_images[:2], reference[:2]),
            input_example=reference_images[:2],
        )
        log.info("test accuracy %.4f; ONNX parity max diff %.2e", final.test_accuracy, max_diff)


if __name__ == "__main__":
    run_main(TRAIN, main)
