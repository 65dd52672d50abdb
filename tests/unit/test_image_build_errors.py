"""A step image that cannot be built: the error names the step (the failing instruction, on a real
engine: tests/integration/test_image_build_errors.py)."""

import pytest

from cifar_pipeline import docker_utils
from cifar_pipeline.orchestrator.running import step_images as images
from cifar_pipeline.orchestrator.running.step_images import StepImages


def test_the_error_names_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_build(*args: object, **kwargs: object) -> None:
        raise docker_utils.ImageBuildError("building target train-env failed at 'Step 29/30 : RUN pip ...'")

    monkeypatch.setattr(images.docker_utils, "build_image", failing_build)
    with pytest.raises(
        docker_utils.ImageBuildError, match=r"^step train: its image cannot be built: .*Step 29/30"
    ):
        StepImages(object(), "python:3.11-slim", {}).environment("train")
