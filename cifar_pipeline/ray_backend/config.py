"""The Ray backend's configuration: `--backend-config` (a JSON object or a `.json` file).

    {"address": "http://head:8265", "num_cpus": 2, "num_gpus": 1, "memory": 8000000000,
     "resources": {"docker": 1}, "docker_args": {"shm-size": "2g"}, "stop_grace_seconds": 30}

Every key is optional. `address` defaults to Ray's own convention, the `RAY_ADDRESS`
environment variable (the Ray dashboard's HTTP address, as for `ray job submit`). The
resources are those a Ray job's entrypoint asks for (`entrypoint_num_cpus`, ...), so the
job lands on a node that has them. `docker_args` are `docker run` flags in MLflow's
`-A` form (`{"network": "host"}` is `--network host`, `{"privileged": true}` a bare flag).
A key the backend does not know, or a value of the wrong kind, is refused by name.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.exceptions import ExecutionException
from mlflow.projects.utils import (
    MLFLOW_LOCAL_BACKEND_RUN_ID_CONFIG,
    PROJECT_BUILD_IMAGE,
    PROJECT_DOCKER_ARGS,
    PROJECT_DOCKER_AUTH,
    PROJECT_ENV_MANAGER,
    PROJECT_STORAGE_DIR,
    PROJECT_SYNCHRONOUS,
)

# What `mlflow.projects.run` itself adds to every backend's config.
MLFLOW_KEYS = frozenset({
    MLFLOW_LOCAL_BACKEND_RUN_ID_CONFIG, PROJECT_BUILD_IMAGE, PROJECT_DOCKER_ARGS, PROJECT_DOCKER_AUTH,
    PROJECT_ENV_MANAGER, PROJECT_STORAGE_DIR, PROJECT_SYNCHRONOUS,
})  # fmt: skip
DEFAULT_STOP_GRACE_SECONDS = 30.0
DockerArgs = dict[str, str | bool]


@dataclass(frozen=True)
class RayBackendConfig:
    address: str
    num_cpus: float = 0.0  # Ray's own default for a job's entrypoint
    num_gpus: float = 0.0
    memory: int = 0  # bytes
    resources: dict[str, float] = field(default_factory=dict)
    docker_args: DockerArgs = field(default_factory=dict)
    # SIGTERM to the container on cancel, then this long before it is killed
    stop_grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS
    poll_seconds: float = 1.0

    def submit_resources(self) -> dict[str, Any]:
        """The keyword arguments of `JobSubmissionClient.submit_job` that place the job."""
        placed: dict[str, Any] = {}
        if self.num_cpus:
            placed["entrypoint_num_cpus"] = self.num_cpus
        if self.num_gpus:
            placed["entrypoint_num_gpus"] = self.num_gpus
        if self.memory:
            placed["entrypoint_memory"] = self.memory
        if self.resources:
            placed["entrypoint_resources"] = dict(self.resources)
        return placed


def _number(key: str, value: Any, integer: bool = False) -> float:
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ExecutionException(f"ray backend config: {key}={value!r}: expected {kind} >= 0")
    if integer and value != int(value):
        raise ExecutionException(f"ray backend config: {key}={value!r}: expected {kind} >= 0")
    return float(value)


def _resources(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ExecutionException(
            f"ray backend config: resources={value!r}: expected an object of resource name -> amount"
        )
    return {str(name): _number(f"resources.{name}", amount) for name, amount in value.items()}


def docker_args_of(key: str, value: Any) -> DockerArgs:
    """`docker run` flags as MLflow takes them: name -> value, or -> true for a bare flag."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ExecutionException(f"ray backend config: {key}={value!r}: expected an object of flag -> value")
    checked: DockerArgs = {}
    for name, flag in value.items():
        if not isinstance(name, str) or not name or name.startswith("-"):
            raise ExecutionException(
                f"ray backend config: {key}: flag {name!r}: expected a name without dashes"
            )
        if flag is False:
            continue
        if not isinstance(flag, str | bool):
            raise ExecutionException(
                f"ray backend config: {key}.{name}={flag!r}: expected a string, or true for a bare flag"
            )
        checked[name] = flag
    return checked


def read_backend_config(given: dict[str, Any] | str | Path | None) -> dict[str, Any]:
    """The config as MLflow hands it over: a dict, or a path to a JSON file."""
    if given is None:
        return {}
    if isinstance(given, dict):
        return given
    path = Path(given)
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExecutionException(f"ray backend config {str(path)!r}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ExecutionException(f"ray backend config {str(path)!r}: expected a JSON object")
    return loaded


def parse_config(given: dict[str, Any] | str | Path | None) -> RayBackendConfig:
    raw = read_backend_config(given)
    known = {"address", "num_cpus", "num_gpus", "memory", "resources", "docker_args", "stop_grace_seconds"}
    unknown = sorted(set(raw) - known - MLFLOW_KEYS)
    if unknown:
        raise ExecutionException(
            f"ray backend config: unknown key(s) {', '.join(unknown)}; "
            f"expected some of {', '.join(sorted(known))}"
        )
    address = raw.get("address") or os.environ.get("RAY_ADDRESS", "")
    if not isinstance(address, str) or not address:
        raise ExecutionException(
            "ray backend config: no Ray address: set RAY_ADDRESS (the dashboard's address, "
            "e.g. http://127.0.0.1:8265) or the config's 'address'"
        )
    grace = _number("stop_grace_seconds", raw.get("stop_grace_seconds", DEFAULT_STOP_GRACE_SECONDS))
    if grace > 3600:
        raise ExecutionException(f"ray backend config: stop_grace_seconds={grace:g}: expected at most 3600")
    # flags given with `-A` on the command line add to (and win over) the config's own
    docker_args = docker_args_of("docker_args", raw.get("docker_args"))
    docker_args.update(docker_args_of("-A", raw.get(PROJECT_DOCKER_ARGS)))
    return RayBackendConfig(
        address=address,
        num_cpus=_number("num_cpus", raw.get("num_cpus", 0)),
        num_gpus=_number("num_gpus", raw.get("num_gpus", 0)),
        memory=int(_number("memory", raw.get("memory", 0), integer=True)),
        resources=_resources(raw.get("resources", {})),
        docker_args=docker_args,
        stop_grace_seconds=grace,
    )
