"""MLflow's own tracking server over a local store, for the step containers.

With a local store (no MLFLOW_TRACKING_URI, or a sqlite/file one) the containers do not
open the database file: the orchestrator serves the store on loopback while steps run and
gives them its URL, with artifacts proxied into the store's artifacts folder
(local_store.py). It starts on first use, so a pipeline whose steps are all reused starts
none, and it runs lean: one worker and no background job consumers (they poll, and would
compete with training for the cores). It ends with the orchestrator: stopped with its
worker when closed, and sent SIGTERM by Linux should the orchestrator die first.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import IO

import requests

from cifar_pipeline.cancellation import term_with_parent
from cifar_pipeline.local_store import artifacts_destination, is_local_store, is_sqlite_store
from cifar_pipeline.processes import free_port, stop_process_group

log = logging.getLogger(__name__)

START_TIMEOUT = 120.0  # seconds; it answers after about 10 on two busy cores
STOP_TIMEOUT = 15.0
# No background job consumers; the server resolves the store's proxied artifacts as the
# host does (local_store.py), for which it is told its store as the tracking URI.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class TrackingServerError(RuntimeError):
    pass


def server_command(store_uri: str, port: int) -> list[str]:
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri,
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    if is_sqlite_store(store_uri):
        command += ["--artifacts-destination", str(artifacts_destination(store_uri))]
    return command


class LocalTrackingServer:
    """`mlflow server` over `store_uri`, started by the first `url()`; a context manager."""

    def __init__(self, store_uri: str) -> None:
        if not is_local_store(store_uri):
            raise ValueError(f"{store_uri!r} is not a local store")
        self.store_uri = store_uri
        self.process: subprocess.Popen[bytes] | None = None
        self._url = ""
        self._output: IO[bytes] | None = None  # the server's output (a file with no name)

    def url(self) -> str:
        if not self._url:
            self._start()
        return self._url

    def _start(self) -> None:
        port = free_port()
        started = time.monotonic()
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 (kept open while the server runs; closed by close())
        self.process = subprocess.Popen(
            server_command(self.store_uri, port),
            env=os.environ | SERVER_ENV | {"MLFLOW_TRACKING_URI": self.store_uri},
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            # A session of its own: a Ctrl-C meant for the pipeline must not end it
            # while a cancelled step still logs its last checkpoint through it.
            start_new_session=True,
            preexec_fn=term_with_parent(),
        )
        url = f"http://127.0.0.1:{port}"
        while time.monotonic() - started < START_TIMEOUT:
            if self.process.poll() is not None:
                break
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    self._url = url
                    log.info("tracking server for the step containers: %s (%.1f s to start)", url,
                             time.monotonic() - started)  # fmt: skip
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        output = self.output_tail()
        self.close()
        raise TrackingServerError(
            f"the tracking server over {self.store_uri} did not start within {START_TIMEOUT:.0f} s; "
            f"its output ends: {output}"
        )

    def output_tail(self, lines: int = 15) -> str:
        if self._output is None:
            return ""
        self._output.seek(0)
        return "\n".join(self._output.read().decode(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        """Stop the server and its worker (one process group); wait until both are gone."""
        process, self.process, self._url = self.process, None, ""
        if process is not None and not stop_process_group(process, STOP_TIMEOUT):
            log.warning("the tracking server did not stop within %.0f s: killed it", STOP_TIMEOUT)
        if self._output is not None:
            self._output.close()
            self._output = None

    def __enter__(self) -> LocalTrackingServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@contextmanager
def serving(tracking_uri: str) -> Iterator[LocalTrackingServer | None]:
    """A server for a local store (started by its first `url()`); None for a tracking server."""
    if not is_local_store(tracking_uri):
        yield None
        return
    with LocalTrackingServer(tracking_uri) as server:
        yield server
