"""The shell command a Ray job runs on its node: the project's container, and its stop.

Ray stops a job by sending SIGTERM to the entrypoint's processes, then SIGKILL after
`RAY_JOB_STOP_WAIT_TIME_S`. A killed `docker run` client leaves its container running,
so the entrypoint traps the signal and stops the container itself (`docker stop`, with
the grace period), and the job is given that long and a margin before Ray's SIGKILL.
"""

from __future__ import annotations

import shlex
from urllib.parse import urlparse

from mlflow.exceptions import ExecutionException

from cifar_pipeline.ray_backend.config import DockerArgs

STOP_MARGIN_SECONDS = 15  # past the grace period: `docker stop` returning, the shell ending
RUN_LABEL = "mlflow.run_id"  # on the container: which run it is, for whoever lists containers


def docker_flags(docker_args: DockerArgs) -> list[str]:
    """MLflow's `-A` form as `docker run` flags (as MLflow's local backend spells them)."""
    flags: list[str] = []
    for name, value in docker_args.items():
        flag = f"-{name}" if len(name) == 1 else f"--{name}"
        flags += [flag] if value is True else [flag, str(value)]
    return flags


def remote_tracking_uri(uri: str) -> str:
    """The tracking URI a container on another node can use: a server, not a local store."""
    if urlparse(uri).scheme not in ("http", "https"):
        raise ExecutionException(
            f"the ray backend needs a tracking server that every node reaches (MLFLOW_TRACKING_URI="
            f"http://...), not {uri!r}: a local store is on this machine only; start one with "
            "`mlflow server --host 0.0.0.0` and point MLFLOW_TRACKING_URI at it"
        )
    return uri


def docker_run(
    image: str,
    container: str,
    env: dict[str, str],
    docker_args: DockerArgs,
    run_id: str,
    volumes: list[str] | None = None,
) -> list[str]:
    """`docker run ... <image>`: the entry point's command follows, as MLflow appends it."""
    args = ["docker", "run", "--rm", "--name", container, "--label", f"{RUN_LABEL}={run_id}"]
    args += docker_flags({k: v for k, v in docker_args.items() if k not in ("rm", "name")})
    for volume in volumes or []:
        args += ["-v", volume]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    return [*args, image]


def job_entrypoint(docker_run: list[str], command: str, container: str, stop_grace_seconds: float) -> str:
    """`docker run` in the background, its container stopped on SIGTERM/SIGINT, its exit code kept.

    `command` is the entry point's shell command with its parameters quoted (MLflow's
    `compute_command`), run in the container as MLflow's local backend runs it.
    """
    grace = int(stop_grace_seconds)
    name = shlex.quote(container)
    # the trap is set before `docker run` starts: a signal that comes first still stops it
    stop = f"stopped=1; docker stop --time {grace} {name} >/dev/null 2>&1"
    return (
        f"stopped=0; trap {shlex.quote(stop)} TERM INT; "
        f"{shlex.join(docker_run)} {command} & pid=$!; "
        # a trapped signal ends `wait` early: wait again until `docker run` has returned
        "wait $pid; code=$?; while kill -0 $pid 2>/dev/null; do wait $pid; code=$?; done; "
        # a client stopped before its container had started: the engine may still start it
        f'if [ "$stopped" = 1 ]; then docker rm --force {name} >/dev/null 2>&1; fi; '
        "exit $code"
    )


def stop_wait_seconds(stop_grace_seconds: float) -> int:
    """What the job asks of Ray before its SIGKILL (RAY_JOB_STOP_WAIT_TIME_S)."""
    return int(stop_grace_seconds) + STOP_MARGIN_SECONDS
