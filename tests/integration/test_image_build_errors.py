"""A step image that cannot be built, on a real Docker engine: the error names the failing instruction."""

import os
from pathlib import Path

import docker
import pytest

from cifar_pipeline import docker_utils

pytestmark = pytest.mark.docker


def test_a_failed_build_names_the_failing_instruction(tmp_path: Path) -> None:
    base = os.environ.get("PIPELINE_BASE_IMAGE", "python:3.11-slim")
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nRUN true\nRUN echo broken >&2 && exit 3\n")
    with pytest.raises(docker_utils.ImageBuildError) as failure:
        docker_utils.build_image(docker.from_env(), tmp_path, None, target=None)
    message = str(failure.value)
    assert "failed at 'Step 3/3 : RUN echo broken >&2 && exit 3'" in message
    assert "returned a non-zero code: 3" in message
