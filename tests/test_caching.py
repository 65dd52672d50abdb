"""Step keys, cache decisions and their explanations, on a real (throwaway) MLflow store."""

import os
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from cifar_pipeline.orchestrator.caching import (
    StepCache,
    StepKey,
    differences,
    fetch_input,
    parse_rerun,
    step_key,
)
from cifar_pipeline.tracking import REQUIRED_ARTIFACTS, STEP_TAG, STEPS

TRAIN_PARAMS = {"data_run_id": "d" * 32, "seed": 0, "epochs": 3, "lr": 0.01}


def finished_run(step: str, tmp_path: Path, tags: dict[str, str] | None = None) -> str:
    """A FINISHED run of `step` with the artifacts the next step needs."""
    with mlflow.start_run() as run:
        mlflow.set_tags({STEP_TAG: step, **(tags or {})})
        for artifact in REQUIRED_ARTIFACTS[step]:
            folder, _, name = artifact.rpartition("/")
            local = tmp_path / run.info.run_id / name
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text("x")
            mlflow.log_artifact(str(local), folder)
    return run.info.run_id


def cache(**kwargs) -> StepCache:
    settings = {"enabled": True, "rerun": set(), "image_exists": lambda image_id: True, **kwargs}
    return StepCache(MlflowClient(), **settings)


@pytest.fixture
def data_run(mlflow_store, tmp_path: Path) -> str:
    return finished_run("fetch", tmp_path, {"data.digest": "sha256:aaa"})


def test_the_key_ignores_run_ids_but_not_content(mlflow_store, data_run: str, tmp_path: Path) -> None:
    client = MlflowClient()
    key, _ = step_key(client, "train", "sha256:img", TRAIN_PARAMS, {"data_run_id": data_run})
    assert key is not None
    assert "data_run_id" not in key.params
    assert key.inputs == {"data": "sha256:aaa"}
    # other data run, same content: same key
    same_content = finished_run("fetch", tmp_path, {"data.digest": "sha256:aaa"})
    again, _ = step_key(client, "train", "sha256:img", TRAIN_PARAMS, {"data_run_id": same_content})
    assert again is not None
    assert again.digest == key.digest
    # any component changes it
    other_data = finished_run("fetch", tmp_path, {"data.digest": "sha256:bbb"})
    variants = [
        step_key(client, "train", "sha256:img", TRAIN_PARAMS, {"data_run_id": other_data})[0],
        step_key(client, "train", "sha256:new", TRAIN_PARAMS, {"data_run_id": data_run})[0],
        step_key(client, "train", "sha256:img", {**TRAIN_PARAMS, "epochs": 4}, {"data_run_id": data_run})[0],
    ]
    assert all(v is not None and v.digest != key.digest for v in variants)


def test_continuing_a_killed_train_run_is_never_cached(mlflow_store, data_run: str) -> None:
    params = {**TRAIN_PARAMS, "resume_run_id": "r" * 32}
    key, why = step_key(MlflowClient(), "train", "img", params, {"data_run_id": data_run})
    assert key is None
    assert "r" * 32 in why


def test_fetch_input_identity(tmp_path: Path) -> None:
    assert fetch_input({"source": "digits"}) == ("", "")
    assert fetch_input({"source": "cifar10", "data_url": "http://mirror/c.tgz"}) == ("", "")
    assert fetch_input(
        {"source": "imagefolder", "data_url": "http://x/a.zip", "data_checksum": "sha256:1"}
    ) == ("", "")
    none, why = fetch_input({"source": "imagefolder", "data_url": "https://x/a.zip"})
    assert none is None
    assert "no data_checksum" in why
    folder = tmp_path / "pets"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "1.png").write_bytes(b"12345")
    before, _ = fetch_input({"source": "imagefolder", "data_url": str(folder)})
    assert before == fetch_input({"source": "imagefolder", "data_url": str(folder)})[0]
    (folder / "cat" / "2.png").write_bytes(b"1")
    after, _ = fetch_input({"source": "imagefolder", "data_url": str(folder)})
    assert after != before
    os.utime(folder / "cat" / "1.png", ns=(1, 1))
    assert fetch_input({"source": "imagefolder", "data_url": str(folder)})[0] != after


def test_differences_name_what_changed() -> None:
    old = StepKey("train", "sha256:img", {"epochs": 3, "lr": 0.01}, {"data": "sha256:aaa"})
    new = StepKey("train", "sha256:new", {"epochs": 4, "lr": 0.01, "nesterov": True}, {"data": "sha256:bbb"})
    assert differences(new, old.components()) == [
        "step image changed (code or dependencies)",
        "params: epochs 3→4, nesterov (unset)→true",
        "upstream data changed",
    ]
    assert differences(old, old.components()) == []


def test_hit_on_the_same_key_miss_with_explanation_otherwise(
    mlflow_store, data_run: str, tmp_path: Path
) -> None:
    upstream = {"data_run_id": data_run}
    first = cache().decide("train", "img", TRAIN_PARAMS, upstream)
    assert first.reuse is None
    assert first.reasons == ["no earlier run of this step"]
    train_run = finished_run("train", tmp_path)
    assert first.key is not None
    cache().record(train_run, first.key)

    hit = cache().decide("train", "img", TRAIN_PARAMS, upstream)
    assert hit.reuse is not None
    assert hit.reuse.info.run_id == train_run
    assert hit.action == "reused"

    miss = cache().decide("train", "img", {**TRAIN_PARAMS, "epochs": 20}, upstream)
    assert miss.reuse is None
    assert miss.reasons == [f"vs run {train_run}: params: epochs 3→20"]

    assert cache(enabled=False).decide("train", "img", TRAIN_PARAMS, upstream).reasons == [
        "cache disabled (cache=false)"
    ]
    forced = cache(rerun={"train", "build"}).decide("train", "img", TRAIN_PARAMS, upstream)
    assert forced.reuse is None
    assert forced.reasons == ["rerun requested (rerun=build,train)"]


def test_a_run_whose_artifacts_are_gone_is_not_reused(mlflow_store, data_run: str, tmp_path: Path) -> None:
    upstream = {"data_run_id": data_run}
    key = cache().decide("train", "img", TRAIN_PARAMS, upstream).key
    assert key is not None
    with mlflow.start_run() as run:  # FINISHED, keyed, but without its model
        mlflow.set_tag(STEP_TAG, "train")
    cache().record(run.info.run_id, key)
    decision = cache().decide("train", "img", TRAIN_PARAMS, upstream)
    assert decision.reuse is None
    assert decision.reasons == [f"earlier run {run.info.run_id} has this key, but its artifacts are gone"]


def test_a_build_whose_image_was_removed_is_not_reused(mlflow_store, tmp_path: Path) -> None:
    model_run = finished_run("train", tmp_path, {"model.digest": "sha256:m"})
    params = {"model_run_id": model_run, "image_repo": "cifar-classifier"}
    key = cache().decide("build", "img", params, {"model_run_id": model_run}).key
    assert key is not None
    build_run = finished_run("build", tmp_path, {"image.id": "sha256:gone"})
    cache().record(build_run, key)
    assert cache().decide("build", "img", params, {"model_run_id": model_run}).reuse is not None
    decision = cache(image_exists=lambda image_id: False).decide(
        "build", "img", params, {"model_run_id": model_run}
    )
    assert decision.reuse is None
    assert "no longer in the Docker engine" in decision.reasons[0]


def test_rerun_names_are_checked() -> None:
    assert parse_rerun("train, build", STEPS) == {"train", "build"}
    assert parse_rerun("", STEPS) == set()
    with pytest.raises(ValueError, match=r"cache.rerun='trian': unknown step trian; expected some of fetch"):
        parse_rerun("trian", STEPS)
