"""Data validation in the fetch step, in-process against a throwaway MLflow store, and the
orchestrator's choice of reference. Generated CIFAR-format tarballs and image folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from PIL import Image

from cifar_pipeline.dataset import Split
from cifar_pipeline.orchestrator.hooks import fetch as fetch_hooks
from cifar_pipeline.orchestrator.planning.cache import StepKey
from cifar_pipeline.orchestrator.planning.plan import PipelineError
from cifar_pipeline.promotion.registry import Champion
from cifar_pipeline.sources import cifar10
from cifar_pipeline.tracking import FETCH, STEP_TAG, UpstreamError, require_step_run, upstream_tag
from cifar_pipeline.validation.report import ValidationFailed
from steps.fetch import step
from tests.helpers import CLASS_NAMES, md5_spec, write_image_folder

pytestmark = pytest.mark.slow


def latest(client: MlflowClient) -> Run:
    return client.search_runs(["0"], order_by=["attributes.start_time DESC"], max_results=1)[0]


def fetch_tarball(path: Path, *extra: str) -> None:
    step.main(["--source", "cifar10", "--data-url", str(path), "--data-checksum", md5_spec(path), *extra])


def tarball(path: Path, train: Split, test: Split) -> Path:
    cifar10.write_archive(path, train, test, CLASS_NAMES)
    return path


def splits(seed: int = 0, count: int = 200) -> tuple[Split, Split]:
    rng = np.random.default_rng(seed)

    def split() -> Split:
        return Split(rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), np.arange(count) % 10)

    return split(), split()


def report(client: MlflowClient, run_id: str) -> dict:
    return json.loads(Path(client.download_artifacts(run_id, "validation/report.json")).read_text())


def test_a_test_image_copied_into_training_stops_the_fetch_naming_the_count(
    mlflow_store: str, tmp_path: Path
) -> None:
    train, test = splits()
    train.images[:3] = test.images[[4, 9, 9]]  # two distinct test images, one of them twice
    with pytest.raises(ValidationFailed, match="error: leakage: 2 test images also in the training split"):
        fetch_tarball(tarball(tmp_path / "leaky.tar.gz", train, test))
    client = MlflowClient(mlflow_store)
    run = latest(client)
    assert run.info.status == "FAILED"
    # Nothing a later step could train on; the report that says why.
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"logs", "validation"}
    assert run.data.tags["validation.status"] == "failed"
    assert run.data.tags["validation.errors"] == "1"
    assert run.data.metrics["validation.leakage"] == 2
    leakage = next(c for c in report(client, run.info.run_id)["checks"] if c["name"] == "leakage")
    assert (leakage["value"], leakage["threshold"], leakage["verdict"]) == (2, 0, "error")
    with pytest.raises(UpstreamError, match="status FAILED"):
        require_step_run(run.info.run_id, FETCH, client)


def test_the_same_data_twice_has_no_anomaly(mlflow_store: str, tmp_path: Path) -> None:
    path = tarball(tmp_path / "cifar.tar.gz", *splits())
    fetch_tarball(path)
    client = MlflowClient(mlflow_store)
    first = latest(client)
    assert first.data.tags["validation.status"] == "passed"
    assert first.data.tags["validation.reference"] == "none"
    fetch_tarball(path, "--reference-run-id", first.info.run_id)
    second = latest(client)
    assert second.info.status == "FINISHED"
    assert second.data.tags["validation.status"] == "passed"
    assert second.data.tags["validation.anomalies"] == "0"
    assert second.data.tags["validation.reference"] == first.info.run_id
    content = report(client, second.info.run_id)
    assert content["reference"]["data_digest"] == first.data.tags["data.digest"]
    assert {c["name"] for c in content["checks"]} >= {"drift.class_shares", "drift.pixels.blue", "leakage"}
    assert all(c["verdict"] == "ok" for c in content["checks"])
    logged = {a.path for a in client.list_artifacts(second.info.run_id, "validation")}
    assert logged == {
        f"validation/{name}" for name in ("statistics.json", "schema.json", "report.json", "report.png")
    }
    assert Image.open(client.download_artifacts(second.info.run_id, "validation/report.png")).format == "PNG"


def test_darkened_data_is_flagged_as_drift_and_under_warn_the_data_is_logged(
    mlflow_store: str, tmp_path: Path
) -> None:
    train, test = splits()
    fetch_tarball(tarball(tmp_path / "cifar.tar.gz", train, test))
    client = MlflowClient(mlflow_store)
    reference = latest(client).info.run_id
    darker = [Split(split.images // 2, split.labels) for split in (train, test)]
    fetch_tarball(tarball(tmp_path / "dark.tar.gz", *darker), "--reference-run-id", reference)
    run = latest(client)
    require_step_run(run.info.run_id, FETCH, client)  # warn: FINISHED, with its data
    assert run.data.tags["validation.status"] == "warned"
    summary = run.data.tags["validation.summary"].splitlines()
    assert [line.split(":")[1].strip() for line in summary] == ["drift.pixels.red", "drift.pixels.green",
                                                                "drift.pixels.blue"]  # fmt: skip
    divergence = run.data.metrics["validation.drift.pixels.red"]
    assert divergence > 0.2
    assert f"Jensen-Shannon divergence {divergence:.4f}" in summary[0]
    chosen = fetch_hooks.Reference(reference, "digest", f"fetch run {reference}")
    assert fetch_hooks.summary_lines(run, chosen) == [
        f"warned against fetch run {reference}: 3 anomalies",
        *summary,
    ]
    assert fetch_hooks.refusal(run) == ""
    with pytest.raises(ValidationFailed, match=r"error: drift\.pixels\.red"):
        fetch_tarball(tmp_path / "dark.tar.gz", "--reference-run-id", reference, "--drift-policy", "error")


def test_a_new_class_is_a_schema_anomaly(mlflow_store: str, tmp_path: Path) -> None:
    step.main(
        [
            "--source",
            "imagefolder",
            "--data-url",
            str(write_image_folder(tmp_path / "a", {"cat": 8, "dog": 8})),
        ]
    )
    client = MlflowClient(mlflow_store)
    reference = latest(client).info.run_id
    more = write_image_folder(tmp_path / "b", {"cat": 8, "dog": 8, "bird": 8}, seed=1)
    with pytest.raises(ValidationFailed, match=r"error: schema\.classes: new class 'bird'"):
        step.main(["--source", "imagefolder", "--data-url", str(more), "--reference-run-id", reference])
    refused = latest(client)
    assert refused.data.tags["validation.status"] == "failed"
    assert fetch_hooks.refusal(refused).startswith(
        f"data validation failed (fetch run {refused.info.run_id}), stopping before training: "
        "error: schema.classes: new class 'bird'"
    )


def test_blank_images_in_a_folder_are_flagged(mlflow_store: str, tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "pets", {"cat": 10, "dog": 10})
    Image.new("RGB", (40, 30), (250, 250, 250)).save(folder / "cat" / "white.png")
    Image.new("L", (20, 20), 0).save(folder / "dog" / "black.png")
    step.main(["--source", "imagefolder", "--data-url", str(folder)])
    run = latest(MlflowClient(mlflow_store))
    assert run.info.status == "FINISHED"
    assert run.data.tags["validation.status"] == "warned"
    assert run.data.tags["validation.summary"].startswith("warn: blank: 2 near-constant images")


def test_a_reference_that_is_not_a_fetch_run_or_has_no_statistics_is_refused_naming_it(
    mlflow_store: str, tmp_path: Path
) -> None:
    client = MlflowClient(mlflow_store)
    with mlflow.start_run() as other:
        mlflow.set_tag(STEP_TAG, "train")
    with pytest.raises(
        UpstreamError, match=f"reference_run_id='{other.info.run_id}': is a run of step 'train'"
    ):
        step.main(["--source", "digits", "--reference-run-id", other.info.run_id])
    step.main(["--source", "digits"])
    old = latest(client)
    shutil.rmtree(Path(urlparse(old.info.artifact_uri).path) / "validation")  # as fetched before validation
    with pytest.raises(
        UpstreamError,
        match=f"reference_run_id='{old.info.run_id}': fetch run has no validation/statistics.json",
    ):
        step.main(["--source", "digits", "--reference-run-id", old.info.run_id])
    with pytest.raises(PipelineError, match=f"validation.reference='{old.info.run_id}': fetch run has no"):
        fetch_hooks.reference(client, OmegaConf.create({"reference": old.info.run_id}), None)


def fake_champion(client: MlflowClient, data_run_id: str) -> Champion:
    with mlflow.start_run() as train:
        mlflow.set_tags({STEP_TAG: "train", upstream_tag("data_run_id"): data_run_id})
    return Champion("cifar-classifier", "champion", "3", train.info.run_id, "sha256:m")


def test_the_default_reference_is_the_champion_s_data(mlflow_store: str) -> None:
    client = MlflowClient(mlflow_store)
    step.main(["--source", "digits"])
    data = latest(client)
    cfg = OmegaConf.create({"reference": "champion"})
    chosen = fetch_hooks.reference(client, cfg, fake_champion(client, data.info.run_id))
    assert (chosen.run_id, chosen.data_digest) == (data.info.run_id, data.data.tags["data.digest"])
    assert chosen.note == "the data of champion version 3"
    assert fetch_hooks.reference(client, cfg, None).note == "no reference (no champion model yet)"
    none = fetch_hooks.reference(client, OmegaConf.create({"reference": "none"}), fake_champion(client, "x"))
    assert (none.run_id, none.data_digest) == ("", "none")
    # A champion whose data has no statistics (fetched before validation existed): no reference.
    shutil.rmtree(Path(urlparse(data.info.artifact_uri).path) / "validation")
    unusable = fetch_hooks.reference(client, cfg, fake_champion(client, data.info.run_id))
    assert (unusable.run_id, unusable.data_digest) == ("", "none")


def test_a_fetch_run_without_reference_also_stands_for_validation_against_its_own_data(
    mlflow_store: str,
) -> None:
    client = MlflowClient(mlflow_store)
    step.main(["--source", "digits"])
    run = latest(client)
    key = StepKey("fetch", "env", "proj", {"source": "digits"}, {fetch_hooks.KEY_INPUT: "none"})
    after = fetch_hooks.key_after(key, run)
    assert after is not None
    assert after.inputs[fetch_hooks.KEY_INPUT] == run.data.tags["data.digest"]
    assert after.params == key.params
    with_reference = StepKey("fetch", "env", "proj", {"source": "digits"}, {fetch_hooks.KEY_INPUT: "abc"})
    assert fetch_hooks.key_after(with_reference, run) is None
    reference = fetch_hooks.Reference.none("no reference (no champion model yet)")
    assert fetch_hooks.summary_lines(run, reference) == [
        "passed against no reference (no champion model yet): no anomalies"
    ]
