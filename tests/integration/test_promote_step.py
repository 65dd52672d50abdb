"""The promote step against a real MLflow store and registry, with real ONNX models run by
ONNX Runtime. No Docker: the upstream runs are made here, as the pipeline's steps make them.

The models are tiny linear ONNX graphs over the mean of the red channel; every test image
is one flat colour, so which images a model gets right is set exactly by its class centres.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import onnx
import pytest
from mlflow.tracking import MlflowClient
from onnx import TensorProto, helper, numpy_helper

from cifar_pipeline.checksums import file_digest
from cifar_pipeline.dataset import Split, write_dataset
from cifar_pipeline.orchestrator.hooks.promote import champion as orchestrator_champion
from cifar_pipeline.orchestrator.planning.plan import PipelineError
from cifar_pipeline.promotion import registry
from cifar_pipeline.promotion.models import ModelUnavailable
from cifar_pipeline.promotion.rollback import main as rollback_main
from cifar_pipeline.tracking import STEP_TAG, upstream_tag
from steps.promote.step import main as promote

pytestmark = pytest.mark.slow

MODEL = "cifar-classifier"
CENTRES = [0.0, 60.0, 120.0, 180.0]  # each class's red value: a model with these gets every image right
PER_CLASS = 25  # test images per class, red = centre + 0..24


def flat_images(reds: list[float], green: int) -> np.ndarray:
    images = np.zeros((len(reds), 32, 32, 3), dtype=np.uint8)
    images[..., 0] = np.asarray(reds, dtype=np.uint8)[:, None, None]
    images[..., 1] = green  # train and test images differ in green: no test image is in training
    return images


def dataset_run(tmp_path: Path, names: list[str], train_green: int = 1) -> str:
    labels = np.repeat(np.arange(len(names)), PER_CLASS)
    reds = [CENTRES[label] + offset for label in range(len(names)) for offset in range(PER_CLASS)]
    folder = tmp_path / f"data-{len(list(tmp_path.glob('data-*')))}"
    manifest = write_dataset(
        folder,
        Split(flat_images(reds, train_green), labels),
        Split(flat_images(reds, 0), labels),
        names,
        {"source": "test"},
    )
    with mlflow.start_run() as run:
        mlflow.set_tags({STEP_TAG: "fetch", "data.digest": manifest["digest"]})
        mlflow.log_artifacts(str(folder), "data")
    return run.info.run_id


def linear_model(centres: list[float], bias: float = 0.0) -> onnx.ModelProto:
    """logits_c = -(red - centre_c)^2 + red^2 = 2 centre_c red - centre_c^2: the nearest centre wins."""
    weights = np.zeros((3, len(centres)), dtype=np.float32)
    weights[0] = [2 * c for c in centres]
    biases = np.array([-(c**2) + bias for c in centres], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["images"], ["pixels"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["pixels", "axes"], ["channels"], keepdims=0),
            helper.make_node("MatMul", ["channels", "weights"], ["scores"]),
            helper.make_node("Add", ["scores", "biases"], ["logits"]),
        ],
        "linear",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", 32, 32, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(centres)])],
        [
            numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(biases, "biases"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def candidate_run(tmp_path: Path, data_run_id: str, centres: list[float], bias: float = 0.0) -> str:
    """A train, build and passed system test run for this model; returns the system test run."""
    client = MlflowClient()
    names = json.loads(Path(client.download_artifacts(data_run_id, "data/manifest.json", str(tmp_path)))
                       .read_text())["class_names"]  # fmt: skip
    model = linear_model(centres, bias)
    with mlflow.start_run() as train:
        folder = tmp_path / train.info.run_id
        folder.mkdir()
        onnx.save(model, folder / "model.onnx")
        metadata = {"class_names": names, "data_run_id": data_run_id, "input": {"shape": [-1, 32, 32, 3]}}
        (folder / "metadata.json").write_text(json.dumps(metadata))
        np.savez(folder / "predictions.npz", indices=np.arange(2), logits=np.zeros((2, len(names))))
        mlflow.log_artifact(str(folder / "model.onnx"), "onnx")
        mlflow.log_artifact(str(folder / "metadata.json"), "onnx")
        mlflow.log_artifact(str(folder / "predictions.npz"), "reference")
        mlflow.onnx.log_model(model, name="model")
        mlflow.set_tags({
            STEP_TAG: "train",
            "model.digest": "sha256:" + file_digest(folder / "model.onnx"),
            upstream_tag("data_run_id"): data_run_id,
        })  # fmt: skip
    lineage = {upstream_tag("model_run_id"): train.info.run_id, upstream_tag("data_run_id"): data_run_id}
    with mlflow.start_run() as build:
        tag = f"cifar-classifier:{train.info.run_id}"
        mlflow.set_tags({STEP_TAG: "build", "image.tag": tag, "image.id": "sha256:" + "0" * 64, **lineage})
        mlflow.log_dict({"tag": tag}, "image/image.json")
    with mlflow.start_run() as systest:
        mlflow.set_tags({
            STEP_TAG: "systemtest",
            "systemtest.passed": "true",
            upstream_tag("image_run_id"): build.info.run_id,
            **lineage,
        })  # fmt: skip
        mlflow.log_dict({}, "systemtest/report.json")
    return systest.info.run_id


def run_promote(systemtest_run_id: str, *args: str) -> dict:
    promote(["--systemtest-run-id", systemtest_run_id, *args])
    client = MlflowClient()
    tested = upstream_tag("systemtest_run_id")
    query = f"tags.`{STEP_TAG}` = 'promote' and tags.`{tested}` = '{systemtest_run_id}'"
    [run] = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        query,
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert run.info.status == "FINISHED"
    report = json.loads(Path(client.download_artifacts(run.info.run_id, "promotion/report.json")).read_text())
    return {"run": run, **report}


def champion_version() -> str | None:
    found = registry.champion(MlflowClient(), MODEL, "champion")
    return found.version if found else None


def versions() -> dict[str, dict[str, str]]:
    return {str(v.version): v.tags for v in MlflowClient().search_model_versions(f"name = '{MODEL}'")}


@pytest.fixture
def data(mlflow_store: str, tmp_path: Path) -> str:
    return dataset_run(tmp_path, ["a", "b", "c", "d"])


@pytest.fixture
def first_champion(data: str, tmp_path: Path) -> str:
    """A perfect model, promoted: version 1 is the champion."""
    run_promote(candidate_run(tmp_path, data, CENTRES))
    assert champion_version() == "1"
    return data


def test_the_first_model_is_promoted_with_nothing_to_compare(data: str, tmp_path: Path) -> None:
    result = run_promote(candidate_run(tmp_path, data, CENTRES))
    assert (result["outcome"], result["promoted"], result["comparison"]) == ("promoted", True, None)
    assert "no champion" in result["reason"]
    assert champion_version() == "1"
    tags = versions()["1"]
    assert tags[registry.OUTCOME_TAG] == "promoted"
    assert tags[registry.IMAGE_TAG].startswith("cifar-classifier:")
    assert tags[registry.DATA_DIGEST_TAG] == MlflowClient().get_run(data).data.tags["data.digest"]
    assert MlflowClient().get_model_version(MODEL, "1").source.startswith("models:/m-")  # the LoggedModel


def test_a_worse_candidate_is_registered_but_not_promoted(first_champion: str, tmp_path: Path) -> None:
    swapped = [CENTRES[0], CENTRES[1], CENTRES[3], CENTRES[2]]  # classes c and d confused: half right
    result = run_promote(candidate_run(tmp_path, first_champion, swapped))
    assert (result["outcome"], result["promoted"]) == ("not_promoted", False)
    comparison = result["comparison"]
    assert (comparison["candidate_accuracy"], comparison["champion_accuracy"]) == (0.5, 1.0)
    assert (comparison["candidate_only_correct"], comparison["champion_only_correct"]) == (0, 50)
    assert comparison["candidate_per_class"] == [1.0, 1.0, 0.0, 0.0]
    assert comparison["p_value"] < 1e-10
    assert result["reason"].startswith("candidate 0.5000 vs champion 1.0000 on data ")
    assert champion_version() == "1"  # unchanged
    assert versions()["2"][registry.OUTCOME_TAG] == "not_promoted"
    assert versions()["2"][registry.COMPARED_WITH_TAG] == "1"
    run = result["run"]
    assert run.data.metrics["mcnemar_p_value"] == comparison["p_value"]
    assert run.data.metrics["promoted"] == 0.0
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "promotion")}
    assert "promotion/per_class_accuracy.png" in artifacts


def test_a_better_candidate_is_promoted_and_the_old_champion_kept_as_previous(
    data: str, tmp_path: Path
) -> None:
    run_promote(candidate_run(tmp_path, data, [CENTRES[0], CENTRES[1], CENTRES[3], CENTRES[2]]))
    result = run_promote(candidate_run(tmp_path, data, CENTRES))
    assert (result["outcome"], result["promoted"]) == ("promoted", True)
    assert champion_version() == "2"
    assert registry.aliased_version(MlflowClient(), MODEL, "previous").version == 1  # type: ignore[union-attr]
    # the one documented rollback command points the alias back, and says so
    assert rollback_main([]) == 0
    assert champion_version() == "1"
    assert registry.aliased_version(MlflowClient(), MODEL, "previous") is None
    assert registry.ROLLED_BACK_TAG in versions()["2"]
    assert rollback_main([]) == 2  # nothing left to roll back to


@pytest.mark.parametrize(("args", "promoted"), [((), True), (("--policy", "significantly_better"), False)])
def test_a_tie_is_what_the_policy_says(
    first_champion: str, tmp_path: Path, args: tuple, promoted: bool
) -> None:
    # the same predictions from other bytes: a different model, equally good
    result = run_promote(candidate_run(tmp_path, first_champion, CENTRES, bias=1.0), *args)
    assert result["comparison"]["difference"] == 0.0
    assert result["comparison"]["p_value"] == 1.0
    assert result["promoted"] is promoted
    assert champion_version() == ("2" if promoted else "1")


def test_a_small_loss_within_the_tolerance_is_promoted(first_champion: str, tmp_path: Path) -> None:
    slightly_worse = [-15.0, *CENTRES[1:]]  # red 23 and 24 go to class b: 2 of 100 images wrong
    strict = run_promote(candidate_run(tmp_path, first_champion, slightly_worse))
    assert strict["comparison"]["difference"] == pytest.approx(-0.02)
    assert strict["promoted"] is False
    tolerant = run_promote(candidate_run(tmp_path, first_champion, slightly_worse), "--tolerance", "0.02")
    assert tolerant["promoted"] is True
    # the same model bytes are one version, whose tags carry the latest decision
    assert champion_version() == "2"
    assert sorted(versions()) == ["1", "2"]
    assert versions()["2"][registry.OUTCOME_TAG] == "promoted"


def test_a_champion_on_other_classes_is_not_compared_unless_forced(
    first_champion: str, tmp_path: Path
) -> None:
    other = dataset_run(tmp_path, ["w", "x", "y", "z"])
    result = run_promote(candidate_run(tmp_path, other, CENTRES, bias=1.0))
    assert (result["outcome"], result["comparison"]) == ("not_promoted", None)
    assert (
        "trained on classes ['a', 'b', 'c', 'd'], the candidate on ['w', 'x', 'y', 'z']" in result["reason"]
    )
    assert champion_version() == "1"
    forced = run_promote(candidate_run(tmp_path, other, CENTRES, bias=1.0), "--force", "true")
    assert (forced["outcome"], forced["promoted"]) == ("promoted_forced", True)
    assert champion_version() == "2"


def test_a_champion_trained_on_the_candidates_test_images_is_not_compared(data: str, tmp_path: Path) -> None:
    # the champion's training images are the candidate's test images (green 0 in both)
    leaky = dataset_run(tmp_path, ["a", "b", "c", "d"], train_green=0)
    run_promote(candidate_run(tmp_path, leaky, CENTRES))
    result = run_promote(candidate_run(tmp_path, data, CENTRES, bias=1.0))
    assert result["comparison"] is None
    assert "was trained on 100 of the candidate's 100 test images" in result["reason"]
    assert champion_version() == "1"


def test_the_champion_itself_is_not_compared_or_registered_again(first_champion: str, tmp_path: Path) -> None:
    [systest] = MlflowClient().search_runs(["0"], f"tags.`{STEP_TAG}` = 'systemtest'")
    result = run_promote(systest.info.run_id)
    assert result["outcome"] == "already_champion"
    assert list(versions()) == ["1"]


def test_an_unloadable_champion_is_a_clear_error_before_anything_is_promoted(
    first_champion: str, tmp_path: Path
) -> None:
    client = MlflowClient()
    champion_run = client.get_model_version(MODEL, "1").run_id
    store = Path(client.get_run(champion_run).info.artifact_uri.removeprefix("file://"))
    (store / "onnx" / "model.onnx").write_bytes(b"not a model")
    candidate = candidate_run(tmp_path, first_champion, CENTRES, bias=1.0)
    with pytest.raises(
        ModelUnavailable, match=r"champion cifar-classifier version 1: onnx/model.onnx of run \w+ is sha256:"
    ):
        promote(["--systemtest-run-id", candidate])
    assert list(versions()) == ["1"]  # nothing registered
    assert champion_version() == "1"
    # the orchestrator refuses before it trains when the champion's run cannot be used at all
    client.delete_run(champion_run)
    with pytest.raises(
        PipelineError, match=r"cifar-classifier@champion names version 1, whose model cannot be loaded"
    ):
        orchestrator_champion(client, _promote_settings())


def test_a_champion_that_moved_since_planning_stops_the_step(first_champion: str, tmp_path: Path) -> None:
    candidate = candidate_run(tmp_path, first_champion, CENTRES, bias=1.0)
    with pytest.raises(
        registry.ChampionMoved, match=r"names version 1, the pipeline planned with champion_version=none"
    ):
        promote(["--systemtest-run-id", candidate, "--champion-version", "none"])
    assert champion_version() == "1"


def _promote_settings():
    from omegaconf import OmegaConf

    return OmegaConf.create({"registered_model": MODEL, "alias": "champion"})
