"""Run names that say what a run is, for the MLflow UI's runs list.

MLflow names a run it creates at random (`fearless-pug-595`); in a list of pipelines, and
of their step runs, that says nothing. A pipeline run is named from what distinguishes it
from its neighbours: its data source, model and epochs, where it starts and stops, and its
sweep point; a step run by its step.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

# The resume keys, in the order planning.py checks them, and what each names.
RESUME_LABELS = {
    "pipeline_run_id": "resumed",
    "systemtest_run_id": "from system test",
    "image_run_id": "from image",
    "model_run_id": "from model",
    "data_run_id": "from data",
}
MAX_NAME = 250  # MLflow keeps run names short; the UI shows about this much


def model_label(model: Any) -> str:
    return f"{model.arch}{'_bn' if model.batch_norm else ''}"


def pipeline_run_name(cfg: DictConfig, point: str = "") -> str:
    """E.g. `digits vgg11_bn 3 epochs`, `… · until train`, `from model 2ed1a78b`, `… · optim.lr=0.05`."""
    given = [(label, str(cfg.resume.get(key) or "")) for key, label in RESUME_LABELS.items()]
    given = [(label, run_id) for label, run_id in given if run_id]
    epochs = float(cfg.train.epochs)
    training = f"{model_label(cfg.model)} {epochs:g} epoch{'' if epochs == 1 else 's'}"
    if not given:
        parts = [f"{cfg.data.source} {training}"]
    elif given[0][0] == "resumed":
        parts = [f"{cfg.data.source} {training}", f"resumed {given[0][1][:8]}"]
    elif given[0][0] == "from data":
        parts = [f"from data {given[0][1][:8]}", training]
    else:  # the given run's model is what is built and tested: source and epochs would mislead
        parts = [f"{given[0][0]} {given[0][1][:8]}"]
    if until := str(cfg.get("stop_after") or ""):
        parts.append(f"until {until}")
    if point:
        parts.append(point)
    return " · ".join(parts)[:MAX_NAME]


def reused_step_run_name(step: str) -> str:
    return f"{step} (reused)"
