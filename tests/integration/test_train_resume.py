"""The train step in-process: checkpoints, a killed run continued, evaluation, quality gate."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from cifar_pipeline.orchestrator.hooks import HookContext, load_hooks
from cifar_pipeline.orchestrator.planning.plan import PipelineError
from cifar_pipeline.orchestrator.reporting.report import PipelineReport, StepResult
from cifar_pipeline.promotion.registry import logged_model_uri
from cifar_pipeline.step_declarations import PIPELINE_STEPS
from cifar_pipeline.tracking import QUALITY_GATE_TAG, STEP_TAG, lineage
from steps.train import step
from tests.helpers import fake_fetch_run, reference_logits

pytestmark = pytest.mark.slow

EPOCHS = [
    "--epochs",
    "3",
    "--batch-size",
    "32",
    "--device",
    "cpu",
    "--workers",
    "0",
    "--reference-size",
    "16",
]


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing on the way catches it."""


def kill_after_epoch(monkeypatch: pytest.MonkeyPatch, last_epoch: int) -> None:
    original = step.save_checkpoint

    def save_then_die(checkpoint: dict, work_dir: Path) -> None:
        original(checkpoint, work_dir)
        if checkpoint["epoch"] == last_epoch:
            raise Killed

    monkeypatch.setattr(step, "save_checkpoint", save_then_die)


@pytest.fixture
def data_run(mlflow_store: str, tmp_path: Path) -> str:
    return fake_fetch_run(tmp_path, seed=0)


def test_killed_run_continues_to_the_uninterrupted_result(
    data_run: str, mlflow_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MlflowClient(mlflow_store)
    torch.manual_seed(0)
    step.main(["--data-run-id", data_run, *EPOCHS])
    straight = client.search_runs(["0"], f"tags.`{STEP_TAG}` = 'train'")[0]

    torch.manual_seed(0)
    with monkeypatch.context() as patch:  # undone after: the store's own patches stay
        kill_after_epoch(patch, 1)
        with pytest.raises(Killed):
            step.main(["--data-run-id", data_run, *EPOCHS])
    killed = client.search_runs(["0"], f"tags.`{STEP_TAG}` = 'train'", order_by=["start_time DESC"])[0]
    assert killed.info.status == "FAILED"
    assert [a.path for a in client.list_artifacts(killed.info.run_id, "checkpoints")] == [
        "checkpoints/last.pt"
    ]

    # continued with default (different) settings on the command line: the checkpoint's rule
    step.main(
        ["--resume-run-id", killed.info.run_id, "--device", "cpu", "--workers", "0", "--reference-size", "16"]
    )
    resumed = client.search_runs(["0"], f"tags.`{STEP_TAG}` = 'train'", order_by=["start_time DESC"])[0]
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags[step.RESUMED_TAG] == killed.info.run_id
    assert resumed.data.tags["train.resumed_after_epoch"] == "1"
    assert lineage(resumed)["data_run_id"] == data_run
    assert [m.step for m in client.get_metric_history(resumed.info.run_id, "test_accuracy")] == [1, 2, 3]
    assert resumed.data.params["train.epochs"] == "3"
    # RNG, optimiser and schedule restored: the same model as the uninterrupted run
    np.testing.assert_allclose(
        reference_logits(client, resumed.info.run_id, tmp_path / "r"),
        reference_logits(client, straight.info.run_id, tmp_path / "s"),
        rtol=1e-5,
        atol=1e-5,
    )


def test_resume_on_other_data_is_refused_naming_the_keys(
    data_run: str, mlflow_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MlflowClient(mlflow_store)
    with monkeypatch.context() as patch:  # undone after: the store's own patches stay
        kill_after_epoch(patch, 1)
        with pytest.raises(Killed):
            step.main(["--data-run-id", data_run, *EPOCHS])
    killed = client.search_runs(["0"], f"tags.`{STEP_TAG}` = 'train'")[0]
    other = fake_fetch_run(tmp_path, seed=1)
    with pytest.raises(
        step.ResumeError, match=r"checkpoint differs in data\.digest: '[0-9a-f]+' -> '[0-9a-f]+'"
    ):
        step.main(["--resume-run-id", killed.info.run_id, "--data-run-id", other, *EPOCHS])


def test_finished_or_foreign_runs_cannot_be_resumed(data_run: str, mlflow_store: str) -> None:
    with pytest.raises(step.ResumeError, match="not a train run"):
        step.main(["--resume-run-id", data_run, *EPOCHS])
    with pytest.raises(step.ResumeError, match="give data_run_id"):
        step.main(EPOCHS)


def test_evaluation_artifacts_and_the_quality_gate(data_run: str, mlflow_store: str, tmp_path: Path) -> None:
    client = MlflowClient(mlflow_store)
    step.main(["--data-run-id", data_run, *EPOCHS, "--min-accuracy", "1.01"])
    run = client.search_runs(["0"], f"tags.`{STEP_TAG}` = 'train'")[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags[QUALITY_GATE_TAG] == "failed"
    assert run.data.tags["model.blessed"] == "false"
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/curves.png", "plots/confusion_matrix.png", "plots/misclassified.png"}
    summary = json.loads(
        Path(client.download_artifacts(run.info.run_id, "evaluation/summary.json")).read_text()
    )
    assert np.asarray(summary["confusion"]).sum() == 32  # every test image counted once
    assert summary["accuracy"] == pytest.approx(run.data.metrics["final_test_accuracy"])
    assert set(summary["per_class_accuracy"]) == {"a", "b", "c", "d"}
    assert 0.0 <= run.data.metrics["final_test_accuracy_flip_tta"] <= 1.0

    cfg = OmegaConf.create({"train": {"min_accuracy": 1.01}})
    gate = load_hooks(PIPELINE_STEPS["train"], HookContext(cfg, client, PipelineReport()))
    finished = StepResult("train", run.info.run_id, "FINISHED", 1.0)
    gate.after(finished, goes_on=False)  # a pipeline that ends at train is not stopped
    with pytest.raises(PipelineError, match=r"below train\.min_accuracy=1\.01; the model is not blessed"):
        gate.after(finished, goes_on=True)


def test_quality_gate_passes_at_the_threshold(data_run: str, mlflow_store: str) -> None:
    step.main(["--data-run-id", data_run, *EPOCHS, "--min-accuracy", "0", "--flip-tta", "false"])
    run = MlflowClient(mlflow_store).search_runs(["0"], f"tags.`{STEP_TAG}` = 'train'")[0]
    assert run.data.tags[QUALITY_GATE_TAG] == "passed"
    assert "model.blessed" not in run.data.tags
    assert "final_test_accuracy_flip_tta" not in run.data.metrics


# Loads the logged model in a fresh process outside the project, so the project package
# can come only from the model's own code: and `load_model` puts that code first on
# sys.path, which must not leak into the test session.
LOAD_MODEL = """
import sys, mlflow, mlflow.pytorch, numpy as np, torch
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pytorch.load_model(sys.argv[2])
with torch.no_grad():
    np.save(sys.argv[4], model(torch.from_numpy(np.load(sys.argv[3]))).numpy())
"""


def test_pytorch_model_is_logged_and_reproduces_the_reference(
    data_run: str, mlflow_store: str, tmp_path
) -> None:
    client = MlflowClient(mlflow_store)
    step.main(["--data-run-id", data_run, *EPOCHS])
    run = client.search_runs(["0"], f"tags.`{STEP_TAG}` = 'train'")[0]
    reference = np.load(
        client.download_artifacts(run.info.run_id, "reference/predictions.npz", str(tmp_path))
    )
    dataset_dir = Path(client.download_artifacts(data_run, "data", str(tmp_path)))
    np.save(tmp_path / "images.npy", np.load(dataset_dir / "test_images.npy")[reference["indices"]])
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_RUN_ID")}
    uri = logged_model_uri(client, run.info.run_id, "pytorch_model")  # MLflow 3: by model ID
    subprocess.run(
        [sys.executable, "-c", LOAD_MODEL, mlflow_store, uri, str(tmp_path / "images.npy"), "logits.npy"],
        cwd=outside,
        env=env,
        check=True,
    )
    np.testing.assert_allclose(np.load(outside / "logits.npy"), reference["logits"], atol=1e-5)
    info = mlflow.models.get_model_info(uri)
    # it carries the model's module, not the whole package (whose every edit would retrain)
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "model")))
    carried = sorted(p.relative_to(local / "code").as_posix() for p in (local / "code").rglob("*.py"))
    assert carried == ["cifar_pipeline/__init__.py", "cifar_pipeline/model.py"]
    assert info.signature is not None

    # MLflow 3 models: the served ONNX model is a LoggedModel with the training params, and
    # its evaluation metrics are linked to it and to the test split they were measured on
    served = client.get_logged_model(logged_model_uri(client, run.info.run_id).removeprefix("models:/"))
    assert served.source_run_id == run.info.run_id
    assert served.params["architecture"] == run.data.params["architecture"]
    assert served.params["train.epochs"] == run.data.params["train.epochs"]
    linked = {metric.key: metric for metric in served.metrics or []}
    accuracy = linked["final_test_accuracy"]
    assert accuracy.value == run.data.metrics["final_test_accuracy"]
    manifest = json.loads((dataset_dir / "manifest.json").read_text())
    name, digest = manifest["source"]["name"], manifest["digest"][:12]
    assert (accuracy.dataset_name, accuracy.dataset_digest) == (f"{name}-test", digest)
    # the train run's inputs are the data set's splits, named as the fetch step names them
    trained_on = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert trained_on == {f"{name}-train": digest, f"{name}-test": digest}
