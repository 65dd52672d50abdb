"""A step image that cannot be built: the error names the step and the failing instruction."""

import os
from pathlib import Path

import docker
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


@pytest.mark.docker
def test_a_failed_build_names_the_failing_instruction(tmp_path: Path) -> None:
    base = os.environ.get("PIPELINE_BASE_IMAGE", "python:3.11-slim")
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nRUN true\nRUN echo broken >&2 && exit 3\n")
    with pytest.raises(docker_utils.ImageBuildError) as failure:
        docker_utils.build_image(docker.from_env(), tmp_path, None, target=None)
    message = str(failure.value)
    assert "failed at 'Step 3/3 : RUN echo broken >&2 && exit 3'" in message
    assert "returned a non-zero code: 3" in message
