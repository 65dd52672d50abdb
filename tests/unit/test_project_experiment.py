"""The project's own experiment: MLflow's default while working in the project, through the
entry point the installed project registers; MLflow's own ways of choosing still win."""

from __future__ import annotations

import shutil
from importlib.metadata import entry_points
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from cifar_pipeline.orchestrator import experiment
from cifar_pipeline.orchestrator.experiment import PROJECT_NAME, ProjectExperimentProvider

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def in_a_copy(mlflow_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory is a copy of the project (its MLproject is what makes it one)."""
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(ROOT / "MLproject", copy / "MLproject")
    monkeypatch.chdir(copy)
    return copy


def experiment_name_of_new_run() -> str:
    with mlflow.start_run() as run:
        experiment_id = run.info.experiment_id
    return MlflowClient().get_experiment(experiment_id).name


def test_the_project_name_is_the_mlproject_name() -> None:
    assert yaml.safe_load((ROOT / "MLproject").read_text())["name"] == PROJECT_NAME


def test_the_installed_project_registers_the_provider_with_mlflow() -> None:
    [entry] = [e for e in entry_points(group="mlflow.default_experiment_provider") if e.name == PROJECT_NAME]
    assert entry.load() is ProjectExperimentProvider


@pytest.mark.usefixtures("in_a_copy")
def test_runs_started_in_the_project_go_to_its_experiment_made_once() -> None:
    assert experiment_name_of_new_run() == PROJECT_NAME
    assert experiment_name_of_new_run() == PROJECT_NAME
    assert [e.name for e in MlflowClient().search_experiments()].count(PROJECT_NAME) == 1


@pytest.mark.usefixtures("in_a_copy")
@pytest.mark.parametrize("variable", ["MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"])
def test_mlflows_environment_variables_still_win(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = MlflowClient().create_experiment("chosen")
    monkeypatch.setenv(variable, "chosen" if variable.endswith("NAME") else chosen)
    assert experiment_name_of_new_run() == "chosen"
    assert MlflowClient().get_experiment_by_name(PROJECT_NAME) is None


@pytest.mark.usefixtures("mlflow_store")
def test_elsewhere_mlflow_keeps_its_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "MLproject").write_text("name: another-project\n")
    monkeypatch.chdir(other)
    assert experiment_name_of_new_run() == "Default"
    assert not ProjectExperimentProvider().in_context()


def test_a_deleted_project_experiment_is_an_error_naming_the_way_back(in_a_copy: Path) -> None:
    client = MlflowClient()
    experiment_id = client.create_experiment(PROJECT_NAME)
    client.delete_experiment(experiment_id)
    with pytest.raises(RuntimeError, match=f"mlflow experiments restore --experiment-id {experiment_id}"):
        experiment.project_experiment_id()


def test_make_ui_prints_the_runs_view_of_the_project_experiment(
    mlflow_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment.main(["--tracking-uri", mlflow_store, "--port", "5123"])
    made = MlflowClient().get_experiment_by_name(PROJECT_NAME)
    assert made is not None
    expected = f"http://127.0.0.1:5123/#/experiments/{made.experiment_id}/runs?workflowType=machine_learning"
    assert capsys.readouterr().out == f"pipeline runs: {expected}\n"
