"""End to end: the real `mlflow run .` against a real Docker engine, on the digits data.

Runs in a copy of the project with no tracking URI set, so it exercises the default
local store in the project directory, exactly as a user's first `mlflow run .`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import mlflow
import numpy as np
import pytest
import requests
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from cifar_pipeline.code_trace import file_sha256
from cifar_pipeline.orchestrator.experiment import PROJECT_NAME
from cifar_pipeline.orchestrator.faults import orphans
from cifar_pipeline.orchestrator.planning.cache import REUSED_FROM_TAG, REUSED_STEP_TAG
from cifar_pipeline.orchestrator.reporting.headline import HEADLINES
from cifar_pipeline.orchestrator.running.step_containers import STEP_IMAGE_TAG
from cifar_pipeline.orchestrator.sweep import POINT_TAG
from cifar_pipeline.processes import free_port
from cifar_pipeline.sources import cifar10
from cifar_pipeline.tracking import CODE_TRACE_ARTIFACT, FETCH, STEP_TAG, STEPS, require_step_run
from tests.conftest import CLASS_NAMES, md5_spec, noise_image, write_cifar_tarball
from tests.http_files import FileServer, serve

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The suite's own inference image repository: a user's `cifar-classifier` images stay as they are.
TEST_IMAGE_REPO = f"cifar-classifier-e2e-{uuid.uuid4().hex[:8]}"
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".wheelhouse", ".build", "mlruns", "mlartifacts", "mlflow.db", "outputs",
    "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
)  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def mlflow_run_args(*params: str, uri: str = ".", docker_args: tuple[str, ...] = ()) -> list[str]:
    args = [str(BIN / "mlflow"), "run", uri, "--env-manager", "local"]
    for param in params:
        args += ["-P", param]
    for arg in docker_args:
        args += ["-A", arg]
    return args


def start_pipeline(
    project: Path, *params: str, new_session: bool = False, **env: str
) -> subprocess.Popen[str]:
    """`mlflow run .` in the background, its output (both streams) readable at the end.

    `new_session`: in a process group of its own, as a terminal's foreground job is.
    """
    return subprocess.Popen(
        mlflow_run_args(*params),
        cwd=project,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=new_session,
    )


def mlflow_run(
    project: Path, *params: str, uri: str = ".", docker_args: tuple[str, ...] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    args = mlflow_run_args(*params, uri=uri, docker_args=docker_args)
    result = subprocess.run(
        args, cwd=project, env=_env(**env), capture_output=True, text=True, timeout=1800, check=False
    )
    sys.stdout.write(result.stdout[-20000:])
    sys.stderr.write(result.stderr[-20000:])
    return result


def copy_project(destination: Path) -> Path:
    """A copy of the project whose inference images are the suite's own (TEST_IMAGE_REPO),
    so that no test replaces or removes an image a user built."""
    shutil.copytree(ROOT, destination, ignore=COPY_IGNORE)
    serve_config = destination / "configs" / "serve" / "default.yaml"
    original = serve_config.read_text()
    serve_config.write_text(
        original.replace("image_repo: cifar-classifier\n", f"image_repo: {TEST_IMAGE_REPO}\n")
    )
    assert serve_config.read_text() != original
    return destination


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


def in_project(client: MlflowClient) -> list[str]:
    """The experiment `mlflow run .` uses in the project by default: the project's own."""
    experiment = client.get_experiment_by_name(PROJECT_NAME)
    assert experiment is not None, f"no experiment {PROJECT_NAME!r}: is the project installed in the venv?"
    return [experiment.experiment_id]


def pipeline_runs(client: MlflowClient) -> list[Run]:
    return client.search_runs(
        in_project(client), f"tags.`{STEP_TAG}` = 'pipeline'", order_by=["start_time DESC"]
    )


def children(client: MlflowClient, parent: Run) -> dict[str, Run]:
    """The parent's step runs by step; a reused step's record run under its step name too."""
    runs = client.search_runs(in_project(client), f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return {(run.data.tags.get(STEP_TAG) or run.data.tags[REUSED_STEP_TAG]): run for run in runs}


def summary_steps(client: MlflowClient, parent: Run, tmp_path: Path) -> dict[str, dict]:
    path = client.download_artifacts(parent.info.run_id, "summary.json", str(tmp_path))
    return {step["step"]: step for step in json.loads(Path(path).read_text())["steps"]}


def containers_created_since(since: float) -> list[str]:
    events = docker.from_env().events(
        since=int(since),
        until=int(time.time()) + 1,
        filters={"type": "container", "event": "create"},
        decode=True,
    )
    return [event["Actor"]["Attributes"].get("name", "") for event in events]


def leftover_containers() -> list[str]:
    names = [c.name for c in docker.from_env().containers.list(all=True)]
    return [n for n in names if n.startswith(("cifar-pipeline-", "cifar-systemtest-"))]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    copy = copy_project(tmp_path_factory.mktemp("e2e") / "project")
    yield copy
    built = [t for i in docker.from_env().images.list(TEST_IMAGE_REPO) for t in i.tags]
    for tag in built:
        docker.from_env().images.remove(tag, force=True)


@pytest.fixture(scope="module")
def local_store(project: Path) -> Iterator[MlflowClient]:
    uri = f"sqlite:///{project / 'mlflow.db'}"
    # The first client to open the store creates it, with its default experiment's artifacts
    # under ./mlruns of the working directory: the project's, as for a user's first run.
    test_dir = Path.cwd()
    os.chdir(project)
    try:
        client = MlflowClient(uri)
        client.search_experiments()
    finally:
        os.chdir(test_dir)
    mlflow.set_tracking_uri(uri)
    yield client
    mlflow.set_tracking_uri("")


@dataclass
class SeenContainer:
    name: str
    mounts: list[str]  # host paths
    env: dict[str, str]


@contextmanager
def watching_step_containers() -> Iterator[list[SeenContainer]]:
    """Each step container's mounts and environment, looked at as it starts."""
    seen: list[SeenContainer] = []
    engine = docker.from_env()
    started = {"type": "container", "event": "start", "label": "cifar-pipeline.step"}
    events = engine.events(since=int(time.time()), filters=started, decode=True)

    def look() -> None:
        for event in events:
            try:
                attrs = engine.containers.get(event["id"]).attrs
            except docker.errors.NotFound:
                continue
            env = dict(item.partition("=")[::2] for item in attrs["Config"]["Env"])
            mounts = [mount["Source"] for mount in attrs["Mounts"]]
            seen.append(SeenContainer(attrs["Name"].lstrip("/"), mounts, env))

    watcher = threading.Thread(target=look, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        time.sleep(1)  # the last start event
        events.close()
        watcher.join(timeout=10)


@pytest.fixture(scope="module")
def first_run_containers() -> list[SeenContainer]:
    return []


@pytest.fixture(scope="module")
def first_run(project: Path, local_store: MlflowClient, first_run_containers: list[SeenContainer]) -> Run:
    with watching_step_containers() as seen:
        result = mlflow_run(project, "source=digits", "epochs=3")
    first_run_containers.extend(seen)
    assert result.returncode == 0, result.stderr[-3000:]
    return pipeline_runs(local_store)[0]


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
    result = mlflow_run(project, "source=digits", "epochs=3")
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
    result = mlflow_run(project, "source=digits", "epochs=4", "overrides=promote.force=true")
    assert result.returncode == 0, result.stderr[-3000:]
    pipeline = pipeline_runs(local_store)[0]
    steps = summary_steps(local_store, pipeline, tmp_path)
    assert steps["fetch"]["action"] == "reused"
    assert [steps[s]["action"] for s in ("train", "build", "systemtest", "promote")] == ["ran"] * 4
    train_id = children(local_store, first_run)["train"].info.run_id
    assert steps["train"]["reasons"] == [f"vs run {train_id}: params: epochs 3→4"]
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
        env=_env(MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}"),
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
        result = mlflow_run(project, "source=digits", "epochs=3")
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
    running = [start_pipeline(clone, "source=digits", "epochs=1") for clone in clones]
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
    result = mlflow_run(project, "source=digits", "epochs=3", "overrides=data.test_fraction=0.25")
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


def wait_for_checkpoint(client: MlflowClient, since_ms: int, timeout: float = 300) -> Run:
    """The train run started after `since_ms` once it has logged a checkpoint."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        query = f"tags.`{STEP_TAG}` = 'train' and attributes.start_time > {since_ms}"
        experiment = client.get_experiment_by_name(PROJECT_NAME)  # made by the pipeline's start
        for run in client.search_runs([experiment.experiment_id], query) if experiment else []:
            if any(
                a.path == "checkpoints/last.pt" for a in client.list_artifacts(run.info.run_id, "checkpoints")
            ):
                return run
        time.sleep(0.5)
    raise AssertionError("no train run checkpointed in time")


def test_killed_train_container_fails_the_pipeline_and_resume_finishes_it(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    since_ms = int(time.time() * 1000)
    pipeline = start_pipeline(project, "source=digits", "epochs=5")
    try:
        killed_train = wait_for_checkpoint(local_store, since_ms)
        [container] = [
            c for c in docker.from_env().containers.list() if c.name.startswith("cifar-pipeline-train-")
        ]
        container.kill()
        output, _ = pipeline.communicate(timeout=300)
    finally:
        pipeline.kill()
    assert pipeline.returncode != 0
    assert "step train FAILED" in output
    failed = pipeline_runs(local_store)[0]
    assert failed.info.status == "FAILED"
    train = local_store.get_run(killed_train.info.run_id)
    assert train.info.status == "FAILED"
    # the container's output up to the kill is on the run
    logs = local_store.download_artifacts(train.info.run_id, "logs/container.log", str(tmp_path))
    assert "training on" in Path(logs).read_text()
    assert leftover_containers() == []

    result = mlflow_run(project, f"resume={failed.info.run_id}")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = pipeline_runs(local_store)[0]
    assert resumed.info.status == "FINISHED"
    steps = summary_steps(local_store, resumed, tmp_path)
    assert steps["fetch"]["action"] == "reused"
    assert steps["fetch"]["reasons"] == [f"finished in pipeline {failed.info.run_id}"]
    assert steps["train"]["action"] == "ran"
    assert steps["train"]["reasons"] == [
        f"not cacheable: continues the interrupted train run {train.info.run_id}"
    ]
    continued = local_store.get_run(steps["train"]["run_id"])
    assert int(continued.data.tags["train.resumed_after_epoch"]) >= 1
    assert continued.data.params["epochs"] == "5"  # the failed pipeline's configuration
    assert [steps[s]["action"] for s in ("build", "systemtest", "promote")] == ["ran"] * 3


def pipeline_containers(pipeline_run_id: str) -> list[str]:
    """The step containers (running or not) of one pipeline run, by their label."""
    label = f"{orphans.PIPELINE_RUN_LABEL}={pipeline_run_id}"
    return [c.name for c in docker.from_env().containers.list(all=True, filters={"label": label})]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `condition()` held."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)
    return time.monotonic() - started


@contextmanager
def training_pipeline(
    project: Path, store: MlflowClient, epochs: int, new_session: bool = False
) -> Iterator[tuple[subprocess.Popen[str], Run]]:
    """A digits pipeline in the background, handed over once its train run has checkpointed;
    killed on the way out, whatever the test did to it."""
    since_ms = int(time.time() * 1000)
    pipeline = start_pipeline(project, "source=digits", f"epochs={epochs}", new_session=new_session)
    try:
        yield pipeline, wait_for_checkpoint(store, since_ms)
    finally:
        pipeline.kill()


def test_ctrl_c_during_training_kills_every_run_and_resume_continues_it(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    with training_pipeline(project, local_store, epochs=5, new_session=True) as (pipeline, train):
        parent_id = train.data.tags["mlflow.parentRunId"]
        assert pipeline_containers(parent_id)
        signalled = time.monotonic()
        os.killpg(pipeline.pid, signal.SIGINT)  # what a terminal sends its foreground job on Ctrl-C
        output, _ = pipeline.communicate(timeout=120)
        gone = wait_until(lambda: not pipeline_containers(parent_id), 60, "the train container is gone")
        sys.stdout.write(f"Ctrl-C to the last container gone: {time.monotonic() - signalled:.1f} s\n")
    assert gone < 60
    assert pipeline.returncode != 0
    assert "stopping step train" in output
    time.sleep(3)  # nothing that outlived the signal overwrites the statuses
    parent = local_store.get_run(parent_id)
    assert parent.info.status == "KILLED"
    assert parent.data.tags["pipeline.error"] == "cancelled by SIGINT"
    killed_train = local_store.get_run(train.info.run_id)
    assert killed_train.info.status == "KILLED"
    assert leftover_containers() == []

    result = mlflow_run(project, f"resume={parent_id}")
    assert result.returncode == 0, result.stderr[-3000:]
    steps = summary_steps(local_store, pipeline_runs(local_store)[0], tmp_path)
    assert steps["train"]["reasons"] == [
        f"not cacheable: continues the interrupted train run {train.info.run_id}"
    ]
    continued = local_store.get_run(steps["train"]["run_id"])
    assert continued.info.status == "FINISHED"
    assert int(continued.data.tags["train.resumed_after_epoch"]) >= 1


def test_sigterm_to_mlflow_run_alone_stops_the_pipeline_and_its_container(
    project: Path, first_run: Run, local_store: MlflowClient
) -> None:
    """What `kill`, a CI cancel or systemd send, to the `mlflow run` process only."""
    with training_pipeline(project, local_store, epochs=6) as (pipeline, train):
        parent_id = train.data.tags["mlflow.parentRunId"]
        signalled = time.monotonic()
        pipeline.send_signal(signal.SIGTERM)
        pipeline.communicate(timeout=60)
        wait_until(lambda: not pipeline_containers(parent_id), 60, "the train container is gone")
        wait_until(
            lambda: local_store.get_run(parent_id).info.status != "RUNNING", 60, "the pipeline run has ended"
        )
        sys.stdout.write(f"SIGTERM to the last container gone: {time.monotonic() - signalled:.1f} s\n")
    parent = local_store.get_run(parent_id)
    assert parent.info.status == "KILLED"
    assert parent.data.tags["pipeline.error"] == "cancelled by SIGTERM"
    assert local_store.get_run(train.info.run_id).info.status == "KILLED"
    assert leftover_containers() == []


def test_a_killed_orchestrators_container_is_ended_by_the_next_pipeline(
    project: Path, first_run: Run, local_store: MlflowClient
) -> None:
    with training_pipeline(project, local_store, epochs=7) as (pipeline, train):
        [name] = pipeline_containers(train.data.tags["mlflow.parentRunId"])
        owner = orphans.Owner.parse(docker.from_env().containers.get(name).labels[orphans.OWNER_LABEL])
        assert owner is not None
        os.kill(owner.pid, signal.SIGKILL)  # the orchestrator dies without a word
        # `mlflow run` exits; its output stays open as long as the orphaned `docker run` runs
        pipeline.wait(timeout=60)
    assert docker.from_env().containers.get(name).status == "running"  # orphaned, training on

    result = mlflow_run(project, "source=digits", "epochs=3")  # anything: all reused here
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ending container {name} (step train" in result.stdout + result.stderr
    assert pipeline_containers(train.data.tags["mlflow.parentRunId"]) == []
    ended = local_store.get_run(train.info.run_id)
    assert ended.info.status == "KILLED"
    assert f"pid {owner.pid}" in ended.data.tags[orphans.KILLED_REASON_TAG]


def test_two_pipelines_started_together_in_one_checkout_both_finish(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    running = [start_pipeline(project, "source=digits", "epochs=3", "rerun=systemtest") for _ in range(2)]
    outputs = [process.communicate(timeout=900)[0] for process in running]
    for process, output in zip(running, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    parents = pipeline_runs(local_store)[:2]
    assert all(parent.info.status == "FINISHED" for parent in parents)
    systemtests = {children(local_store, parent)["systemtest"].info.run_id for parent in parents}
    assert len(systemtests) == 2  # each ran its own
    assert leftover_containers() == []


def test_two_point_sweep_shares_one_fetch_run(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    result = mlflow_run(project, "source=digits", "epochs=1", "overrides=-m optim.lr=0.02,0.05")
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = local_store.search_runs(
        in_project(local_store), f"tags.`{STEP_TAG}` = 'sweep'", order_by=["start_time DESC"]
    )[0]
    assert sweep.info.status == "FINISHED"
    assert sweep.data.params["sweep.keys"] == "optim.lr"
    points = local_store.search_runs(
        in_project(local_store), f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'"
    )
    assert sorted(p.data.tags[POINT_TAG] for p in points) == ["optim.lr=0.02", "optim.lr=0.05"]
    assert sorted(p.data.params["optim.lr"] for p in points) == ["0.02", "0.05"]  # for the compare view
    assert all(p.info.status == "FINISHED" and p.data.tags[STEP_TAG] == "pipeline" for p in points)
    summaries = [summary_steps(local_store, point, tmp_path / point.info.run_id) for point in points]
    assert len({s["fetch"]["run_id"] for s in summaries}) == 1  # one fetch, shared through the cache
    assert len({s["train"]["run_id"] for s in summaries}) == 2
    assert all(s["train"]["action"] == "ran" for s in summaries)
    listing = Path(local_store.download_artifacts(sweep.info.run_id, "sweep.txt", str(tmp_path))).read_text()
    assert all(f"FINISHED  {p.info.run_id}  {p.data.tags[POINT_TAG]}" in listing for p in points)


def test_a_parallel_sweep_runs_its_points_at_once(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    """The points of the sweep above, each in a process of its own at the same time; each
    re-runs its system test (a container per point at once), the rest comes from the cache."""
    result = mlflow_run(
        project, "source=digits", "epochs=1", "rerun=systemtest",
        "overrides=-m optim.lr=0.02,0.05 sweep.parallel=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = local_store.search_runs(
        in_project(local_store), f"tags.`{STEP_TAG}` = 'sweep'", order_by=["start_time DESC"]
    )[0]
    assert sweep.info.status == "FINISHED"
    points = local_store.search_runs(
        in_project(local_store), f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'"
    )
    assert sorted(p.data.tags[POINT_TAG] for p in points) == ["optim.lr=0.02", "optim.lr=0.05"]
    assert all(p.info.status == "FINISHED" for p in points)
    first, second = sorted(points, key=lambda p: p.info.start_time)
    assert second.info.start_time < first.info.end_time  # the two ran at the same time
    summaries = [summary_steps(local_store, point, tmp_path / point.info.run_id) for point in points]
    assert all(s["systemtest"]["action"] == "ran" for s in summaries)
    assert len({s["systemtest"]["run_id"] for s in summaries}) == 2
    assert leftover_containers() == []


@pytest.fixture(scope="module")
def registry() -> str:
    """A registry on 127.0.0.1 (`make test` starts one: scripts/ensure_local_registry.sh)."""
    address = os.environ.get("PIPELINE_TEST_REGISTRY", "")
    if not address:
        pytest.skip("PIPELINE_TEST_REGISTRY is not set: run `make test`, which starts a local registry")
    return address


def test_resume_from_model_runs_only_build_and_systemtest_and_pushes(
    project: Path, first_run: Run, local_store: MlflowClient, registry: str
) -> None:
    train_id = children(local_store, first_run)["train"].info.run_id
    result = mlflow_run(project, "source=digits", f"model_run_id={train_id}", f"registry={registry}")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = pipeline_runs(local_store)[0]
    assert resumed.info.run_id != first_run.info.run_id
    steps = children(local_store, resumed)
    assert set(steps) == {"build", "systemtest", "promote"}
    assert all(run.info.status == "FINISHED" for run in steps.values())
    build = steps["build"]
    assert build.data.tags["pipeline.upstream.model_run_id"] == train_id
    # the registry holds the image under the build's tag, with the digest the run recorded
    pushed = build.data.tags["image.pushed"]
    version = build.data.tags["image.tag"].split(":", 1)[1]
    assert pushed.startswith(f"{registry}/{TEST_IMAGE_REPO}:{version}@sha256:")
    manifest = requests.head(
        f"http://{registry}/v2/{TEST_IMAGE_REPO}/manifests/{version}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=10,
    )
    assert manifest.status_code == 200
    assert manifest.headers["Docker-Content-Digest"] == pushed.rsplit("@", 1)[1]
    docker.from_env().images.remove(pushed.split("@")[0], noprune=True)


def test_a_failed_push_fails_the_build_and_leaves_no_image(
    project: Path, first_run: Run, local_store: MlflowClient
) -> None:
    train_id = children(local_store, first_run)["train"].info.run_id
    images_before = {i.id for i in docker.from_env().images.list()}
    result = mlflow_run(project, "source=digits", f"model_run_id={train_id}", "registry=127.0.0.1:1")
    assert result.returncode != 0
    assert f"pushing 127.0.0.1:1/{TEST_IMAGE_REPO}:" in result.stdout + result.stderr
    failed = pipeline_runs(local_store)[0]
    assert failed.info.status == "FAILED"
    steps = children(local_store, failed)
    assert set(steps) == {"build"}  # the system test never ran
    assert steps["build"].info.status == "FAILED"
    assert "image.pushed" not in steps["build"].data.tags
    new_images = [i for i in docker.from_env().images.list() if i.id not in images_before]
    assert [t for i in new_images for t in i.tags] == []
    assert leftover_containers() == []


@pytest.mark.parametrize(
    ("params", "env", "message"),
    [
        (["source=digits", "data_run_id=0123456789abcdef0123456789abcdef"], {}, "no such run"),
        (["source=imagenet"], {}, "data/imagenet"),
        (["source=digits", "overrides=train.no_such_key=1"], {}, "no_such_key"),
        (["source=digits", "cache=maybe"], {}, "cache.enabled='maybe': expected true or false"),
        (["source=digits", "rerun=trian"], {}, "cache.rerun='trian': unknown step trian"),
        (
            ["source=digits", "overrides=promote.policy=sometimes"],
            {},
            "promote.policy='sometimes': expected one of not_worse, significantly_better",
        ),
        (
            ["source=digits", "overrides=promote.tolerance=-0.1"],
            {},
            "promote.tolerance=-0.1: expected a number",
        ),
        (
            ["source=digits", "overrides=validation.max_pixel_divergence=1.5"],
            {},
            "validation.max_pixel_divergence=1.5: expected a number from 0 to 1",
        ),
        (
            ["source=digits", "overrides=validation.reference=0123456789abcdef0123456789abcdef"],
            {},
            "validation.reference='0123456789abcdef0123456789abcdef': no such run",
        ),
        (
            ["resume=0123456789abcdef0123456789abcdef"],
            {},
            "resume='0123456789abcdef0123456789abcdef': no such run",
        ),
        (["source=imagefolder", "data_url=/nonexistent/pets"], {}, "'/nonexistent/pets': no such file"),
        (["source=digits"], {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, "Docker engine unreachable"),
    ],
)
def test_bad_input_fails_cleanly(
    project: Path, local_store: MlflowClient, params: list[str], env: dict[str, str], message: str
) -> None:
    everywhere = [e.experiment_id for e in local_store.search_experiments()]
    before = {r.info.run_id for r in local_store.search_runs(everywhere)}
    result = mlflow_run(project, *params, **env)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    new_runs = [r for r in local_store.search_runs(in_project(local_store)) if r.info.run_id not in before]
    assert new_runs, "the main entry point's run should exist"
    assert all(r.info.status == "FAILED" for r in new_runs)
    assert leftover_containers() == []


def start_tracking_server(
    port: int, store: Path, backend: str = "", artifacts: Path | None = None
) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", backend or f"sqlite:///{store / 'server.db'}",
         "--artifacts-destination", str(artifacts or store / "artifacts")],
        # without the background job consumers, which poll and would compete with the steps
        env=_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip

    def healthy() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok
        except requests.RequestException:
            return False

    wait_until(healthy, 120, f"the tracking server on port {port} answers")
    return server


def stop_tracking_server(server: subprocess.Popen[bytes]) -> None:
    os.killpg(server.pid, signal.SIGTERM)  # the server and its workers
    server.wait(timeout=30)


def test_remote_tracking_server_restarted_mid_training(project: Path, tmp_path: Path) -> None:
    """With MLFLOW_TRACKING_URI=http://..., artifacts travel through the server only; the data
    comes from a CIFAR-10 mirror over HTTP, with its own checksum. The server goes down for
    10 s while the model trains: the clients retry, and nothing is lost."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_tracking_server(port, tmp_path)
    tarball = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_tarball(tarball, count=300)
    epochs = 4
    try:
        with serve(FileServer(files={"/mirror/cifar.tgz": tarball.read_bytes()})) as mirror:
            pipeline = start_pipeline(
                project, "source=cifar10", f"data_url={mirror.url('/mirror/cifar.tgz')}",
                f"data_checksum={md5_spec(tarball)}", f"epochs={epochs}", MLFLOW_TRACKING_URI=uri,
            )  # fmt: skip
            try:
                train = wait_for_checkpoint(MlflowClient(uri), 0)
                stop_tracking_server(server)
                time.sleep(10)
                server = start_tracking_server(port, tmp_path)
                output, _ = pipeline.communicate(timeout=900)
            finally:
                pipeline.kill()
        assert pipeline.returncode == 0, output[-3000:]
        client = MlflowClient(uri)
        parent = pipeline_runs(client)[0]
        assert parent.info.status == "FINISHED"
        steps = children(client, parent)
        assert set(steps) == set(STEPS)
        assert all(run.info.status == "FINISHED" for run in steps.values())
        assert steps["train"].info.run_id == train.info.run_id
        history = client.get_metric_history(train.info.run_id, "test_accuracy")
        assert sorted(m.step for m in history) == list(range(1, epochs + 1))
        assert steps["train"].info.artifact_uri.startswith("mlflow-artifacts:")
        assert not list(project.glob(f"mlruns/*/{steps['train'].info.run_id}"))
        assert steps["fetch"].data.params["num_train"] == "300"
        assert steps["fetch"].data.tags["data.input_digest"] == md5_spec(tarball)
    finally:
        stop_tracking_server(server)


def write_pets(root: Path, empty_class: str = "") -> Path:
    """A small image folder of random pixels: PNG and JPEG of mixed sizes, one greyscale, one RGBA."""
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            noise_image(rng, (20 + 7 * i, 24)).save(root / name / f"{i}.png")
        noise_image(rng, (50, 40), "L").save(root / name / "grey.jpg")
        noise_image(rng, (33, 33), "RGBA").save(root / name / "alpha.png")
    if empty_class:
        (root / empty_class).mkdir()
    return root


def test_fetch_step_alone_on_an_image_folder(project: Path, first_run: Run, tmp_path: Path) -> None:
    """One step alone against the default local store, with the README's one command: no store
    mounted by hand, the local folder mounted read-only by the command."""
    pets = write_pets(tmp_path / "my pets")
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    # The image the pipeline built, not the user's `:latest` (`make images`): a test leaves that alone.
    image = children(client, first_run)["fetch"].data.tags[STEP_IMAGE_TAG]
    with watching_step_containers() as seen:
        result = subprocess.run(
            [sys.executable, "-m", "cifar_pipeline.orchestrator.run_step", "fetch", "--image", image,
             "-P", "source=imagefolder", "-P", f"data_url={pets}", "-P", "test_fraction=0.2"],
            cwd=project, env=_env(), capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = result.stdout.split("fetch run ")[1].split(":")[0]
    run = client.get_run(run_id)
    assert run.info.experiment_id == in_project(client)[0]
    assert run.info.run_name == FETCH
    require_step_run(run.info.run_id, FETCH, client)
    assert run.data.params["num_classes"] == "2"
    assert run.data.params["num_train"] == "12"
    assert run.data.params["num_test"] == "2"
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/samples.png", "plots/class_balance.png"}
    [container] = seen
    assert container.mounts == [str(pets)]
    assert container.env["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:")
    assert leftover_containers() == []


def test_pipeline_refuses_an_empty_class_naming_it(
    project: Path, local_store: MlflowClient, tmp_path: Path
) -> None:
    pets = write_pets(tmp_path / "pets", empty_class="bird")
    result = mlflow_run(project, "source=imagefolder", f"data_url={pets}")
    assert result.returncode != 0
    assert "'bird'" in result.stdout + result.stderr
    parent = pipeline_runs(local_store)[0]
    assert parent.info.status == "FAILED"
    fetch = children(local_store, parent)[FETCH]
    assert fetch.info.status == "FAILED"
    assert {a.path for a in local_store.list_artifacts(fetch.info.run_id)} == {"logs"}  # nothing partial
    assert leftover_containers() == []


def test_a_test_image_in_the_training_split_stops_the_pipeline_before_training(
    project: Path, local_store: MlflowClient, tmp_path: Path
) -> None:
    train, test = write_cifar_tarball(tmp_path / "cifar.tar.gz", count=150)
    train.images[[0, 7, 8]] = test.images[[3, 5, 5]]  # two test images leak, one into train twice
    tarball = tmp_path / "leaky.tar.gz"
    cifar10.write_archive(tarball, train, test, CLASS_NAMES)
    result = mlflow_run(
        project, "source=cifar10", f"data_url={tarball}", f"data_checksum={md5_spec(tarball)}",
        "overrides=validation.reference=none",
    )  # fmt: skip
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "stopping before training: error: leakage: 2 test images also in the training split" in output
    parent = pipeline_runs(local_store)[0]
    assert parent.info.status == "FAILED"
    steps = children(local_store, parent)
    assert set(steps) == {FETCH}  # no training run was started
    fetch = steps[FETCH]
    assert fetch.info.status == "FAILED"
    assert {a.path for a in local_store.list_artifacts(fetch.info.run_id)} == {"logs", "validation"}
    summary = Path(
        local_store.download_artifacts(parent.info.run_id, "summary.txt", str(tmp_path))
    ).read_text()
    assert "data validation: error: leakage: 2 test images" in summary
    assert (
        parent.data.tags["pipeline.validation"]
        == "failed against no reference (validation.reference=none): 1 anomaly"
    )
    assert leftover_containers() == []


class TrackingApi:
    """MLflow's REST API, as the tracking UI reads it."""

    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> dict[str, Any]:
        response = requests.get(f"{self.url}/api/2.0/mlflow/{path}", params=params, timeout=30)
        response.raise_for_status()
        return dict(response.json())

    def artifacts(self, run_id: str) -> list[str]:
        return [f["path"] for f in self.get("artifacts/list", run_id=run_id).get("files", [])]

    def experiment(self, name: str) -> dict[str, Any]:
        return dict(self.get("experiments/get-by-name", experiment_name=name)["experiment"])

    def runs(self, query: str, experiment: str = PROJECT_NAME) -> list[dict[str, Any]]:
        ids = [self.experiment(experiment)["experiment_id"]]
        body = {"experiment_ids": ids, "filter": query, "max_results": 1000}
        body["order_by"] = ["start_time DESC"]
        response = requests.post(f"{self.url}/api/2.0/mlflow/runs/search", json=body, timeout=30)
        response.raise_for_status()
        return list(response.json().get("runs", []))


def values(run: dict[str, Any], kind: str) -> dict[str, Any]:
    """A REST run's metrics, params or tags as a dict."""
    return {item["key"]: item["value"] for item in run["data"].get(kind, [])}


def test_the_tracking_ui_shows_named_runs_with_their_headline_results_and_a_part_pipeline(
    project: Path, first_run: Run, local_store: MlflowClient, tmp_path: Path
) -> None:
    """After every pipeline above (run, reused, resumed, swept, failed) and one stopped after
    training: what MLflow's UI reads through a real server's REST API."""
    result = mlflow_run(project, "source=digits", "epochs=1", "until=train")
    assert result.returncode == 0, result.stderr[-3000:]
    # MLflow's own way of choosing an experiment wins over the project's default
    chosen = mlflow_run(project, "source=digits", "until=fetch", MLFLOW_EXPERIMENT_NAME="chosen-by-the-user")
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    port = free_port()
    # as `make ui` serves the local store: its proxied artifacts are in mlruns/
    server = start_tracking_server(
        port, project, backend=f"sqlite:///{project / 'mlflow.db'}", artifacts=project / "mlruns"
    )
    try:
        api = TrackingApi(f"http://127.0.0.1:{port}")
        # every pipeline above ran in the project's own experiment, made by the first one
        assert api.experiment(PROJECT_NAME)["lifecycle_stage"] == "active"
        assert api.runs(f"tags.`{STEP_TAG}` = 'pipeline'", experiment="Default") == []
        [elsewhere] = api.runs(f"tags.`{STEP_TAG}` = 'pipeline'", experiment="chosen-by-the-user")
        assert values(elsewhere, "tags")["pipeline.left_out"] == "train,build,systemtest,promote"
        pipelines = api.runs(f"tags.`{STEP_TAG}` = 'pipeline'")
        by_id = {run["info"]["run_id"]: run for run in api.runs("")}

        # stopped after training: exactly fetch and train, the rest left out on purpose, FINISHED
        part = pipelines[0]
        assert part["info"]["run_name"] == "digits vgg11_bn 1 epochs · until train"
        assert part["info"]["status"] == "FINISHED"
        part_children = api.runs(f"tags.`mlflow.parentRunId` = '{part['info']['run_id']}'")
        assert sorted(c["info"]["run_name"] for c in part_children) == ["fetch (reused)", "train"]
        assert values(part, "tags")["pipeline.left_out"] == "build,systemtest,promote"
        # the UI's System metrics tab of its train run: MLflow's own sampling while it trained
        train = next(c for c in part_children if c["info"]["run_name"] == "train")
        sampled = {key for key in values(train, "metrics") if key.startswith("system/")}
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= sampled

        # the first pipeline and its step runs, named for what they are
        first = by_id[first_run.info.run_id]
        assert first["info"]["run_name"] == "digits vgg11_bn 3 epochs"
        first_children = api.runs(f"tags.`mlflow.parentRunId` = '{first_run.info.run_id}'")
        assert sorted(c["info"]["run_name"] for c in first_children) == sorted(STEPS)

        # every pipeline carries its steps' headline results: each equal to the value of the
        # step run it ran or reused
        all_reused = 0
        for pipeline in pipelines:
            name, tags = pipeline["info"]["run_name"], values(pipeline, "tags")
            if POINT_TAG in tags:
                assert name.endswith(f" · {tags[POINT_TAG]}"), name
            if "summary.json" not in api.artifacts(pipeline["info"]["run_id"]):
                # its orchestrator was killed (SIGKILL) before it could write its results
                assert pipeline["info"]["status"] == "FAILED", name
                continue
            steps = api.runs(f"tags.`mlflow.parentRunId` = '{pipeline['info']['run_id']}'")
            sources = {}
            for child in steps:
                child_tags = values(child, "tags")
                step = child_tags.get(STEP_TAG) or child_tags[REUSED_STEP_TAG]
                assert child["info"]["run_name"] in (step, f"{step} (reused)"), name
                if REUSED_FROM_TAG in child_tags:
                    sources[step] = by_id[child_tags[REUSED_FROM_TAG]]
                elif child["info"]["status"] == "FINISHED":
                    sources[step] = child
            reused = [c for c in steps if REUSED_FROM_TAG in values(c, "tags")]
            all_reused += len(reused) == len(STEPS)
            metrics = values(pipeline, "metrics")
            for step, source in sources.items():
                spec = HEADLINES[step]
                for key, headline in spec.metrics.items():
                    if key in values(source, "metrics"):
                        assert metrics[headline] == values(source, "metrics")[key], (name, headline)
                for key, headline in spec.numeric_params.items():
                    assert metrics[headline] == float(values(source, "params")[key]), (name, headline)
                for key, headline in spec.tags.items():
                    if key in values(source, "tags"):
                        assert tags[headline] == values(source, "tags")[key], (name, headline)
        assert all_reused >= 1  # the unchanged re-run: every headline from reused runs
        headline = {"train.test_accuracy", "served.test_accuracy", "served.top1_agreement",
                    "served.latency_p99_ms", "image.size_mb", "promoted"}  # fmt: skip
        assert headline <= set(values(first, "metrics"))

        # the registered version comes from the train run's LoggedModel, by its models:/ URI
        version = api.get("model-versions/get", name="cifar-classifier", version="1")["model_version"]
        assert version["source"].startswith("models:/m-")
        model = api.get(f"logged-models/{version['source'].removeprefix('models:/')}")["model"]
        assert model["info"]["source_run_id"] == version["run_id"]
        assert values(by_id[version["run_id"]], "tags")[STEP_TAG] == "train"
    finally:
        stop_tracking_server(server)
