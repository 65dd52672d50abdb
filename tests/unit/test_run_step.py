"""`python -m cifar_pipeline.orchestrator.run_step`: bad input is refused, naming it, before a
container or a run exists; the step gets the pipeline's Docker flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from cifar_pipeline.orchestrator import run_step
from cifar_pipeline.step_declarations import PIPELINE_STEPS


def test_a_parameter_without_a_value_is_refused_naming_it(
    mlflow_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_step.main(["fetch", "-P", "source"]) == 2
    assert "error: step fetch: -P 'source': expected name=value" in capsys.readouterr().err
    assert MlflowClient().search_runs([e.experiment_id for e in MlflowClient().search_experiments()]) == []


def test_missing_local_data_is_refused_before_any_run(
    mlflow_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no pets"
    assert run_step.main(["fetch", "-P", "source=imagefolder", "-P", f"data_url={missing}"]) == 2
    assert f"data.data_url='{missing}': no such file or directory" in capsys.readouterr().err
    assert MlflowClient().search_runs([e.experiment_id for e in MlflowClient().search_experiments()]) == []


def test_an_unknown_step_names_the_steps(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run_step.main(["serve"])
    assert exited.value.code == 2
    assert "invalid choice: 'serve'" in capsys.readouterr().err


def test_local_data_is_mounted_read_only_at_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pets").mkdir()
    monkeypatch.chdir(tmp_path)
    params = {"source": "imagefolder", "data_url": "pets"}
    assert run_step.read_only_mounts(PIPELINE_STEPS["fetch"], params) == [tmp_path / "pets"]
    assert params["data_url"] == str(tmp_path / "pets")
    assert (
        run_step.read_only_mounts(
            PIPELINE_STEPS["fetch"], {"source": "cifar10", "data_url": "https://example.org/c.tgz"}
        )
        == []
    )
    assert run_step.read_only_mounts(PIPELINE_STEPS["train"], {"data_url": "pets"}) == []


def test_docker_flags_are_read_as_mlflow_run_reads_them() -> None:
    assert run_step.docker_flags(["gpus=all", "privileged", "env=A=b"]) == {
        "gpus": "all",
        "privileged": True,
        "env": "A=b",
    }
