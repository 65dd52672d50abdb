"""Step keys, cache decisions and their explanations, on a real (throwaway) MLflow store."""

import os
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from cifar_pipeline.code_trace import CodeIdentityError, file_sha256
from cifar_pipeline.orchestrator.hooks import HookContext, load_hooks
from cifar_pipeline.orchestrator.hooks.fetch import fetch_input
from cifar_pipeline.orchestrator.planning.cache import StepCache, StepKey, differences, parse_rerun, step_key
from cifar_pipeline.orchestrator.reporting.report import PipelineReport
from cifar_pipeline.orchestrator.running.step_images import Environment
from cifar_pipeline.step_declarations import PIPELINE_STEPS
from cifar_pipeline.tracking import CODE_TRACE_ARTIFACT, REQUIRED_ARTIFACTS, STEP_TAG, STEPS

TRAIN_PARAMS = {"data_run_id": "d" * 32, "seed": 0, "epochs": 3, "lr": 0.01}
ENV = Environment("train", "sha256:env", {"numpy": "2.4.6", "torch": "2.14.1"})
# The project files the fake step runs "loaded", in a checkout of their own (see `checkout`).
LOADED = {"cifar_pipeline/model.py": "class Model: ...\n", "steps/train/step.py": "main()\n"}


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    for relative, text in LOADED.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def finished_run(
    step: str, tmp_path: Path, tags: dict[str, str] | None = None, root: Path | None = None
) -> str:
    """A FINISHED run of `step` with the artifacts the next step needs, and (given a
    checkout) the record of the code it loaded from there."""
    with mlflow.start_run() as run:
        mlflow.set_tags({STEP_TAG: step, **(tags or {})})
        if root is not None:
            mlflow.log_dict({f: file_sha256(root / f) for f in LOADED}, CODE_TRACE_ARTIFACT)
        for artifact in REQUIRED_ARTIFACTS[step]:
            folder, _, name = artifact.rpartition("/")
            local = tmp_path / run.info.run_id / name
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text("x")
            mlflow.log_artifact(str(local), folder)
    return run.info.run_id


class Engine:
    def __init__(self, present: bool) -> None:
        self.present = present

    def image_present(self, image_id: str) -> bool:
        return self.present


def cache(image_present: bool = True, **kwargs) -> StepCache:
    """The cache as the pipeline makes it: what a run's output lacks is asked of the step's hooks."""
    ctx = HookContext(OmegaConf.create({}), MlflowClient(), PipelineReport(), Engine(image_present))
    hooks = {d.name: load_hooks(d, ctx) for d in PIPELINE_STEPS}
    settings = {"enabled": True, "rerun": set(), **kwargs}
    return StepCache(MlflowClient(), output_gone=lambda step, run: hooks[step].output_gone(run), **settings)


@pytest.fixture
def data_run(mlflow_store, tmp_path: Path) -> str:
    return finished_run("fetch", tmp_path, {"data.digest": "sha256:aaa"})


def test_the_key_ignores_run_ids_but_not_content(mlflow_store, data_run: str, tmp_path: Path) -> None:
    client = MlflowClient()
    train = PIPELINE_STEPS["train"]
    key = step_key(client, train, ENV, TRAIN_PARAMS, {"data_run_id": data_run})
    assert "data_run_id" not in key.params
    assert key.inputs == {"data": "sha256:aaa"}
    # other data run, same content: same key
    same_content = finished_run("fetch", tmp_path, {"data.digest": "sha256:aaa"})
    again = step_key(client, train, ENV, TRAIN_PARAMS, {"data_run_id": same_content})
    assert again.digest == key.digest
    # any component changes it
    other_data = finished_run("fetch", tmp_path, {"data.digest": "sha256:bbb"})
    variants = [
        step_key(client, train, ENV, TRAIN_PARAMS, {"data_run_id": other_data}),
        step_key(client, train, Environment("train", "sha256:new"), TRAIN_PARAMS, {"data_run_id": data_run}),
        step_key(client, train, ENV, {**TRAIN_PARAMS, "epochs": 4}, {"data_run_id": data_run}),
    ]
    assert all(v.digest != key.digest for v in variants)


def test_continuing_a_killed_train_run_is_never_cached(mlflow_store, data_run: str) -> None:
    ctx = HookContext(OmegaConf.create({}), MlflowClient(), PipelineReport())
    resolved = load_hooks(PIPELINE_STEPS["train"], ctx).resolve(
        {"data_run_id": data_run, "resume_run_id": "r" * 32}
    )
    assert resolved.params == {"resume_run_id": "r" * 32}
    params = {**TRAIN_PARAMS, **resolved.params}
    decision = cache().decide(
        PIPELINE_STEPS["train"], ENV, params, {"data_run_id": data_run}, uncacheable=resolved.uncacheable
    )
    assert decision.key is None
    assert decision.reuse is None
    assert "r" * 32 in decision.reasons[0]


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
    old = StepKey(
        "train", "sha256:env", "sha256:p", {"epochs": 3, "lr": 0.01}, {"data": "sha256:aaa"}, ENV.packages
    )
    new = StepKey(
        "train",
        "sha256:new",
        "sha256:p2",
        {"epochs": 4, "lr": 0.01, "nesterov": True},
        {"data": "sha256:bbb"},
        {"numpy": "2.4.6", "torch": "2.15.0", "tqdm": "4.70.1"},
    )
    assert differences(new, old.components()) == [
        "environment changed: torch 2.14.1→2.15.0, tqdm (none)→4.70.1",
        "code changed: steps/train/MLproject",
        "params: epochs 3→4, nesterov (unset)→true",
        "upstream data changed",
    ]
    assert differences(old, old.components()) == []
    rebuilt = StepKey("train", "sha256:other", "sha256:p", old.params, old.inputs, ENV.packages)
    assert differences(rebuilt, old.components()) == [
        "environment changed: base image or dependency layers rebuilt"
    ]


def test_hit_on_the_same_key_miss_with_explanation_otherwise(
    mlflow_store, data_run: str, tmp_path: Path, checkout: Path
) -> None:
    upstream = {"data_run_id": data_run}
    first = cache(root=checkout).decide(PIPELINE_STEPS["train"], ENV, TRAIN_PARAMS, upstream)
    assert first.reuse is None
    assert first.reasons == ["no earlier run of this step"]
    train_run = finished_run("train", tmp_path, root=checkout)
    assert first.key is not None
    cache().record(train_run, first.key)

    hit = cache(root=checkout).decide(PIPELINE_STEPS["train"], ENV, TRAIN_PARAMS, upstream)
    assert hit.reuse is not None
    assert hit.reuse.info.run_id == train_run
    assert hit.action == "reused"

    miss = cache(root=checkout).decide(PIPELINE_STEPS["train"], ENV, {**TRAIN_PARAMS, "epochs": 20}, upstream)
    assert miss.reuse is None
    assert miss.reasons == [f"vs run {train_run}: params: epochs 3→20"]

    assert cache(enabled=False).decide(PIPELINE_STEPS["train"], ENV, TRAIN_PARAMS, upstream).reasons == [
        "cache disabled (cache=false)"
    ]
    forced = cache(rerun={"train", "build"}).decide(PIPELINE_STEPS["train"], ENV, TRAIN_PARAMS, upstream)
    assert forced.reuse is None
    assert forced.reasons == ["rerun requested (rerun=build,train)"]


def test_a_run_whose_artifacts_are_gone_is_not_reused(mlflow_store, data_run: str, tmp_path: Path) -> None:
    upstream = {"data_run_id": data_run}
    key = cache().decide(PIPELINE_STEPS["train"], ENV, TRAIN_PARAMS, upstream).key
    assert key is not None
    with mlflow.start_run() as run:  # FINISHED, keyed, but without its model
        mlflow.set_tag(STEP_TAG, "train")
    cache().record(run.info.run_id, key)
    decision = cache().decide(PIPELINE_STEPS["train"], ENV, TRAIN_PARAMS, upstream)
    assert decision.reuse is None
    assert decision.reasons == [f"earlier run {run.info.run_id} has this key, but its artifacts are gone"]


def test_a_build_whose_image_was_removed_is_not_reused(mlflow_store, tmp_path: Path, checkout: Path) -> None:
    model_run = finished_run("train", tmp_path, {"model.digest": "sha256:m"})
    params = {"model_run_id": model_run, "image_repo": "cifar-classifier"}
    build_env = Environment("build", "sha256:build-env")
    key = cache().decide(PIPELINE_STEPS["build"], build_env, params, {"model_run_id": model_run}).key
    assert key is not None
    build_run = finished_run("build", tmp_path, {"image.id": "sha256:gone"}, root=checkout)
    cache().record(build_run, key)
    assert (
        cache(root=checkout)
        .decide(PIPELINE_STEPS["build"], build_env, params, {"model_run_id": model_run})
        .reuse
        is not None
    )
    decision = cache(root=checkout, image_present=False).decide(
        PIPELINE_STEPS["build"], build_env, params, {"model_run_id": model_run}
    )
    assert decision.reuse is None
    assert "no longer in the Docker engine" in decision.reasons[0]


def test_a_promotion_stands_under_the_champion_it_saw_or_the_one_it_left(
    mlflow_store, tmp_path: Path, checkout: Path
) -> None:
    data_run = finished_run("fetch", tmp_path, {"data.digest": "d1"})
    lineage = {"data_run_id": data_run}
    model_run = finished_run("train", tmp_path, {"model.digest": "sha256:m", **_lineage(lineage)})
    lineage["model_run_id"] = model_run
    image_run = finished_run("build", tmp_path, {"image.id": "sha256:i", **_lineage(lineage)})
    lineage["image_run_id"] = image_run
    systest = finished_run("systemtest", tmp_path, _lineage(lineage))
    env = Environment("promote", "sha256:promote-env")
    params = {"systemtest_run_id": systest, "policy": "not_worse", "champion_version": "none"}
    upstream = {"systemtest_run_id": systest}

    def decide(champion: str, **kwargs):
        return cache(root=checkout, **kwargs).decide(
            PIPELINE_STEPS["promote"], env, params, upstream, {"champion": champion}
        )

    before = decide("none")
    assert before.key is not None
    assert before.key.inputs == {"model": "sha256:m", "data": "d1", "image": "sha256:i", "champion": "none"}
    MlflowClient().create_registered_model("cifar-classifier")
    MlflowClient().create_model_version("cifar-classifier", str(tmp_path / "model"), model_run)
    promote_run = finished_run(
        "promote",
        tmp_path,
        {"registered_model": "cifar-classifier", "registered_version": "1"},
        root=checkout,
    )
    after = StepKey(
        **{**before.key.__dict__, "inputs": {**before.key.inputs, "champion": "cifar-classifier/1:m"}}
    )
    cache().record(promote_run, before.key, after)

    assert decide("none").reuse is not None  # the registry as the decision saw it
    assert decide("cifar-classifier/1:m").reuse is not None  # as the decision left it
    moved = decide("cifar-classifier/7:other")
    assert moved.reuse is None
    assert "upstream champion changed" in moved.reasons[0]
    MlflowClient().delete_model_version("cifar-classifier", "1")
    gone = decide("none")
    assert gone.reuse is None
    assert "the version it registered (cifar-classifier 1) is gone" in gone.reasons[0]


def _lineage(runs: dict[str, str]) -> dict[str, str]:
    return {f"pipeline.upstream.{param}": run_id for param, run_id in runs.items()}


def test_rerun_names_are_checked() -> None:
    assert parse_rerun("train, build", STEPS) == {"train", "build"}
    assert parse_rerun("", STEPS) == set()
    with pytest.raises(ValueError, match=r"cache.rerun='trian': unknown step trian; expected some of fetch"):
        parse_rerun("trian", STEPS)


@pytest.fixture
def keyed_run(mlflow_store, data_run: str, tmp_path: Path, checkout: Path) -> str:
    """A reusable train run, keyed, whose code record matches `checkout`."""
    key = (
        cache(root=checkout).decide(PIPELINE_STEPS["train"], ENV, TRAIN_PARAMS, {"data_run_id": data_run}).key
    )
    assert key is not None
    run_id = finished_run("train", tmp_path, root=checkout)
    cache().record(run_id, key)
    return run_id


def test_a_changed_file_the_run_loaded_means_run_again_naming_it(
    keyed_run: str, data_run: str, checkout: Path
) -> None:
    upstream = {"data_run_id": data_run}
    (checkout / "cifar_pipeline" / "model.py").write_text("class Model: ...  # changed\n")
    decision = cache(root=checkout).decide(PIPELINE_STEPS["train"], ENV, TRAIN_PARAMS, upstream)
    assert decision.reuse is None
    assert decision.reasons == [f"vs run {keyed_run}: code changed: cifar_pipeline/model.py"]
    # changed back: the run is reused again
    (checkout / "cifar_pipeline" / "model.py").write_text(LOADED["cifar_pipeline/model.py"])
    assert cache(root=checkout).decide(PIPELINE_STEPS["train"], ENV, TRAIN_PARAMS, upstream).reuse is not None


def test_a_file_the_run_did_not_load_does_not_matter(keyed_run: str, data_run: str, checkout: Path) -> None:
    (checkout / "cifar_pipeline" / "probes.py").write_text("# only the system test loads this\n")
    decision = cache(root=checkout).decide(
        PIPELINE_STEPS["train"], ENV, TRAIN_PARAMS, {"data_run_id": data_run}
    )
    assert decision.reuse is not None
    assert decision.reuse.info.run_id == keyed_run


def test_a_removed_file_means_run_again(keyed_run: str, data_run: str, checkout: Path) -> None:
    (checkout / "steps" / "train" / "step.py").unlink()
    decision = cache(root=checkout).decide(
        PIPELINE_STEPS["train"], ENV, TRAIN_PARAMS, {"data_run_id": data_run}
    )
    assert decision.reuse is None
    assert decision.reasons == [f"vs run {keyed_run}: code changed: steps/train/step.py (removed)"]


def test_an_unreadable_file_is_an_error_naming_it(keyed_run: str, data_run: str, checkout: Path) -> None:
    model = checkout / "cifar_pipeline" / "model.py"
    model.unlink()
    model.mkdir()  # there, but not readable as a file
    with pytest.raises(CodeIdentityError, match=r"cifar_pipeline/model\.py: cannot read it"):
        cache(root=checkout).decide(PIPELINE_STEPS["train"], ENV, TRAIN_PARAMS, {"data_run_id": data_run})


def test_a_run_without_a_code_record_is_not_reused(mlflow_store, data_run: str, tmp_path: Path) -> None:
    key = cache().decide(PIPELINE_STEPS["train"], ENV, TRAIN_PARAMS, {"data_run_id": data_run}).key
    assert key is not None
    run_id = finished_run("train", tmp_path)  # no record of what it loaded: nothing proves its code
    cache().record(run_id, key)
    assert cache().decide(PIPELINE_STEPS["train"], ENV, TRAIN_PARAMS, {"data_run_id": data_run}).reuse is None


def test_an_environment_change_is_explained_by_its_packages(
    keyed_run: str, data_run: str, checkout: Path
) -> None:
    bumped = Environment("train", "sha256:env2", {**ENV.packages, "torch": "2.15.0"})
    decision = cache(root=checkout).decide(
        PIPELINE_STEPS["train"], bumped, TRAIN_PARAMS, {"data_run_id": data_run}
    )
    assert decision.reuse is None
    assert decision.reasons == [f"vs run {keyed_run}: environment changed: torch 2.14.1→2.15.0"]


def test_a_code_change_is_explained_against_the_closest_earlier_run(
    keyed_run: str, data_run: str, tmp_path: Path, checkout: Path
) -> None:
    upstream = {"data_run_id": data_run}
    (checkout / "steps" / "train" / "step.py").write_text("main()  # a newer run loaded this\n")
    newer = finished_run("train", tmp_path, root=checkout)
    cache().record(
        newer, cache(root=checkout).decide(PIPELINE_STEPS["train"], ENV, TRAIN_PARAMS, upstream).key
    )
    (checkout / "steps" / "train" / "step.py").write_text(LOADED["steps/train/step.py"])
    (checkout / "cifar_pipeline" / "model.py").write_text("class Model: ...  # changed\n")
    decision = cache(root=checkout).decide(PIPELINE_STEPS["train"], ENV, TRAIN_PARAMS, upstream)
    # vs the newer run two files differ, vs the first one only the model
    assert decision.reasons == [f"vs run {keyed_run}: code changed: cifar_pipeline/model.py"]
