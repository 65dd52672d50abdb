"""The Kubernetes backend configuration renders a valid Job for every step.

Uses MLflow's own code for `mlflow run steps/<step> --backend kubernetes`: its config
parser and its Job templating, with each step's real MLproject command.
"""

import copy
import json
import re
from pathlib import Path

import pytest
from mlflow.projects import _parse_kubernetes_config
from mlflow.projects._project_spec import load_project
from mlflow.projects.kubernetes import _get_kubernetes_job_definition, _get_run_command

from cifar_pipeline.tracking import STEPS

ROOT = Path(__file__).resolve().parents[2]
# One backend config per step: each step's image goes to a repository of its own.
BACKEND = {step: f"k8s/{step}.json" for step in STEPS}
RUN_ID = "0123456789abcdef0123456789abcdef"
REQUIRED = {name: RUN_ID for name in ("data_run_id", "model_run_id", "image_run_id", "systemtest_run_id")}
IMAGE, DIGEST = "registry.example.com/ml/cifar-pipeline-step:5a1b2c3", "sha256:" + "a" * 64


def render(step: str, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, list[str]]:
    monkeypatch.chdir(ROOT)  # the template path is relative to where `mlflow run` is started
    config = _parse_kubernetes_config(json.loads((ROOT / BACKEND[step]).read_text()))
    project = load_project(str(ROOT / "steps" / step))
    entry_point = project.get_entry_point("main")
    parameters = {name: REQUIRED[name] for name in entry_point.parameters if name in REQUIRED}
    command = _get_run_command([entry_point.compute_command(parameters, storage_dir=None)])
    env = {"MLFLOW_RUN_ID": RUN_ID, "MLFLOW_EXPERIMENT_ID": "0", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    job = _get_kubernetes_job_definition(
        project.name, IMAGE, DIGEST, command, env, copy.deepcopy(config["kube-job-template"])
    )
    return job, command


@pytest.mark.parametrize("step", STEPS)
def test_every_step_renders_a_job_that_runs_it(step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    job, command = render(step, monkeypatch)
    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    name = job["metadata"]["name"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)  # a DNS-1123 label
    assert len(name) <= 63
    assert name.startswith(f"cifar-pipeline-{step}-")
    spec = job["spec"]
    assert spec["backoffLimit"] == 0  # a failed step fails its run; resume decides what reruns
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    step_container = spec["template"]["spec"]["containers"][0]
    assert step_container["image"] == f"{IMAGE}@{DIGEST}"
    assert step_container["command"] == command
    assert command[:3] == ["python", "-m", f"steps.{step}.step"]
    env = {item["name"]: item["value"] for item in step_container["env"]}
    assert env["MLFLOW_RUN_ID"] == RUN_ID
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "{replaced" not in json.dumps(job)  # every placeholder filled in


def test_train_gets_gpus_and_shared_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    job, _ = render("train", monkeypatch)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"


@pytest.mark.parametrize("step", ["build", "systemtest"])
def test_docker_steps_get_an_engine_that_ends_with_the_step(
    step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, _ = render(step, monkeypatch)
    pod = job["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1  # MLflow fills containers[0]; nothing else may keep the pod alive
    [engine] = pod["initContainers"]
    assert engine["restartPolicy"] == "Always"  # a native sidecar: stops when the step ends
    port = re.search(r"tcp://127\.0\.0\.1:(\d+)", " ".join(engine["args"]))
    assert port is not None
    env = {item["name"]: item["value"] for item in pod["containers"][0]["env"]}
    assert env["DOCKER_HOST"] == f"tcp://127.0.0.1:{port.group(1)}"


def test_each_step_pushes_its_image_to_a_repository_of_its_own() -> None:
    """MLflow tags a project image `<repository-uri>:<git commit>`: a shared repository
    would let one step's image overwrite another's."""
    repositories = {step: json.loads((ROOT / BACKEND[step]).read_text())["repository-uri"] for step in STEPS}
    assert all(uri.endswith(f"/cifar-pipeline-{step}") for step, uri in repositories.items())
    assert len(set(repositories.values())) == len(STEPS)
