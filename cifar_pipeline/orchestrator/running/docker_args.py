"""How step containers are started: image, network, mounts, GPUs."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

from cifar_pipeline.step_declarations import StepDeclaration

log = logging.getLogger(__name__)

DockerArgs = dict[str, str | bool]


def docker_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parsed = urlparse(host)
    return parsed.path if parsed.scheme == "unix" else "/var/run/docker.sock"


def host_has_nvidia_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=False)
    return result.returncode == 0 and b"GPU" in result.stdout


def step_docker_args(
    step: StepDeclaration, artifact_root: Path | None, gpus: bool, read_only: list[Path] | None = None
) -> DockerArgs:
    """`docker run` flags for one step, as MLflow's docker_args (one value per flag name),
    from the resources it declares.

    - network=host: the steps reach a tracking server on the host's loopback (a local
      store is served by one, tracking_server.py), and the system test reaches the
      inference container's loopback-published port.
    - `artifact_root`: an experiment whose artifacts are plain files, not proxied by the
      tracking server: MLflow mounts the run's own artifact folder only, and the step also
      reads upstream runs' artifacts, so the whole root is mounted at the same path.
    - `read_only`: host paths the step reads (a local data folder or archive), mounted
      read-only at the same path. MLflow passes one flag per name, so at most one.
    """
    resources = step.resources
    args: DockerArgs = {"label": f"cifar-pipeline.step={step.name}"}
    if resources.host_network:
        args["network"] = "host"
    if artifact_root is not None:
        args["volume"] = f"{artifact_root}:{artifact_root}"
    if resources.docker_socket:
        socket = docker_socket()
        args["v"] = f"{socket}:/var/run/docker.sock"
    if read_only:
        if len(read_only) > 1:
            raise ValueError(f"one read-only mount per step; got {read_only}")
        path = str(read_only[0]).replace('"', '""')  # docker parses --mount as CSV: quote the paths
        args["mount"] = f'type=bind,"source={path}","target={path}",readonly'
    if resources.shm_size:
        # DataLoader workers pass batches, and NCCL ranks talk, through /dev/shm: Docker's 64 MB is too small
        args["shm-size"] = resources.shm_size
    if gpus and resources.gpu:
        args["gpus"] = "all"
    return args
