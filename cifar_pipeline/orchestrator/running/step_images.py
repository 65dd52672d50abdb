"""The step images: one per step, from the stages of the top-level Dockerfile.

Each step has an environment (`<step>-env`: base image + that step's pinned
dependencies) and an image (`<step>`: the environment + the project's code). The
environment's image ID is the environment part of the step's key; the code part is
what the step loaded (code_trace.py), so the code image's own ID does not matter to the
cache, only which image each run ran.

Every code image is tagged `cifar-pipeline-<step>:<first 12 hex digits of its ID>`: a
tag that always names the same content, so pipelines from different checkouts running
at once on one engine each run exactly the image they built. `:latest` (what
steps/<step>/MLproject names, for running a step alone) is only moved by
`python -m cifar_pipeline.orchestrator.running.step_images --tag-latest` (`make images`).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from typing import Any

from cifar_pipeline import docker_utils
from cifar_pipeline.orchestrator.running.requirement_sets import as_pip_arguments, pinned_requirements
from cifar_pipeline.step_declarations import PIPELINE_STEPS, PROJECT_DIR

log = logging.getLogger(__name__)

REQUIREMENTS_DIR = PROJECT_DIR / "requirements"
STEP_LABEL = "cifar-pipeline.step"
# The layer every step image shares (requirements/common.txt), below each step's own.
COMMON = "common"
STEPS = PIPELINE_STEPS.names
# What a step's image also carries (the build step's: the inference image's wheels).
EXTRA_REQUIREMENTS = {d.name: d.extra_requirements for d in PIPELINE_STEPS if d.extra_requirements}


def repository(step: str) -> str:
    return f"cifar-pipeline-{step}"


@dataclass(frozen=True)
class Environment:
    """A step's environment: the `<step>-env` image and the pinned packages it installs."""

    step: str
    image_id: str
    packages: dict[str, str] = field(default_factory=dict)


def requirement_build_args() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Build args `<NAME>_REQUIREMENTS` for every stage, and each step's packages by step."""
    args: dict[str, str] = {}
    packages: dict[str, dict[str, str]] = {}
    for name in (COMMON, *STEPS, *(n for extra in EXTRA_REQUIREMENTS.values() for n in extra)):
        pinned = pinned_requirements(REQUIREMENTS_DIR, name)
        args[f"{name.upper()}_REQUIREMENTS"] = as_pip_arguments(pinned)
        packages[name] = pinned
    for step, extras in EXTRA_REQUIREMENTS.items():
        packages[step] = {**packages[step], **{f"{e}:{p}": v for e in extras for p, v in packages[e].items()}}
    for step in STEPS:
        packages[step] = {**packages[COMMON], **packages[step]}
    return args, packages


class StepImages:
    """Builds the step environments and images; every build after the first hits the cache."""

    def __init__(self, docker: Any, base_image: str, pip_args: dict[str, str]) -> None:
        self.docker = docker
        self.base_image = base_image
        requirement_args, self.packages = requirement_build_args()
        # Every stage's arguments on every build: the classic builder builds (from cache)
        # all stages before the target, and a stage's own argument is all its layers see.
        self.buildargs = {"BASE_IMAGE": base_image, **pip_args, **requirement_args}

    def _build(self, step: str, target: str, tag: str | None = None) -> Any:
        try:
            return docker_utils.build_image(
                self.docker,
                PROJECT_DIR,
                tag,
                buildargs=self.buildargs,
                labels={STEP_LABEL: step},
                target=target,
                network_mode="host",  # the wheelhouse, if any, is served on the host's loopback
            )
        except docker_utils.ImageBuildError as exc:
            raise docker_utils.ImageBuildError(f"step {step}: its image cannot be built: {exc}") from exc

    def environment(self, step: str) -> Environment:
        image = self._build(step, f"{step}-env")
        return Environment(step, str(image.id), self.packages[step])

    def image(self, step: str) -> str:
        """Build the step's code image; return its immutable reference (repository:tag)."""
        image = self._build(step, step)
        reference = f"{repository(step)}:{str(image.id).removeprefix('sha256:')[:12]}"
        image.tag(*reference.split(":"))
        return reference


def main(argv: list[str] | None = None) -> None:
    """`make images`: build every step image and point `cifar-pipeline-<step>:latest` at it."""
    from cifar_pipeline.cli import configure_logging
    from cifar_pipeline.orchestrator.running.wheelhouse import pip_build_args

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--base-image", default="python:3.11-slim")
    parser.add_argument("--find-links", default="", help="a wheelhouse URL (empty: the package index)")
    parser.add_argument("--tag-latest", action="store_true", help="also tag each image :latest")
    args = parser.parse_args(argv)
    configure_logging()
    docker = docker_utils.connect()
    images = StepImages(docker, args.base_image, pip_build_args(args.find_links))
    for step in STEPS:
        reference = images.image(step)
        size = docker.images.get(reference).attrs["Size"]
        if args.tag_latest:
            docker.images.get(reference).tag(repository(step), "latest")
        log.info("%-11s %s  %5.0f MB", step, reference, size / 1e6)


if __name__ == "__main__":
    main()
