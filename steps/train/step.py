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
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

import mlflow
import mlflow.pytorch
import numpy as np
import onnx
import torch
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

import cifar_pipeline
from cifar_pipeline import evaluation, names
from cifar_pipeline.checkpoints import (
    RESUMED_TAG,
    ResumeError,
    check_resumable,
    copy_history,
    load_resume,
    save_checkpoint,
)
from cifar_pipeline.checksums import file_digest
from cifar_pipeline.cli import parse_bool, parse_int, run_main
from cifar_pipeline.dataset import Dataset, read_dataset
from cifar_pipeline.distributed import (
    World,
    launched_by_torchrun,
    process_group,
    relaunch_with_torchrun,
    world_from_env,
)
from cifar_pipeline.mlflow_datasets import CONTEXTS, SPLITS, split_dataset
from cifar_pipeline.model import Classifier, architecture_name, parameter_count
from cifar_pipeline.onnx_export import export_onnx, torch_logits
from cifar_pipeline.onnx_inference import onnx_logits
from cifar_pipeline.tracking import (
    FETCH,
    QUALITY_GATE_TAG,
    TRAIN,
    download,
    require_step_run,
    step_run,
    upstream_tag,
)
from cifar_pipeline.training import (
    RUNTIME_FIELDS,
    Checkpoint,
    EpochMetrics,
    TrainConfig,
    reference_indices,
    resolve_device,
    train,
)

log = logging.getLogger(__name__)
# The modules `mlflow.pytorch.load_model` needs to unpickle the model (model.py imports
# only torch and torchvision).
MODEL_MODULES = ("__init__.py", "model.py")


class ParityError(RuntimeError):
    """The exported ONNX model does not reproduce the PyTorch model."""


@dataclass(frozen=True)
class Checks:
    """What the step checks once the model is trained (configs/train/ too). Apart from
    TrainConfig: they do not change the weights, so a resumed run need not match them."""

    reference_size: int = 256  # held-out images whose predictions the system test must reproduce
    parity_tolerance: float = 1e-3  # largest |ONNX logit - PyTorch logit| the export may show
    min_accuracy: float = 0.0  # quality gate on the final test accuracy
    flip_tta: bool = True  # also report flip-TTA test accuracy


# How a field's value arrives: MLflow passes every parameter as a string, numbers as "4" or
# "4.0" (float parameters) and booleans as "true"/"false" (string parameters).
PARSERS: dict[type, Callable[[str], Any]] = {bool: parse_bool, int: parse_int, float: float, str: str}
# not --nproc: torchrun would take that for an abbreviation of its own --nproc-per-node
FLAGS = {"nproc": "--processes"}
HELP = {
    "arch": "vgg11, vgg13, vgg16, vgg19",
    "batch_size": "global batch",
    "lr": "peak rate for base_batch_size",
    "nproc": "processes, one per GPU",
    "min_accuracy": "quality gate on final test accuracy",
    "flip_tta": "also report flip-TTA accuracy",
}


def add_flags(parser: argparse.ArgumentParser, settings: type[TrainConfig] | type[Checks]) -> None:
    """One flag per field, with the field's name, type and default: the dataclass is the one
    place a default is written (tests/unit/test_step_defaults.py holds MLproject and configs/ to it)."""
    types = get_type_hints(settings)  # field.type is only the annotation's text here
    for field in fields(settings):
        flag = FLAGS.get(field.name, "--" + field.name.replace("_", "-"))
        kind = PARSERS[types[field.name]]
        parser.add_argument(
            flag, dest=field.name, type=kind, default=field.default, help=HELP.get(field.name)
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-run-id", default="", help="a FINISHED fetch run; default with a resume: its data"
    )
    parser.add_argument("--resume-run-id", default="", help="an unfinished train run to continue")
    add_flags(parser, TrainConfig)
    add_flags(parser, Checks)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


EPOCH_METRICS = (
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "epoch_seconds",
    "images_per_second",
)


def log_epoch(metrics: EpochMetrics) -> None:
    values = (metrics.train_loss, metrics.train_accuracy, metrics.test_loss, metrics.test_accuracy,
              metrics.seconds, metrics.images_per_second)  # fmt: skip
    mlflow.log_metrics(dict(zip(EPOCH_METRICS, values, strict=True)), step=metrics.epoch)


def evaluate_final(
    model: Classifier, dataset: Dataset, device: torch.device, flip_tta: bool
) -> tuple[float, dict[str, float]]:
    """Per-class accuracy, confusion matrix, misclassified images and curves logged; returns
    the test accuracy and the further metrics of the final model (flip TTA), to log with it."""
    names, labels = dataset.class_names, dataset.test.labels
    predictions = evaluation.predict(model, dataset.test.images, device).argmax(1)
    confusion = evaluation.confusion_matrix(labels, predictions, len(names))
    accuracy = float((predictions == labels).mean())
    per_class = evaluation.per_class_accuracy(confusion)
    mlflow.log_dict(
        {"accuracy": accuracy, "per_class_accuracy": dict(zip(names, per_class.tolist(), strict=True)),
         "confusion": confusion.tolist(), "class_names": names},
        "evaluation/summary.json",
    )  # fmt: skip
    mlflow.log_metrics({f"class_accuracy/{i:03d}": value for i, value in enumerate(per_class.tolist())})
    final: dict[str, float] = {}
    if flip_tta:  # reported beside, never instead of, the plain accuracy that the image serves
        tta = evaluation.predict(model, dataset.test.images, device, flip_tta=True).argmax(1)
        final["final_test_accuracy_flip_tta"] = float((tta == labels).mean())
    client = MlflowClient()
    run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    history = {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
               for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy")}  # fmt: skip
    mlflow.log_figure(evaluation.curves_figure(history), "plots/curves.png")
    mlflow.log_figure(evaluation.confusion_figure(confusion, names), "plots/confusion_matrix.png")
    mlflow.log_figure(
        evaluation.misclassified_figure(dataset.test.images, labels, predictions, names),
        "plots/misclassified.png",
    )
    return accuracy, final


def quality_gate(accuracy: float, min_accuracy: float) -> None:
    """Tag the run: below `min_accuracy` it is not blessed and the pipeline stops before build."""
    passed = accuracy >= min_accuracy
    mlflow.set_tags(
        {QUALITY_GATE_TAG: "passed" if passed else "failed", "quality_gate.min_accuracy": min_accuracy}
    )
    if not passed:
        mlflow.set_tag(names.BLESSED_TAG, "false")
        log.warning(
            "quality gate failed: test accuracy %.4f < min_accuracy %.4f; not blessed", accuracy, min_accuracy
        )


@dataclass
class Inputs:
    """What every rank needs before training: settings, data, and the checkpoint to continue."""

    config: TrainConfig
    data_run_id: str
    dataset: Dataset
    data_identity: dict[str, Any]
    resume_from: Checkpoint | None


def read_inputs(args: argparse.Namespace, config: TrainConfig, work_dir: Path) -> Inputs:
    resume_from, data_run_id = None, args.data_run_id
    if args.resume_run_id:
        resume_from, resumed_data_run = load_resume(args.resume_run_id, work_dir)
        data_run_id = data_run_id or resumed_data_run
        # The checkpoint's training settings rule (same epochs, schedule, seed); only
        # runtime settings (device, workers, compile, nproc) come from this invocation.
        runtime = {k: getattr(config, k) for k in RUNTIME_FIELDS}
        config = TrainConfig(**{**resume_from["config"], **runtime})
    require_step_run(data_run_id, FETCH)
    dataset = read_dataset(download(data_run_id, "data", work_dir))
    data_identity = {
        names.DATA_DIGEST_TAG: dataset.manifest.get("digest", ""),
        "class_names": dataset.class_names,
        "architecture": architecture_name(config.arch, config.batch_norm),
    }
    if resume_from is not None:
        check_resumable(resume_from, args.resume_run_id, data_identity, config)
    return Inputs(config, data_run_id, dataset, data_identity, resume_from)


def new_model(inputs: Inputs) -> Classifier:
    torch.manual_seed(inputs.config.seed)  # the initial weights follow the seed too, on every rank
    manifest, config = inputs.dataset.manifest, inputs.config
    return Classifier(
        len(inputs.dataset.class_names), manifest["mean"], manifest["std"], config.arch, config.batch_norm
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.data_run_id and not args.resume_run_id:
        raise ResumeError("give data_run_id (a fetch run), or resume_run_id (a train run to continue)")
    # argparse's dest names are TrainConfig's field names, one for one
    config = TrainConfig(**{field.name: getattr(args, field.name) for field in fields(TrainConfig)})
    device = resolve_device(config.device)  # a bad device fails before any work
    if config.nproc > 1 and not launched_by_torchrun():
        relaunch_with_torchrun(config.nproc, __spec__.name, sys.argv[1:] if argv is None else argv)
    world = world_from_env()
    if world.size != config.nproc:
        raise ValueError(f"nproc={config.nproc}, but torchrun started {world.size} processes")
    with process_group(world, device):
        if world.is_main:
            train_and_log(args, config, device, world)
        else:  # a helper rank: trains its share, logs nothing
            with tempfile.TemporaryDirectory(prefix="train-") as work:
                inputs = read_inputs(args, config, Path(work))
                train(new_model(inputs), inputs.dataset.train, inputs.dataset.test, inputs.config,
                      resume_from=inputs.resume_from, world=world)  # fmt: skip


def train_and_log(args: argparse.Namespace, config: TrainConfig, device: torch.device, world: World) -> None:
    with (
        step_run(TRAIN, system_metrics=True) as run,
        tempfile.TemporaryDirectory(prefix="train-") as work,
    ):
        work_dir = Path(work)
        if args.data_run_id:
            mlflow.set_tag(upstream_tag("data_run_id"), args.data_run_id)
        inputs = read_inputs(args, config, work_dir)
        config, dataset = inputs.config, inputs.dataset
        mlflow.set_tag(upstream_tag("data_run_id"), inputs.data_run_id)
        # filter train runs by data version
        mlflow.set_tag(names.DATA_DIGEST_TAG, inputs.data_identity[names.DATA_DIGEST_TAG])
        if inputs.resume_from is not None:
            epoch = inputs.resume_from["epoch"]
            mlflow.set_tags({RESUMED_TAG: args.resume_run_id, "train.resumed_after_epoch": epoch})
            copy_history(args.resume_run_id, epoch, EPOCH_METRICS)
        mlflow.log_params({f"train.{k}": v for k, v in asdict(config).items()})

        def on_epoch(metrics: EpochMetrics, checkpoint: Checkpoint) -> None:
            log_epoch(metrics)
            save_checkpoint({**checkpoint, "data": inputs.data_identity}, work_dir)

        splits = {split: split_dataset(dataset, split) for split in SPLITS}
        for split, data in splits.items():
            mlflow.log_input(data, context=CONTEXTS[split])
        model = new_model(inputs)
        model_params = {
            **{f"train.{k}": v for k, v in asdict(config).items()},
            "parameters": parameter_count(model),
            "architecture": inputs.data_identity["architecture"],
        }
        mlflow.log_params(
            {
                "parameters": model_params["parameters"],
                "resolved_device": str(device),
                "architecture": model_params["architecture"],
                "train.peak_lr_scaled": config.peak_lr,
            }
        )
        history = train(model, dataset.train, dataset.test, config, on_epoch, inputs.resume_from, world)
        accuracy, final = evaluate_final(model, dataset, device, args.flip_tta)
        quality_gate(accuracy, args.min_accuracy)
        model_id = export_and_log(model, inputs, run.info.run_id, args, work_dir, model_params)
        # Linked to the LoggedModel and to the split they were measured on: the model's page
        # in the UI lists them, with the data set's name and digest.
        mlflow.log_metrics(
            {"final_test_accuracy": history[-1].test_accuracy, **final},
            model_id=model_id,
            dataset=splits["test"],
        )
        log.info("test accuracy %.4f", history[-1].test_accuracy)


def export_and_log(
    model: Classifier,
    inputs: Inputs,
    run_id: str,
    args: argparse.Namespace,
    work_dir: Path,
    model_params: dict[str, Any],
) -> str:
    """ONNX export checked against PyTorch, reference predictions, and both MLflow models
    (LoggedModels carrying `model_params`); returns the served (ONNX) model's ID."""
    dataset, manifest = inputs.dataset, inputs.dataset.manifest
    onnx_path = export_onnx(model, work_dir / "onnx" / "model.onnx")
    metadata = {
        "model_run_id": run_id,
        "data_run_id": inputs.data_run_id,
        "class_names": dataset.class_names,
        "architecture": inputs.data_identity["architecture"],
        "input": {"shape": [-1, 32, 32, 3], "dtype": "uint8", "layout": "NHWC", "range": [0, 255]},
        "normalization": {"mean": manifest["mean"], "std": manifest["std"]},
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
    log.info("ONNX parity: max logit diff %.2e, top-1 agreement %.4f", max_diff, agreement)
    reference_dir = work_dir / "reference"
    reference_dir.mkdir()
    np.savez(reference_dir / "predictions.npz", indices=indices, logits=reference)

    # The model's content digest: the build step's cache key uses it, not this run's ID.
    mlflow.set_tag(names.MODEL_DIGEST_TAG, "sha256:" + file_digest(onnx_path))
    mlflow.log_artifacts(str(onnx_path.parent), "onnx")
    mlflow.log_artifacts(str(reference_dir), "reference")
    signature = infer_signature(reference_images[:2], reference[:2])
    served = mlflow.onnx.log_model(
        onnx.load(str(onnx_path)),
        name="model",
        signature=signature,
        input_example=reference_images[:2],
        params=model_params,
    )
    # The PyTorch model too (for fine-tuning and `mlflow.pytorch.load_model`). It pickles
    # cifar_pipeline.model.Classifier, so that module travels with it; requirements are
    # the pinned versions in use, not inferred (inference re-imports the model: slow).
    mlflow.pytorch.log_model(
        model,
        name="pytorch_model",
        signature=signature,
        input_example=reference_images[:2],
        code_paths=[str(model_code(work_dir / "model_code"))],
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
        params=model_params,
    )
    return str(served.model_id)


def model_code(folder: Path) -> Path:
    """The package the pickled model needs to load (cifar_pipeline.model) and nothing more:
    with the whole package the logged model, and so this step's output and cache key, would
    change with every module of it, the system test's included."""
    package = folder / "cifar_pipeline"
    package.mkdir(parents=True)
    source = Path(cifar_pipeline.__file__).parent
    for module in MODEL_MODULES:
        shutil.copy(source / module, package / module)
    return package


if __name__ == "__main__":
    run_main(TRAIN, main)
