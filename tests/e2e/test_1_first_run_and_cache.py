"""End to end, the first pipeline and what a re-run of it reuses: five steps in containers, each
in its own image, the first model promoted; then the cache's keys (parameters, code, environment,
data) decide which steps run again, and say why."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import docker
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from cifar_pipeline.code_trace import file_sha256
from cifar_pipeline.orchestrator.experiment import PROJECT_NAME
from cifar_pipeline.orchestrator.planning.cache import REUSED_FROM_TAG
from cifar_pipeline.orchestrator.running.step_containers import STEP_IMAGE_TAG
from cifar_pipeline.tracking import CODE_TRACE_ARTIFACT, STEPS, require_step_run
from tests.e2e.helpers import (
    FIRST_RUN_PARAMS,
    SeenContainer,
    children,
    copy_project,
    leftover_containers,
    mlflow_run,
    pipeline_runs,
    start_pipeline,
    subprocess_env,
    summary_steps,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]


@contextmanager
def rewritten(path: Path, text: str) -> Iterator[None]:
    original = path.read_text()
    path.write_text(text)
    try:
        yield
    finally:
        path.write_text(original)


def edited(
    path: Path, addition: str = "\n# an edit that changes nothing the code does\n"
) -> AbstractContextManager[None]:
    return rewritten(path, path.read_text() + addition)


def containers_created_since(since: float) -> list[str]:
    events = docker.from_env().events(
        since=int(since),
        until=int(time.time()) + 1,
        filters={"type": "container", "event": "create"},
        decode=True,
    )
    return [event["Actor"]["Attributes"].get("name", "") for event in events]


def test_step_containers_reach_the_local_store_through_a_tracking_server_only(
    project: Path, first_run: Run, first_run_containers: list[SeenContainer], local_store: MlflowClient
) -> None:
    """No store or artifact folder is mounted into a step container: the orchestrator serves the
    local store over loopback, with proxied artifacts, and the steps' files land in the store."""
    assert sorted(c.name.split("-")[2] for c in first_run_containers) == sorted(STEPS)
    for container in first_run_containers:
        assert container.env["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:"), container
        store_paths = [m for m in container.mounts if m.startswith(str(project))]
        assert store_paths == [], container  # only the Docker socket, for build and systemtest
    for step, run in children(local_store, first_run).items():
        artifact_uri = run.info.artifact_uri
        assert artifact_uri == f"mlflow-artifacts:/{PROJECT_NAME}/{run.info.run_id}/artifacts", step
        assert (project / "mlruns" / PROJECT_NAME / run.info.run_id / "artifacts" / "logs").is_dir(), step


def test_full_pipeline_runs_five_steps_in_containers(first_run: Run, local_store: MlflowClient) -> None:
    assert first_run.info.status == "FINISHED"
    steps = children(local_store, first_run)
    assert set(steps) == set(STEPS)
    for step, run in steps.items():
        assert run.info.status == "FINISHED", step
        assert run.data.tags.get("mlflow.project.env") == "docker", step
        require_step_run(run.info.run_id, step, local_store)  # artifacts present
    fetch, train, build, systest, promote = (steps[s] for s in STEPS)
    # each step ran in its own image, named by content, and recorded it and the code it loaded
    engine = docker.from_env()
    sizes = {}
    for step, run in steps.items():
        image = run.data.tags[STEP_IMAGE_TAG]
        assert image.startswith(f"cifar-pipeline-{step}:"), image
        assert engine.images.get(image).id == run.data.tags["mlflow.docker.image.id"]
        sizes[step] = engine.images.get(image).attrs["Size"]
        loaded = json.loads(
            Path(local_store.download_artifacts(run.info.run_id, CODE_TRACE_ARTIFACT)).read_text()
        )
        assert f"steps/{step}/step.py" in loaded, step
    # only train carries torch: every other step image is a small fraction of it
    sys.stdout.write(f"step image sizes (MB): { {s: round(b / 1e6) for s, b in sizes.items()} }\n")
    assert all(sizes[step] < sizes["train"] / 4 for step in ("fetch", "build", "systemtest", "promote")), (
        sizes
    )
    # lineage: each step tagged with the run it consumed
    assert train.data.tags["pipeline.upstream.data_run_id"] == fetch.info.run_id
    assert build.data.tags["pipeline.upstream.model_run_id"] == train.info.run_id
    assert systest.data.tags["pipeline.upstream.image_run_id"] == build.info.run_id
    assert promote.data.tags["pipeline.upstream.systemtest_run_id"] == systest.info.run_id
    # it learned: 10 classes, chance is 0.1
    assert train.data.metrics["final_test_accuracy"] > 0.6
    assert systest.data.metrics["test_accuracy"] == pytest.approx(train.data.metrics["final_test_accuracy"])
    # the served model reproduces training's predictions
    assert systest.data.metrics["top1_agreement"] == 1.0
    assert systest.data.metrics["max_logit_diff"] < 1e-3
    assert systest.data.tags["systemtest.passed"] == "true"
    assert systest.data.metrics["c8_requests_per_second"] > 0
    assert systest.data.metrics["c1_latency_p50_ms"] <= systest.data.metrics["c1_latency_p99_ms"]
    # passed: the model is blessed; the first model has no champion to beat: registered, promoted
    assert local_store.get_run(train.info.run_id).data.tags["model.blessed"] == "true"
    champion = local_store.get_model_version_by_alias("cifar-classifier", "champion")
    assert champion.run_id == train.info.run_id
    assert champion.source.startswith("models:/m-")  # from the train run's LoggedModel
    assert champion.tags["image"] == build.data.tags["image.tag"]
    assert champion.tags["promotion.outcome"] == "promoted"
    assert champion.tags["model.digest"] == train.data.tags["model.digest"]
    assert champion.tags["data.digest"] == fetch.data.tags["data.digest"]
    assert promote.data.tags["promotion.outcome"] == "promoted"
    assert first_run.data.tags["pipeline.promotion"].startswith(
        f"promoted: cifar-classifier version {champion.version} (promoted): first model"
    )
    # the image exists, tagged with the model run ID
    tag = build.data.tags["image.tag"]
    assert train.info.run_id in tag
    image = docker.from_env().images.get(tag)
    assert image.labels["cifar-pipeline.model-run-id"] == train.info.run_id
    # small: no torch, no installers, no test suites; what the build adds (venv, server, model) < 240 MB
    base = docker.from_env().images.get(image.labels["org.opencontainers.image.base.name"])
    assert image.attrs["Size"] - base.attrs["Size"] < 240e6
    assert image.attrs["Size"] < 400e6
    # the parent's summary and config
    artifacts = {a.path for a in local_store.list_artifacts(first_run.info.run_id)}
    assert {"summary.json", "summary.txt", "config.yaml"} <= artifacts
    assert leftover_containers() == []


def test_unchanged_rerun_reuses_every_step_and_starts_no_container(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    since = time.time()
    result = mlflow_run(project, *FIRST_RUN_PARAMS)
    assert result.returncode == 0, result.stderr[-3000:]
    rerun = pipeline_runs(local_store)[0]
    assert rerun.info.status == "FINISHED"
    original = {step: run.info.run_id for step, run in children(local_store, first_run).items()}
    steps = summary_steps(local_store, rerun, tmp_path)
    assert {step: s["action"] for step, s in steps.items()} == dict.fromkeys(STEPS, "reused")
    assert {step: s["run_id"] for step, s in steps.items()} == original
    assert all(s["reasons"] == [f"same key as run {original[step]}"] for step, s in steps.items())
    # each reused step has a record child run naming the run it reused
    records = children(local_store, rerun)
    assert {step: run.data.tags[REUSED_FROM_TAG] for step, run in records.items()} == original
    assert rerun.data.tags["pipeline.image_run_id"] == original["build"]
    assert [name for name in containers_created_since(since) if name.startswith("cifar-")] == []
    assert "tracking server for the step containers" not in result.stdout + result.stderr  # none started


def test_changed_parameter_reruns_from_train_and_says_why(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    first = local_store.get_model_version_by_alias("cifar-classifier", "champion")
    # forced: whichever model is better, this one becomes the champion (and is rolled back below)
    result = mlflow_run(project, "source=digits", "epochs=3", "overrides=promote.force=true")
    assert result.returncode == 0, result.stderr[-3000:]
    pipeline = pipeline_runs(local_store)[0]
    steps = summary_steps(local_store, pipeline, tmp_path)
    assert steps["fetch"]["action"] == "reused"
    assert [steps[s]["action"] for s in ("train", "build", "systemtest", "promote")] == ["ran"] * 4
    train_id = children(local_store, first_run)["train"].info.run_id
    assert steps["train"]["reasons"] == [f"vs run {train_id}: params: epochs 2→3"]
    assert "upstream model changed" in steps["build"]["reasons"][0]
    assert "upstream image changed" in steps["systemtest"]["reasons"][0]
    assert "params: force false→true" in steps["promote"]["reasons"][0]
    assert "upstream champion changed" in steps["promote"]["reasons"][0]

    # compared with the champion on the same images, through the ONNX files the images serve
    report = json.loads(
        Path(
            local_store.download_artifacts(steps["promote"]["run_id"], "promotion/report.json", str(tmp_path))
        ).read_text()
    )
    comparison = report["comparison"]
    systemtests = [children(local_store, run)["systemtest"] for run in (pipeline, first_run)]
    assert comparison["candidate_accuracy"] == pytest.approx(systemtests[0].data.metrics["test_accuracy"])
    assert comparison["champion_accuracy"] == pytest.approx(systemtests[1].data.metrics["test_accuracy"])
    assert comparison["images"] == int(children(local_store, first_run)["fetch"].data.params["num_test"])
    assert report["champion"]["version"] == str(first.version)
    assert report["outcome"] in ("promoted", "promoted_forced")
    promote = local_store.get_run(steps["promote"]["run_id"])
    assert "promotion/per_class_accuracy.png" in {
        a.path for a in local_store.list_artifacts(promote.info.run_id, "promotion")
    }
    new = local_store.get_model_version_by_alias("cifar-classifier", "champion")
    assert str(new.version) == promote.data.tags["registered_version"] != str(first.version)
    assert local_store.get_model_version_by_alias("cifar-classifier", "previous").version == first.version
    assert pipeline.data.tags["pipeline.promotion"].startswith(
        f"promoted: cifar-classifier version {new.version}"
    )

    # the README's rollback command: the first model is the champion again, for the tests after this
    rollback = subprocess.run(
        [sys.executable, "-m", "cifar_pipeline.promotion.rollback"],
        cwd=project,
        env=subprocess_env(MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rollback.returncode == 0, rollback.stderr
    assert f"version {new.version} -> version {first.version} (rolled back" in rollback.stdout
    assert local_store.get_model_version_by_alias("cifar-classifier", "champion").version == first.version
    assert "promotion.rolled_back" in local_store.get_model_version("cifar-classifier", new.version).tags


def rerun_edited(
    project: Path, client: MlflowClient, tmp_path: Path, relative: str, addition: str | None = None
) -> dict[str, dict]:
    """Run the first run's pipeline again with one project file edited; its summary by step."""
    with edited(project / relative, *([addition] if addition is not None else [])):
        result = mlflow_run(project, *FIRST_RUN_PARAMS)
    assert result.returncode == 0, result.stderr[-3000:]
    return summary_steps(client, pipeline_runs(client)[0], tmp_path)


def ran_steps(steps: dict[str, dict]) -> set[str]:
    return {step for step, s in steps.items() if s["action"] == "ran"}


@pytest.mark.parametrize(
    ("edited_file", "loaded_by", "downstream"),
    [
        # only the system test imports the probes
        ("cifar_pipeline/probes.py", {"systemtest"}, set()),
        # the build step copies the serving app into the inference image: a new image to test,
        # and to register with the model
        ("cifar_pipeline/serving/app.py", {"build"}, {"systemtest", "promote"}),
        # every step imports the tracking helpers
        ("cifar_pipeline/tracking.py", set(STEPS), set()),
    ],
)
def test_editing_a_module_reruns_exactly_the_steps_that_load_it(
    project: Path,
    first_run: Run,
    local_store: MlflowClient,
    tmp_path: Path,
    edited_file: str,
    loaded_by: set[str],
    downstream: set[str],
) -> None:
    steps = rerun_edited(project, local_store, tmp_path, edited_file)
    assert ran_steps(steps) == loaded_by | downstream
    for step in loaded_by:
        # the reason names the file (beside, where the step also has a new input, that change)
        reason = steps[step]["reasons"][0]
        assert edited_file in reason.partition("code changed: ")[2].split(", "), reason
    for step in downstream:
        assert "upstream image changed" in steps[step]["reasons"][0]


def test_editing_the_model_definition_reruns_train_and_what_its_output_changes(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    steps = rerun_edited(project, local_store, tmp_path, "cifar_pipeline/model.py")
    assert steps["train"]["reasons"][0].endswith("code changed: cifar_pipeline/model.py")
    before = children(local_store, first_run)["train"].data.tags["model.digest"]
    after = local_store.get_run(steps["train"]["run_id"]).data.tags["model.digest"]
    # a comment trains the same model, byte for byte, on the CPU: then build and test are reused
    expected = {"train"} if after == before else {"train", "build", "systemtest", "promote"}
    assert ran_steps(steps) == expected


def test_a_lazily_imported_module_is_part_of_the_step_code(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    """The digits source is imported inside a function (sources/request.py), on first use."""
    steps = rerun_edited(project, local_store, tmp_path, "cifar_pipeline/sources/digits.py")
    assert steps["fetch"]["action"] == "ran"
    assert steps["fetch"]["reasons"][0].endswith("code changed: cifar_pipeline/sources/digits.py")


def test_a_rerun_with_identical_output_lets_the_later_steps_be_reused(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    steps = rerun_edited(project, local_store, tmp_path, "steps/fetch/step.py")
    assert ran_steps(steps) == {"fetch"}
    new_fetch = local_store.get_run(steps["fetch"]["run_id"])
    first_fetch = children(local_store, first_run)["fetch"]
    assert new_fetch.info.run_id != first_fetch.info.run_id
    assert new_fetch.data.tags["data.digest"] == first_fetch.data.tags["data.digest"]
    original = {step: run.info.run_id for step, run in children(local_store, first_run).items()}
    assert {s: steps[s]["run_id"] for s in ("train", "build", "systemtest", "promote")} == {
        s: original[s] for s in ("train", "build", "systemtest", "promote")
    }


def test_a_changed_requirement_reruns_only_its_step_and_names_the_package(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    steps = rerun_edited(project, local_store, tmp_path, "requirements/systemtest.txt", "tqdm\n")
    assert ran_steps(steps) == {"systemtest"}
    assert "environment changed: tqdm (none)→4.70.1" in steps["systemtest"]["reasons"][0]


def test_two_checkouts_with_different_code_run_at_once_each_its_own_code(
    first_run: Run, tmp_path: Path
) -> None:
    clones = [copy_project(tmp_path / name) for name in ("a", "b")]
    (clones[1] / "cifar_pipeline/probes.py").write_text(
        (clones[1] / "cifar_pipeline/probes.py").read_text() + "\n# clone b's own code\n"
    )
    # until the system test: the step that shows which code each image holds
    running = [start_pipeline(clone, *FIRST_RUN_PARAMS, "until=systemtest") for clone in clones]
    outputs = [process.communicate(timeout=1500)[0] for process in running]
    for process, output in zip(running, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    images = []
    for clone in clones:
        client = MlflowClient(f"sqlite:///{clone / 'mlflow.db'}")
        [parent] = pipeline_runs(client)
        assert parent.info.status == "FINISHED"
        steps = children(client, parent)
        assert all(run.info.status == "FINISHED" for run in steps.values())
        systemtest = steps["systemtest"]
        images.append(systemtest.data.tags[STEP_IMAGE_TAG])
        loaded = json.loads(
            Path(
                client.download_artifacts(systemtest.info.run_id, CODE_TRACE_ARTIFACT, str(tmp_path))
            ).read_text()
        )
        assert loaded["cifar_pipeline/probes.py"] == file_sha256(clone / "cifar_pipeline/probes.py")
    assert images[0] != images[1]


def test_changed_upstream_data_reruns_downstream_and_says_so(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    result = mlflow_run(project, *FIRST_RUN_PARAMS, "overrides=data.test_fraction=0.25")
    assert result.returncode == 0, result.stderr[-3000:]
    steps = summary_steps(local_store, pipeline_runs(local_store)[0], tmp_path)
    assert {step: s["action"] for step, s in steps.items()} == dict.fromkeys(STEPS, "ran")
    assert "params: test_fraction 0.2→0.25" in steps["fetch"]["reasons"][0]
    assert "upstream data changed" in steps["train"]["reasons"][0]
    assert "params:" not in steps["train"]["reasons"][0]
    # the champion trained on a split that holds some of these test images: no fair comparison
    promote = local_store.get_run(steps["promote"]["run_id"])
    assert promote.data.tags["promotion.outcome"] == "not_promoted"
    assert "of the candidate's" in promote.data.tags["promotion.reason"]
    assert "test images" in promote.data.tags["promotion.reason"]
    version = promote.data.tags["registered_version"]
    assert (
        local_store.get_model_version("cifar-classifier", version).tags["promotion.outcome"] == "not_promoted"
    )
    assert str(local_store.get_model_version_by_alias("cifar-classifier", "champion").version) != version
