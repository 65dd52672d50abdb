"""The one seam that runs a step: `StepRunner`, and the engine behind it today, Docker on
this machine through MLflow's local project backend (`DockerStepRunner`).

The loop hands a runner a step's declaration, its parameters and what its hooks resolved
(GPUs, read-only mounts), and gets back the step's result; it never starts a container
itself. Another engine (a cluster) is another `StepRunner`: nothing else in the
orchestrator changes for it.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from docker.errors import NotFound
from mlflow.tracking import MlflowClient

from cifar_pipeline import docker_utils
from cifar_pipeline.orchestrator.faults import orphans
from cifar_pipeline.orchestrator.hooks import Resolved
from cifar_pipeline.orchestrator.planning.plan import PipelineError
from cifar_pipeline.orchestrator.reporting.report import StepResult
from cifar_pipeline.orchestrator.running.requirement_sets import RequirementsError
from cifar_pipeline.orchestrator.running.step_containers import StepContainers
from cifar_pipeline.orchestrator.running.step_images import Environment, StepImages
from cifar_pipeline.orchestrator.running.wheelhouse import pip_build_args
from cifar_pipeline.step_declarations import StepDeclaration

log = logging.getLogger(__name__)


class StepRunner(Protocol):
    """Runs steps as child runs of the active MLflow run."""

    @property
    def killed(self) -> StepResult | None:
        """The step a cancellation stopped, once `run` raised Cancelled."""

    def start(self, experiment_id: str) -> None:
        """Be ready to run steps (reach the engine, end what dead orchestrators left)."""

    def environment(self, step: StepDeclaration) -> Environment:
        """The step's environment, ready to run: part of its cache key."""

    def image_present(self, image_id: str) -> bool:
        """Whether an image a build step made is still where steps run."""

    def run(self, step: StepDeclaration, params: dict[str, Any], resolved: Resolved) -> StepResult:
        """Run the step to its end; raise Cancelled (after stopping it) when cancelled."""

    def hurry(self, signum: int) -> None:
        """A second Ctrl-C while cancelling: stop the running step now."""

    def close(self) -> None:
        """Nothing runs any more: release what `start` and `run` set up."""


class DockerStepRunner:
    """Each step in its own image, as an MLflow project with a `docker_env`, on this
    machine's Docker engine (step_container.py)."""

    def __init__(self, client: MlflowClient, docker_settings: Any) -> None:
        self.client = client
        self.settings = docker_settings  # configs/docker: base_image, pip_find_links, stop_grace_seconds
        self.containers = StepContainers(client, stop_grace=30.0)
        self.docker: Any = None
        self.images: StepImages | None = None

    @property
    def killed(self) -> StepResult | None:
        return self.containers.killed

    def start(self, experiment_id: str) -> None:
        self.containers.stop_grace = stop_grace_seconds(self.settings.stop_grace_seconds)
        self.docker = docker_utils.connect()
        ended = orphans.end_orphaned_containers(self.docker, self.containers.stop_grace)
        ended += orphans.end_orphaned_pipeline_runs(self.client, experiment_id)
        if ended:
            log.warning("ended what dead orchestrators left running: %s", ", ".join(ended))
        try:
            self.images = StepImages(
                self.docker, self.settings.base_image, pip_build_args(self.settings.pip_find_links)
            )
        except (RequirementsError, ValueError) as exc:
            raise PipelineError(str(exc)) from exc

    def _images(self) -> StepImages:
        if self.images is None:
            raise RuntimeError("DockerStepRunner.start() was not called")
        return self.images

    def environment(self, step: StepDeclaration) -> Environment:
        log.info("step %s: building its environment", step.name)
        return self._images().environment(step.name)

    def image_present(self, image_id: str) -> bool:
        if not image_id:
            return False
        try:
            self.docker.images.get(image_id)
        except NotFound:
            return False
        return True

    def run(self, step: StepDeclaration, params: dict[str, Any], resolved: Resolved) -> StepResult:
        image = self._images().image(step.name)
        return self.containers.run(step, image, params, resolved.gpus, resolved.mounts)

    def hurry(self, signum: int) -> None:
        self.containers.hurry(signum)

    def close(self) -> None:
        self.containers.close()


def stop_grace_seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
        raise PipelineError(f"docker.stop_grace_seconds={value!r}: expected seconds, from 0 to 3600")
    return float(value)
