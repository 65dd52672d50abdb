"""Deprecated calls made by the project's own code fail the tests that reach them.

pyproject.toml's filterwarnings turn a DeprecationWarning or FutureWarning (MLflow marks
its deprecations with FutureWarning, attributed to the caller) into an error when it is
attributed to a project module, and leave the libraries' own internal warnings alone.
Every test that runs a step's code in-process (fetch, train, promote, the serving app)
therefore runs with the project's deprecated calls escalated.
"""

from __future__ import annotations

import pytest

WARN = "import warnings\nwarnings.warn('this API is deprecated', {category})\n"


def run_as(module: str, category: str) -> None:
    exec(compile(WARN.format(category=category), f"<{module}>", "exec"), {"__name__": module})


@pytest.mark.parametrize("module", ["cifar_pipeline.tracking", "steps.train.step", "main", "bench.serving"])
@pytest.mark.parametrize("category", ["FutureWarning", "DeprecationWarning"])
def test_a_deprecated_call_from_the_project_is_an_error(module: str, category: str) -> None:
    with pytest.raises((FutureWarning, DeprecationWarning), match="deprecated"):
        run_as(module, category)


@pytest.mark.parametrize("module", ["mlflow.tracking.fluent", "starlette.middleware.wsgi", "stepsister"])
def test_a_librarys_own_deprecation_warning_is_not(module: str) -> None:
    run_as(module, "FutureWarning")
