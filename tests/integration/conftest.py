"""Fixtures for the integration tests: the inference app served over real HTTP, once per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.serving_server import exported_model, serving


@pytest.fixture(scope="module")
def served_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A small exported classifier in a model folder, as the inference image serves it; and the
    PyTorch model, for the reference logits."""
    directory = tmp_path_factory.mktemp("model")
    return directory, exported_model(directory)


@pytest.fixture(scope="module")
def served_url(served_model: tuple[Path, Any]) -> Iterator[str]:
    """The inference app under uvicorn on a loopback port: its base URL."""
    with serving(served_model[0]) as url:
        yield url
