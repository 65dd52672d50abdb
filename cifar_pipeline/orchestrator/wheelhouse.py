"""Serve a local wheelhouse to `docker build` over loopback HTTP.

Where containers cannot reach a package index (air-gapped hosts, mirrors with
private certificates), the host resolves the pinned set into a wheelhouse and image
builds install from it. Serving it over HTTP keeps gigabytes of wheels out of the
build context and out of image layers.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

log = logging.getLogger(__name__)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        log.debug(format, *args)


@contextmanager
def pip_build_args(wheelhouse: str, port: int) -> Iterator[dict[str, str]]:
    """Yield pip settings (as build args) for the wheelhouse; {} when none is configured.

    The port is fixed, not ephemeral: build args are part of Docker's layer cache key,
    so a new URL each time would reinstall every dependency on every build.
    """
    if not wheelhouse:
        yield {}
        return
    directory = Path(wheelhouse)
    if not any(directory.glob("*.whl")):
        raise FileNotFoundError(f"docker.wheelhouse={wheelhouse!r}: no wheels there")
    handler = functools.partial(_QuietHandler, directory=str(directory))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise OSError(f"docker.wheelhouse_port={port}: cannot serve the wheelhouse there ({exc})") from exc
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    log.info("serving wheelhouse %s at %s", directory, url)
    try:
        yield {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": url, "PIP_TRUSTED_HOST": "127.0.0.1"}
    finally:
        server.shutdown()
        server.server_close()
