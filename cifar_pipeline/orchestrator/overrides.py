"""Command-line glue between MLproject's parameters and Hydra."""

from __future__ import annotations

import re
import shlex

OVERRIDES_ARG = "overrides="
# MLproject parameters whose values are free text (URLs, checksums, registry hosts):
# passed to Hydra quoted, so `=`, `?`, `&`, `:` or spaces are not read as override syntax.
LITERAL_PARAMS = {
    "data_url=": "data.data_url",
    "data_checksum=": "data.data_checksum",
    "registry=": "serve.registry",
    "rerun=": "cache.rerun",
}


def hydra_quote(value: str) -> str:
    """A string as a single-quoted Hydra override value.

    Hydra reads backslashes literally except before a quote (or the closing quote), so
    only those runs are doubled, and each quote is escaped.
    """
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


def expand_overrides(argv: list[str]) -> list[str]:
    """Turn MLproject's arguments into Hydra overrides.

    MLflow passes each parameter as one shell-quoted word, so `-P overrides="a=1 b=2"`
    arrives as the one argument `overrides=a=1 b=2`: it is split into overrides (flags such
    as `-m` go first, where Hydra's parser expects them). Literal
    parameters (`data_url=...`) become quoted overrides of their config key when set, and
    are dropped when empty so the data config's default stands.
    """
    expanded: list[str] = []
    flags: list[str] = []  # e.g. -m: Hydra's parser takes flags only before the overrides
    for arg in argv:
        literal = next((p for p in LITERAL_PARAMS if arg.startswith(p)), None)
        if arg.startswith(OVERRIDES_ARG):
            for word in shlex.split(arg[len(OVERRIDES_ARG) :]):
                (flags if word.startswith("-") else expanded).append(word)
        elif literal is not None:
            if value := arg[len(literal) :]:
                expanded.append(f"{LITERAL_PARAMS[literal]}={hydra_quote(value)}")
        else:
            expanded.append(arg)
    return expanded[:1] + flags + expanded[1:]
