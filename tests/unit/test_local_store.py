"""The project's experiment in a local sqlite store keeps proxied artifacts (`mlflow-artifacts:`),
which the host reads and writes without a server, in the folder a server of the store serves."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import mlflow
import pytest
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository
from mlflow.tracking import MlflowClient

from cifar_pipeline import local_store
from cifar_pipeline.local_store import artifacts_destination, proxied_path, sqlite_path
from cifar_pipeline.orchestrator.experiment import PROJECT_NAME, project_experiment_id


def test_the_installed_project_registers_the_repository_for_proxied_artifacts() -> None:
    [entry] = [e for e in entry_points(group="mlflow.artifact_repository") if e.name == "mlflow-artifacts"]
    assert entry.load() is local_store.artifact_repository


def test_an_orchestrator_without_the_installed_project_registers_it_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow.store.artifact import artifact_repository_registry as registry

    monkeypatch.setitem(
        registry.get_registered_artifact_repositories(), "mlflow-artifacts", MlflowArtifactsRepository
    )
    local_store.ensure_registered()
    registered = registry.get_registered_artifact_repositories()["mlflow-artifacts"]
    assert registered is local_store.artifact_repository


def test_a_sqlite_store_serves_its_proxied_artifacts_from_the_folder_beside_it(mlflow_store: str) -> None:
    repository = get_artifact_repository(
        "mlflow-artifacts:/cifar-pipeline/r1/artifacts", tracking_uri=mlflow_store
    )
    assert isinstance(repository, LocalArtifactRepository)
    assert Path(repository.artifact_dir) == Path.cwd() / "mlruns" / "cifar-pipeline" / "r1" / "artifacts"


def test_with_a_tracking_server_they_are_mlflows_own_proxied_artifacts() -> None:
    repository = get_artifact_repository(
        "mlflow-artifacts:/x/artifacts", tracking_uri="http://127.0.0.1:5000"
    )
    assert isinstance(repository, MlflowArtifactsRepository)
    assert repository.artifact_uri == "http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/x/artifacts"


def test_the_project_experiment_logs_and_reads_its_artifacts_without_a_server(mlflow_store: str) -> None:
    experiment_id = project_experiment_id()
    experiment = MlflowClient().get_experiment(experiment_id)
    assert experiment.artifact_location == f"mlflow-artifacts:/{PROJECT_NAME}"
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_text("hello", "notes/a.txt")
    assert run.info.artifact_uri == f"mlflow-artifacts:/{PROJECT_NAME}/{run.info.run_id}/artifacts"
    stored = Path.cwd() / "mlruns" / PROJECT_NAME / run.info.run_id / "artifacts" / "notes" / "a.txt"
    assert stored.read_text() == "hello"
    assert [a.path for a in MlflowClient().list_artifacts(run.info.run_id, "notes")] == ["notes/a.txt"]
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/notes/a.txt") == "hello"


def test_the_servers_own_setting_moves_the_artifacts_folder(
    mlflow_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", str(tmp_path / "elsewhere"))
    assert artifacts_destination(mlflow_store) == tmp_path / "elsewhere"
    with mlflow.start_run(experiment_id=project_experiment_id()) as run:
        mlflow.log_text("hello", "a.txt")
    assert (tmp_path / "elsewhere" / PROJECT_NAME / run.info.run_id / "artifacts" / "a.txt").exists()


def test_sqlite_uris_name_their_database_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_path("sqlite:///mlflow.db") == tmp_path / "mlflow.db"
    assert sqlite_path("sqlite:////srv/store/mlflow.db") == Path("/srv/store/mlflow.db")
    assert artifacts_destination("sqlite:////srv/store/mlflow.db") == Path("/srv/store/mlruns")
    with pytest.raises(ValueError, match="expected sqlite"):
        sqlite_path("http://127.0.0.1:5000")


@pytest.mark.parametrize("uri", ["mlflow-artifacts:/a/../../etc", "mlflow-artifacts:/../x"])
def test_a_path_that_leaves_the_artifacts_folder_is_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="leaves the artifacts folder"):
        proxied_path(uri)
