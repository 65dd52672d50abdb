"""Resume run IDs are checked before any container starts, with errors that say why."""

from pathlib import Path

import mlflow
import pytest
from omegaconf import OmegaConf

from cifar_pipeline.orchestrator.hooks import HookContext, load_hooks
from cifar_pipeline.orchestrator.pipeline import run_pipeline
from cifar_pipeline.orchestrator.planning.plan import (
    PipelineError,
    continue_unfinished_run,
    plan,
    plan_resume,
    step_parameters,
    validate_resume,
)
from cifar_pipeline.orchestrator.reporting.report import PipelineReport
from cifar_pipeline.step_declarations import PIPELINE_STEPS
from cifar_pipeline.tracking import REQUIRED_ARTIFACTS, STEP_TAG, UpstreamError, require_step_run


def _fake_run(step: str, tmp_path: Path, artifacts: tuple[str, ...] = (), status: str = "FINISHED") -> str:
    with mlflow.start_run() as run:
        mlflow.set_tag(STEP_TAG, step)
        for artifact in artifacts:
            folder, _, name = artifact.rpartition("/")
            local = tmp_path / "src" / run.info.run_id / name
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text("x")
            mlflow.log_artifact(str(local), folder)
    if status != "FINISHED":
        mlflow.MlflowClient().set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_finished_run_with_artifacts_is_accepted(mlflow_store, tmp_path: Path) -> None:
    run_id = _fake_run("fetch", tmp_path, REQUIRED_ARTIFACTS["fetch"])
    assert require_step_run(run_id, "fetch").info.run_id == run_id


def test_unknown_run_id(mlflow_store) -> None:
    with pytest.raises(UpstreamError, match="data_run_id='0123456789abcdef0123456789abcdef': no such run"):
        require_step_run("0123456789abcdef0123456789abcdef", "fetch")


def test_malformed_run_id(mlflow_store) -> None:
    with pytest.raises(UpstreamError, match="not a run ID"):
        require_step_run("../etc/passwd", "fetch")


def test_run_of_wrong_step(mlflow_store, tmp_path: Path) -> None:
    run_id = _fake_run("train", tmp_path, REQUIRED_ARTIFACTS["train"])
    with pytest.raises(UpstreamError, match="is a run of step 'train', expected a 'fetch' run"):
        require_step_run(run_id, "fetch")


def test_unfinished_run(mlflow_store, tmp_path: Path) -> None:
    run_id = _fake_run("fetch", tmp_path, REQUIRED_ARTIFACTS["fetch"], status="FAILED")
    with pytest.raises(UpstreamError, match="status FAILED, expected FINISHED"):
        require_step_run(run_id, "fetch")


def test_run_missing_artifacts(mlflow_store, tmp_path: Path) -> None:
    run_id = _fake_run("train", tmp_path, ("onnx/model.onnx",))
    with pytest.raises(
        UpstreamError, match=r"lacks artifacts: onnx/metadata\.json, reference/predictions\.npz"
    ):
        require_step_run(run_id, "train")


def test_pipeline_names_the_resume_parameter(mlflow_store, tmp_path: Path) -> None:
    run_id = _fake_run("fetch", tmp_path, REQUIRED_ARTIFACTS["fetch"])
    with pytest.raises(PipelineError, match=f"cannot resume: model_run_id='{run_id}'"):
        validate_resume({"model_run_id": run_id}, mlflow.MlflowClient())


@pytest.mark.parametrize(
    ("resume", "steps"),
    [
        ({}, ["fetch", "train", "build", "systemtest", "promote"]),
        ({"data_run_id": "a" * 32}, ["train", "build", "systemtest", "promote"]),
        ({"model_run_id": "b" * 32}, ["build", "systemtest", "promote"]),
        ({"image_run_id": "c" * 32}, ["systemtest", "promote"]),
        ({"systemtest_run_id": "d" * 32}, ["promote"]),
    ],
)
def test_plan_starts_after_the_given_run(resume: dict[str, str], steps: list[str]) -> None:
    planned, given = plan(
        OmegaConf.create({"data_run_id": "", "model_run_id": "", "image_run_id": "", **resume})
    )
    assert planned == steps
    assert given == resume


def test_plan_refuses_two_resume_points() -> None:
    with pytest.raises(PipelineError, match="at most one of"):
        plan(OmegaConf.create({"data_run_id": "a" * 32, "model_run_id": "b" * 32, "image_run_id": ""}))


def test_unfinished_checkpointed_train_run_is_continued(mlflow_store, tmp_path: Path) -> None:
    client = mlflow.MlflowClient()
    killed = _fake_run("train", tmp_path, ("checkpoints/last.pt",), status="FAILED")
    client.set_tag(killed, "pipeline.upstream.data_run_id", "d" * 32)
    steps, upstream = continue_unfinished_run(*plan(OmegaConf.create({"model_run_id": killed})), client)
    assert steps == ["train", "build", "systemtest", "promote"]
    assert upstream == {"data_run_id": "d" * 32, "resume_run_id": killed}
    cfg = OmegaConf.create({"seed": 0, "model": {}, "optim": {}, "train": {"epochs": 3, "device": "cpu"}})
    ctx = HookContext(cfg, client, PipelineReport())
    resolved = load_hooks(PIPELINE_STEPS["train"], ctx).resolve(upstream)
    assert step_parameters(PIPELINE_STEPS["train"], cfg, upstream, resolved.params)["resume_run_id"] == killed
    assert "continues the interrupted train run" in resolved.uncacheable


def test_unfinished_train_run_without_checkpoint_is_refused(mlflow_store, tmp_path: Path) -> None:
    killed = _fake_run("train", tmp_path, status="KILLED")
    given = plan(OmegaConf.create({"model_run_id": killed}))
    with pytest.raises(PipelineError, match=rf"train run {killed} is KILLED and has no checkpoints/last\.pt"):
        continue_unfinished_run(*given, mlflow.MlflowClient())


def test_finished_train_run_still_means_build_and_test(mlflow_store, tmp_path: Path) -> None:
    done = _fake_run("train", tmp_path, REQUIRED_ARTIFACTS["train"])
    given = plan(OmegaConf.create({"model_run_id": done}))
    assert continue_unfinished_run(*given, mlflow.MlflowClient()) == given


def _pipeline_run(status: str, tags: dict[str, str]) -> str:
    with mlflow.start_run() as run:
        mlflow.set_tags({STEP_TAG: "pipeline", **tags})
    mlflow.MlflowClient().set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_resume_a_pipeline_refuses_what_cannot_be_resumed(mlflow_store, tmp_path: Path) -> None:
    client = mlflow.MlflowClient()
    with pytest.raises(PipelineError, match="that pipeline FINISHED; there is nothing to resume"):
        plan_resume(client, _pipeline_run("FINISHED", {}))
    fetch_run = _fake_run("fetch", tmp_path, REQUIRED_ARTIFACTS["fetch"])
    with pytest.raises(PipelineError, match=r"resume='\w+': not a pipeline run \(step tag 'fetch'\)"):
        plan_resume(client, fetch_run)
    with pytest.raises(PipelineError, match="no such run"):
        plan_resume(client, "0123456789abcdef0123456789abcdef")


def test_resume_a_pipeline_reuses_finished_steps_and_continues_training(mlflow_store, tmp_path: Path) -> None:
    client = mlflow.MlflowClient()
    fetch_run = _fake_run("fetch", tmp_path, REQUIRED_ARTIFACTS["fetch"])
    failed = _pipeline_run("FAILED", {"pipeline.data_run_id": fetch_run})
    with mlflow.start_run(tags={"mlflow.parentRunId": failed}) as killed:
        mlflow.set_tag(STEP_TAG, "train")
        (tmp_path / "last.pt").write_text("x")
        mlflow.log_artifact(str(tmp_path / "last.pt"), "checkpoints")
    client.set_terminated(killed.info.run_id, "FAILED")
    steps, upstream, finished = plan_resume(client, failed)
    assert steps == ["train", "build", "systemtest", "promote"]
    assert finished == {"fetch": fetch_run}
    assert upstream == {"data_run_id": fetch_run, "resume_run_id": killed.info.run_id}


def test_an_unreachable_tracking_server_is_one_clear_error_before_any_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri("http://127.0.0.1:1")
    try:
        cfg = OmegaConf.create({"resume": {}})
        assert run_pipeline(cfg).exit_code == 1
    finally:
        mlflow.set_tracking_uri("")
    assert "MLflow tracking server http://127.0.0.1:1 is unreachable (ConnectionError" in caplog.text
    assert mlflow.active_run() is None
