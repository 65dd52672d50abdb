"""Training checkpoints as MLflow artifacts, and continuing a train run that did not finish.

A train run replaces its `checkpoints/last.pt` after every epoch. A later run continues
from it only if the data, the classes and every non-runtime training setting match; the
refusal names each key that differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cifar_pipeline import names
from cifar_pipeline.tracking import CHECKPOINT, STEP_TAG, TRAIN, download, lineage
from cifar_pipeline.training import Checkpoint, TrainConfig, config_differences

RESUMED_TAG = names.RESUMED_FROM_TAG


class ResumeError(ValueError):
    """The run asked to be continued cannot be continued with this data or model."""


def save_checkpoint(checkpoint: Checkpoint, work_dir: Path) -> None:
    """Replace the run's `checkpoints/last.pt`: written locally first, then logged whole."""
    path = work_dir / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    mlflow.log_artifact(str(path), "checkpoints")


def load_resume(run_id: str, work_dir: Path) -> tuple[Checkpoint, str]:
    """The last checkpoint of an unfinished train run, and the fetch run it trained on."""
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ResumeError(f"resume_run_id={run_id!r}: no such run") from exc
    if run.data.tags.get(STEP_TAG) != TRAIN:
        raise ResumeError(f"resume_run_id={run_id!r}: not a train run")
    if run.info.status == names.FINISHED:
        raise ResumeError(f"resume_run_id={run_id!r}: already FINISHED; nothing to continue")
    try:
        local = download(run_id, CHECKPOINT, work_dir / "resume")
    except (MlflowException, OSError) as exc:
        raise ResumeError(
            f"resume_run_id={run_id!r}: has no {CHECKPOINT} (it stopped before epoch 1 ended)"
        ) from exc
    # weights_only: tensors and plain containers only, so a checkpoint cannot run code on load
    checkpoint: Checkpoint = torch.load(local, map_location="cpu", weights_only=True)
    return checkpoint, lineage(run).get("data_run_id", "")


def check_resumable(checkpoint: Checkpoint, run_id: str, data: dict[str, Any], config: TrainConfig) -> None:
    """Refuse, naming every differing key, a checkpoint of other data, another model or another recipe."""
    saved_data = checkpoint.get("data", {})
    differences = [f"{k}: {saved_data.get(k)!r} -> {v!r}" for k, v in data.items() if saved_data.get(k) != v]
    differences += config_differences(checkpoint["config"], config)
    if differences:
        raise ResumeError(f"resume_run_id={run_id!r}: checkpoint differs in " + "; ".join(differences))


def copy_history(run_id: str, up_to_epoch: int, keys: tuple[str, ...]) -> None:
    """Give the continuing run the earlier epochs' metrics, so its curves start at epoch 1."""
    client = MlflowClient()
    for key in keys:
        for metric in client.get_metric_history(run_id, key):
            if metric.step <= up_to_epoch:
                mlflow.log_metric(key, metric.value, step=metric.step)
