"""Command-line glue between MLproject's parameters and Hydra."""

from __future__ import annotations

import shlex

OVERRIDES_ARG = "overrides="


def expand_overrides(argv: list[str]) -> list[str]:
    """Split MLproject's single `overrides=...` argument into separate Hydra overrides.

    MLflow passes each parameter as one shell-quoted word, so `-P overrides="a=1 b=2"`
    arrives as the one argument `overrides=a=1 b=2`.
    """
    expanded: list[str] = []
    for arg in argv:
        if arg.startswith(OVERRIDES_ARG):
            expanded.extend(shlex.split(arg[len(OVERRIDES_ARG) :]))
        else:
            expanded.append(arg)
    return expanded
