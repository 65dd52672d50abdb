"""Each image's pinned requirements: the names in requirements/<name>.txt, the versions
from requirements/pins.txt, the project's one pinned set.

The step images get these as build arguments (see the top-level Dockerfile), so a
step's environment depends on its own pins only; the same resolved list is recorded in
each step's key, which is how a re-run can say "environment changed: fastapi 0.165.0→0.166.0".
"""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

PINS_FILE = "pins.txt"


class RequirementsError(ValueError):
    """A requirements file names a package the pinned set does not pin, or cannot be read."""


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RequirementsError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def read_pins(directory: Path) -> dict[str, tuple[str, str]]:
    """canonical name -> (name as written, version) for every `name==version` in pins.txt."""
    pins: dict[str, tuple[str, str]] = {}
    for line in _lines(directory / PINS_FILE):
        name, sep, version = line.partition("==")
        if not sep or not version.strip():
            raise RequirementsError(f"{directory / PINS_FILE}: {line!r} is not name==version")
        pins[canonicalize_name(name.strip())] = (name.strip(), version.strip())
    return pins


def requirement_names(path: Path) -> list[str]:
    """The package names a requirements file asks for, following `-r` includes."""
    names: list[str] = []
    for line in _lines(path):
        if line.startswith(("-c", "--constraint")):
            continue
        if line.startswith(("-r", "--requirement")):
            included = line.split(maxsplit=1)[1] if " " in line else line[2:]
            names += requirement_names(path.parent / included.strip())
            continue
        try:
            names.append(Requirement(line).name)
        except InvalidRequirement as exc:
            raise RequirementsError(f"{path}: {line!r} is not a requirement ({exc})") from exc
    return names


def pinned_requirements(directory: Path, name: str) -> dict[str, str]:
    """requirements/<name>.txt resolved against the pinned set: package -> version, sorted."""
    pins = read_pins(directory)
    path = directory / f"{name}.txt"
    resolved: dict[str, str] = {}
    for package in requirement_names(path):
        pin = pins.get(canonicalize_name(package))
        if pin is None:
            raise RequirementsError(f"{path}: {package} has no version in {directory / PINS_FILE}")
        resolved[pin[0]] = pin[1]
    return dict(sorted(resolved.items()))


def as_pip_arguments(packages: dict[str, str]) -> str:
    """`name==version ...`: what a Dockerfile's `pip install $X_REQUIREMENTS` installs."""
    return " ".join(f"{name}=={version}" for name, version in packages.items())
