"""The train step on 2 CPU processes under torchrun (gloo): rank 0 logs, DDP keeps the replicas equal."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from cifar_pipeline.orchestrator.experiment import project_experiment_id
from cifar_pipeline.tracking import STEP_TAG
from tests.helpers import fake_fetch_run, reference_logits

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--epochs", "2", "--batch-size", "32", "--device", "cpu", "--workers", "0", "--reference-size", "16"]


def run_step(store: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_RUN_ID", None)
    return subprocess.run(
        [sys.executable, "-m", "steps.train.step", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("recipe", ["fast", "classic"])
def test_two_process_training_logs_once_and_keeps_replicas_equal(
    recipe: str, mlflow_store: str, tmp_path: Path
) -> None:
    data_run = fake_fetch_run(tmp_path, seed=0)
    result = run_step(mlflow_store, "--data-run-id", data_run, "--processes", "2", "--recipe", recipe, *ARGS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "the 2 replicas agree" in output, output[-4000:]  # the step raises when they drift apart

    client = MlflowClient(mlflow_store)
    # started in the project: its run is in the project's own experiment
    runs = client.search_runs([project_experiment_id(mlflow_store)], f"tags.`{STEP_TAG}` = 'train'")
    assert len(runs) == 1  # rank 1 opened no run of its own
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.nproc"] == "2"
    # one value per epoch: only rank 0 logged, and the global figures cover both ranks' images
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2]
    assert all(np.isfinite(m.value) for m in history)
    assert reference_logits(client, run.info.run_id, tmp_path / "ref").shape == (16, 4)


def test_batch_that_does_not_split_between_processes_is_refused(mlflow_store: str, tmp_path: Path) -> None:
    data_run = fake_fetch_run(tmp_path, seed=0)
    result = run_step(mlflow_store, "--data-run-id", data_run, *ARGS, "--processes", "3")
    assert result.returncode == 2
    assert "batch_size=32 with nproc=3" in result.stdout
