"""End to end, through a tracking server: a remote one restarted while the model trains, and what
MLflow's UI reads of every pipeline the files before this one ran (so this file runs last)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from cifar_pipeline.orchestrator.experiment import PROJECT_NAME
from cifar_pipeline.orchestrator.planning.cache import REUSED_FROM_TAG, REUSED_STEP_TAG
from cifar_pipeline.orchestrator.reporting.headline import HEADLINES
from cifar_pipeline.orchestrator.sweep import POINT_TAG
from cifar_pipeline.processes import free_port
from cifar_pipeline.tracking import STEP_TAG, STEPS
from tests.e2e.helpers import (
    BIN,
    children,
    mlflow_run,
    pipeline_runs,
    start_pipeline,
    subprocess_env,
    wait_for_checkpoint,
    wait_until,
)
from tests.helpers import md5_spec, write_cifar_tarball
from tests.http_files import FileServer, serve

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]


def start_tracking_server(
    port: int, store: Path, backend: str = "", artifacts: Path | None = None
) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", backend or f"sqlite:///{store / 'server.db'}",
         "--artifacts-destination", str(artifacts or store / "artifacts")],
        # without the background job consumers, which poll and would compete with the steps
        env=subprocess_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
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
    """After every pipeline of the files before this one (run, reused, resumed, swept, failed)
    and one stopped after training: what MLflow's UI reads through a real server's REST API."""
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
        assert part["info"]["run_name"] == "digits vgg11_bn 1 epoch · until train"
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
        assert first["info"]["run_name"] == "digits vgg11_bn 2 epochs"
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
