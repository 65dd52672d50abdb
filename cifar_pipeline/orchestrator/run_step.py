"""Run one step alone, as the pipeline runs it: `python -m cifar_pipeline.orchestrator.run_step`.

    python -m cifar_pipeline.orchestrator.run_step fetch -P source=digits
    python -m cifar_pipeline.orchestrator.run_step train -P data_run_id=<id> -P epochs=2

The step's MLflow project (steps/<step>) runs in its image (`cifar-pipeline-<step>:latest`
from `make images`, or --image) with the Docker flags the pipeline gives it: host network,
the Docker socket for build and systemtest, shared memory and the GPUs for train, a local
data folder or archive (fetch's data_url) mounted read-only. The run lands in the project's
experiment unless MLFLOW_EXPERIMENT_NAME/_ID say otherwise. With a local store the
container reaches it through a tracking server this command serves it with while the step
runs, as the pipeline does: no store or artifact folder is mounted by hand.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from cifar_pipeline import names
from cifar_pipeline.local_store import absolute_tracking_uri, ensure_registered, is_local_store
from cifar_pipeline.orchestrator.experiment import PROJECT_NAME, project_experiment_id
from cifar_pipeline.orchestrator.planning.plan import PipelineError, local_data_path
from cifar_pipeline.orchestrator.running.docker_args import host_has_nvidia_gpu, step_docker_args
from cifar_pipeline.orchestrator.running.step_containers import (
    file_artifact_root,
    pinned_project,
    submit_step,
)
from cifar_pipeline.orchestrator.running.tracking_server import TrackingServerError, serving
from cifar_pipeline.step_declarations import PIPELINE_STEPS, StepDeclaration

log = logging.getLogger(__name__)


def pairs(values: list[str], flag: str) -> dict[str, str]:
    """`name=value` words as a dict; a word without `=` is an error naming it."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name:
            raise ValueError(f"{flag} {value!r}: expected name=value")
        out[name] = rest
    return out


def docker_flags(values: list[str]) -> dict[str, str | bool]:
    """`-A name=value` or `-A name` (a flag), as `mlflow run` reads them."""
    return {name: rest if sep else True for name, sep, rest in (v.partition("=") for v in values)}


def experiment_id(tracking_uri: str) -> str:
    """MLflow's choice of experiment by its environment variables, else the project's."""
    if chosen := os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return chosen
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "")
    if not name or name == PROJECT_NAME:
        return project_experiment_id(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def read_only_mounts(step: StepDeclaration, params: dict[str, str]) -> list[Path]:
    """The host paths that the step's path parameters name, checked; each given as the
    absolute path the container sees it at."""
    mounts = []
    for name in step.local_path_params:
        if not params.get(name):
            continue
        data = OmegaConf.create({"source": params.get("source", ""), "data_url": params[name]})
        path = local_data_path(data)
        if path is not None:
            params[name] = str(path)
            mounts.append(path)
    return mounts


def run_step(name: str, params: dict[str, str], extra_docker_args: dict[str, str | bool], image: str) -> str:
    """Run the step to its end; return its run's status."""
    step = PIPELINE_STEPS[name]
    tracking_uri = absolute_tracking_uri(mlflow.get_tracking_uri())
    ensure_registered()
    experiment = experiment_id(tracking_uri)
    local = is_local_store(tracking_uri)
    root = file_artifact_root(experiment, MlflowClient(tracking_uri)) if local else None
    args = step_docker_args(
        step, root, step.resources.gpu and host_has_nvidia_gpu(), read_only_mounts(step, params)
    )
    args |= extra_docker_args
    with tempfile.TemporaryDirectory(prefix=f"{name}-alone-") as work, serving(tracking_uri) as server:
        project = pinned_project(step, image, Path(work)) if image else step.project
        container_uri = server.url() if server else tracking_uri
        submitted = submit_step(project, params, experiment, args, container_uri, run_name=name)
        try:
            submitted.wait()
        except BaseException:
            submitted.cancel()
            raise
        status = submitted.get_status()
        log.info("step %s: run %s %s", name, submitted.run_id, status)
        sys.stdout.write(f"{name} run {submitted.run_id}: {status}\n")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cifar_pipeline.orchestrator.run_step",
        description="Run one pipeline step alone, in its container, as an MLflow run.",
    )
    parser.add_argument("step", choices=PIPELINE_STEPS.names)
    parser.add_argument("-P", dest="params", action="append", default=[], metavar="NAME=VALUE",
                        help="a parameter of steps/<step>/MLproject")  # fmt: skip
    parser.add_argument("-A", dest="docker_args", action="append", default=[], metavar="NAME[=VALUE]",
                        help="a further `docker run` flag, as `mlflow run -A` takes it")  # fmt: skip
    parser.add_argument("--image", default="", help="the image to run (default: the MLproject's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        params = pairs(args.params, "-P")
        status = run_step(args.step, params, docker_flags(args.docker_args), args.image)
    except (ValueError, PipelineError, TrackingServerError, MlflowException, yaml.YAMLError) as exc:
        sys.stderr.write(f"error: step {args.step}: {exc}\n")
        return 2
    return 0 if status == names.FINISHED else 1


if __name__ == "__main__":
    sys.exit(main())
