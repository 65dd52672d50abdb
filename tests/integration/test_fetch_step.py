"""The fetch step in-process against a throwaway MLflow store: artifacts, tags, reuse, clean refusals."""

import json
import logging
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from cifar_pipeline.checksums import ChecksumError
from cifar_pipeline.dataset import Dataset, read_dataset
from cifar_pipeline.sources.errors import SourceError
from cifar_pipeline.tracking import FETCH, REQUIRED_ARTIFACTS, STEP_TAG, require_step_run
from steps.fetch import step
from tests.helpers import md5_spec, write_image_folder
from tests.http_files import FileServer, serve


def last_run(client: MlflowClient) -> mlflow.entities.Run:
    return client.search_runs(["0"], order_by=["attributes.start_time DESC"], max_results=1)[0]


def artifact_paths(client: MlflowClient, run_id: str, folder: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, folder)}


def fetched(client: MlflowClient, run_id: str, tmp_path: Path) -> Dataset:
    (tmp_path / run_id).mkdir(parents=True)
    return read_dataset(Path(client.download_artifacts(run_id, "data", str(tmp_path / run_id))))


@pytest.mark.slow
def test_digits_run_logs_data_plots_tags_and_inputs(mlflow_store: str, tmp_path: Path) -> None:
    step.main(["--source", "digits"])
    client = MlflowClient(mlflow_store)
    run = last_run(client)
    require_step_run(run.info.run_id, FETCH, client)  # FINISHED, all data artifacts present
    plots = artifact_paths(client, run.info.run_id, "plots")
    assert plots == {"plots/samples.png", "plots/class_balance.png"}
    assert Image.open(client.download_artifacts(run.info.run_id, "plots/samples.png")).format == "PNG"
    dataset = fetched(client, run.info.run_id, tmp_path)
    manifest = dataset.manifest
    assert run.data.tags[STEP_TAG] == FETCH
    assert run.data.tags["data.digest"] == manifest["digest"]
    assert run.data.tags["data.input_key"] == manifest["source"]["input_key"]
    assert run.data.params["num_train"] == str(len(dataset.train.labels))
    assert run.data.params["dataset_bytes"] == str(manifest["bytes"])
    assert sum(manifest["class_counts"]["train"]) == len(dataset.train.labels)
    assert {"created", "code_version", "mean", "std", "sha256"} <= set(manifest)
    assert {i.dataset.digest for i in run.inputs.dataset_inputs} == {manifest["digest"][:12]}
    assert len(run.inputs.dataset_inputs) == 2  # train and test


@pytest.mark.slow
def test_reuse_copies_an_earlier_identical_fetch(mlflow_store: str, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    client = MlflowClient(mlflow_store)
    step.main(["--source", "digits"])
    first = last_run(client)
    step.main(["--source", "digits", "--reuse", "true"])
    second = last_run(client)
    assert second.info.run_id != first.info.run_id
    assert second.data.tags["data.reused_from"] == first.info.run_id
    assert "already have it" in caplog.text
    require_step_run(second.info.run_id, FETCH, client)
    assert second.data.tags["data.digest"] == first.data.tags["data.digest"]
    # another split is another input: fetched afresh
    step.main(["--source", "digits", "--reuse", "true", "--split-seed", "1"])
    third = last_run(client)
    assert "data.reused_from" not in third.data.tags
    assert third.data.tags["data.digest"] != first.data.tags["data.digest"]


@pytest.mark.slow
def test_without_reuse_the_same_input_is_fetched_again(mlflow_store: str) -> None:
    client = MlflowClient(mlflow_store)
    step.main(["--source", "digits"])
    step.main(["--source", "digits"])
    assert "data.reused_from" not in last_run(client).data.tags


@pytest.mark.slow
def test_cifar10_from_http_mirror_with_reuse_by_checksum(mlflow_store: str, cifar_tarball, tmp_path) -> None:
    path, (train, _) = cifar_tarball
    client = MlflowClient(mlflow_store)
    state = FileServer(files={"/cifar.tgz": path.read_bytes()})
    with serve(state) as server:
        url = server.url("/cifar.tgz")
        args = ["--source", "cifar10", "--data-url", url, "--data-checksum", md5_spec(path)]
        step.main(args)
        first = last_run(client)
        step.main([*args, "--reuse", "true"])
    np.testing.assert_array_equal(fetched(client, first.info.run_id, tmp_path).train.images, train.images)
    assert last_run(client).data.tags["data.reused_from"] == first.info.run_id
    assert len(state.requests) == 1  # the reuse did not download


def test_imagefolder_directory(mlflow_store: str, tmp_path: Path) -> None:
    write_image_folder(tmp_path / "pets", {"cat": 8, "dog": 8})
    step.main(["--source", "imagefolder", "--data-url", str(tmp_path / "pets"), "--test-fraction", "0.25"])
    client = MlflowClient(mlflow_store)
    dataset = fetched(client, last_run(client).info.run_id, tmp_path / "out")
    assert dataset.class_names == ["cat", "dog"]
    assert dataset.manifest["class_counts"] == {"train": [6, 6], "test": [2, 2]}
    assert dataset.manifest["source"]["input_digest"].startswith("sha256:")


def test_refused_checksum_fails_the_run_and_logs_no_data(mlflow_store: str, cifar_tarball) -> None:
    path, _ = cifar_tarball
    client = MlflowClient(mlflow_store)
    with pytest.raises(ChecksumError, match="md5 checksum mismatch"):
        step.main(["--source", "cifar10", "--data-url", str(path), "--data-checksum", "md5:" + "0" * 32])
    run = last_run(client)
    assert run.info.status == "FAILED"
    assert artifact_paths(client, run.info.run_id) == {"logs"}  # the log only, no data or plots
    log_text = Path(client.download_artifacts(run.info.run_id, "logs/fetch.log")).read_text()
    assert "checksum mismatch" in log_text


def test_empty_class_is_refused_naming_it(mlflow_store: str, tmp_path: Path) -> None:
    (tmp_path / "pets" / "cat").mkdir(parents=True)
    (tmp_path / "pets" / "dog").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "pets" / "cat" / "a.png")
    with pytest.raises(SourceError, match="'dog'"):
        step.main(["--source", "imagefolder", "--data-url", str(tmp_path / "pets")])
    client = MlflowClient(mlflow_store)
    run = last_run(client)
    assert run.info.status == "FAILED"
    assert not set(REQUIRED_ARTIFACTS[FETCH]) & artifact_paths(client, run.info.run_id, "data")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--source", "imagenet"], "source='imagenet': expected one of cifar10, imagefolder, digits"),
        (["--source", "imagefolder"], "source=imagefolder needs data_url"),
        (["--source", "digits", "--data-url", "/x"], "data_url and data_checksum must be empty"),
        (["--source", "cifar10", "--data-checksum", "crc32:1"], "checksum 'crc32:1': expected"),
        (["--source", "digits", "--test-fraction", "1.5"], "test_fraction=1.5"),
    ],
)
def test_bad_parameters_exit_2_with_the_problem_named(mlflow_store: str, argv, message, caplog) -> None:
    with pytest.raises(SystemExit) as exit_info:
        step.run_main(FETCH, step.main, argv)
    assert exit_info.value.code == 2
    assert message in caplog.text
    assert last_run(MlflowClient(mlflow_store)).info.status == "FAILED"


@pytest.mark.slow
def test_manifest_is_json_with_per_file_checksums(mlflow_store: str, tmp_path: Path) -> None:
    step.main(["--source", "digits"])
    client = MlflowClient(mlflow_store)
    local = Path(client.download_artifacts(last_run(client).info.run_id, "data", str(tmp_path)))
    manifest = json.loads((local / "manifest.json").read_text())
    (local / "test_labels.npy").write_bytes((local / "test_labels.npy").read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ChecksumError, match=r"test_labels\.npy: sha256 mismatch"):
        read_dataset(local)  # what the train step calls before using the data
    arrays = {f"{s}_{k}.npy" for s in ("train", "test") for k in ("images", "labels")}
    assert set(manifest["sha256"]) == arrays
