"""Docker helpers shared by the orchestrator and the steps: connect, build, run, clean up."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container
from docker.models.images import Image

log = logging.getLogger(__name__)

LABEL = "cifar-pipeline"


class DockerUnavailable(RuntimeError):
    """No Docker engine answers."""


class ImageBuildError(RuntimeError):
    """`docker build` failed; the message carries the tail of the build log."""


class ImagePushError(RuntimeError):
    """`docker push` failed; the message names the reference and the engine's error."""


class ContainerNotReady(RuntimeError):
    """A started container did not become ready in time, or exited."""


def connect() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        raise DockerUnavailable(
            f"Docker engine unreachable ({exc.__class__.__name__}: {exc}); "
            "start the engine or point DOCKER_HOST at one"
        ) from exc
    return client


def build_image(
    client: docker.DockerClient,
    context: Path,
    tag: str | None,
    buildargs: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    dockerfile: str = "Dockerfile",
    network_mode: str | None = None,
    target: str | None = None,
) -> Image:
    """Build with the classic builder, streaming the build log to the logger.

    A failure names the Dockerfile instruction that failed and ends with the build log's tail.
    """
    lines: list[str] = []
    image_id = None
    instruction = "(before the first instruction)"
    name = tag or f"target {target}"
    stream = client.api.build(
        path=str(context),
        tag=tag,
        dockerfile=dockerfile,
        buildargs=buildargs or {},
        labels=labels or {},
        rm=True,
        forcerm=True,
        decode=True,
        network_mode=network_mode,
        target=target,
    )
    for chunk in stream:
        if "stream" in chunk:
            text = chunk["stream"].rstrip()
            if text:
                lines.append(text)
                if text.startswith("Step "):
                    instruction = text
                # Dockerfile steps that run at INFO for people at a terminal; the rest at DEBUG.
                running = text.startswith("Step ") or text.startswith(" ---> Running")
                log.log(logging.INFO if running else logging.DEBUG, "  %s", text)
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
        if "error" in chunk:
            tail = "\n".join([*lines[-15:], chunk["error"].strip()])
            raise ImageBuildError(f"building {name} failed at {instruction!r}:\n{tail}")
    if image_id is None:
        raise ImageBuildError(f"building {name} produced no image")
    return client.images.get(image_id)


def push_image(client: docker.DockerClient, image: Image, repository: str, tag: str) -> str:
    """Tag `image` as repository:tag, push it, and return the registry's manifest digest.

    On failure the registry tag is removed again, so no local name suggests a push that
    did not happen.
    """
    image.tag(repository, tag)
    try:
        return _push(client, repository, tag)
    except ImagePushError:
        client.images.remove(f"{repository}:{tag}", noprune=True)
        raise


def _push(client: docker.DockerClient, repository: str, tag: str) -> str:
    reference = f"{repository}:{tag}"
    digest = None
    try:
        for chunk in client.api.push(repository, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise ImagePushError(f"pushing {reference} failed: {chunk['error'].strip()}")
            digest = chunk.get("aux", {}).get("Digest", digest)
    except (APIError, requests.RequestException) as exc:
        raise ImagePushError(f"pushing {reference} failed: {exc}") from exc
    if digest is None:
        raise ImagePushError(f"pushing {reference}: the engine reported no manifest digest")
    return str(digest)


class ContainerLogRecorder:
    """Copies a container's output into a file, from a thread, until the container stops.

    Keeps a step's output when the container dies without a chance to log it (killed,
    out of memory): the caller attaches the file to the step's run. It waits for the
    container to appear, since `docker run` is only just starting when this is created.
    """

    def __init__(self, name: str, path: Path, appear_timeout: float = 120.0) -> None:
        self.name, self.path, self.appear_timeout = name, path, appear_timeout
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._record, name=f"logs-{name}", daemon=True)
        self._thread.start()

    def _record(self) -> None:
        client = connect()
        deadline = time.monotonic() + self.appear_timeout
        container = None
        while container is None:
            try:
                container = client.containers.get(self.name)
            except NotFound:
                if self._stopped.is_set() or time.monotonic() > deadline:
                    return
                time.sleep(0.2)
        try:
            with self.path.open("wb") as output:
                for chunk in container.logs(stream=True, follow=True):
                    output.write(chunk)
                    output.flush()
        except (APIError, NotFound, requests.RequestException) as exc:  # removed while streaming
            log.debug("stopped recording %s: %s", self.name, exc)

    def stop(self, timeout: float = 10.0) -> Path | None:
        """Wait for the recording to end; the file, if anything was recorded."""
        self._stopped.set()
        self._thread.join(timeout)
        return self.path if self.path.exists() and self.path.stat().st_size else None


def stop_container(client: docker.DockerClient, name_or_id: str, grace: float) -> None:
    """SIGTERM to the container's process, SIGKILL after `grace` seconds; back once it stopped."""
    try:
        client.containers.get(name_or_id).stop(timeout=max(0, round(grace)))
    except NotFound:
        return
    except APIError as exc:  # e.g. it is being removed (--rm) already
        log.warning("could not stop container %s: %s", name_or_id, exc)


def remove_container(client: docker.DockerClient, name_or_id: str) -> bool:
    """Force-remove a container if it exists; True if one was removed."""
    try:
        client.containers.get(name_or_id).remove(force=True)
    except NotFound:
        return False
    except APIError as exc:  # e.g. removal already in progress
        log.warning("could not remove container %s: %s", name_or_id, exc)
        return False
    return True


@contextmanager
def serving_container(
    client: docker.DockerClient, image: str, name: str, port: int = 8080, **kwargs: Any
) -> Iterator[tuple[Container, str]]:
    """Run `image` on a free loopback port; yield it and its base URL; always remove it."""
    container = client.containers.run(
        image,
        name=name,
        detach=True,
        labels={LABEL: "serving"},
        ports={f"{port}/tcp": ("127.0.0.1", None)},
        **kwargs,
    )
    try:
        container.reload()
        host_port = container.attrs["NetworkSettings"]["Ports"][f"{port}/tcp"][0]["HostPort"]
        yield container, f"http://127.0.0.1:{host_port}"
    finally:
        container.remove(force=True)
        log.info("removed container %s", name)


def wait_until_ready(container: Container, url: str, timeout: float, interval: float = 0.25) -> float:
    """Poll `url` until it answers 200; fail fast if the container exits. Returns seconds waited."""
    started = time.monotonic()
    deadline = started + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        container.reload()
        if container.status in ("exited", "dead"):
            raise ContainerNotReady(
                f"container {container.name} exited ({container.attrs['State'].get('ExitCode')}) "
                "before it was ready"
            )
        try:
            response = requests.get(url, timeout=2)
            if response.status_code == 200:
                return time.monotonic() - started
            last_error = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last_error = exc.__class__.__name__
        time.sleep(interval)
    raise ContainerNotReady(f"{url} not ready after {timeout:.0f}s (last: {last_error})")
