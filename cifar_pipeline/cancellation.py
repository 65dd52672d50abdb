"""SIGINT and SIGTERM as an exception, so that a cancelled process cleans up.

Python's default SIGTERM ends the process on the spot: no `finally` runs, so a step's
run stays RUNNING and the orchestrator's step container runs on. Under `cancellable()`
the first SIGINT or SIGTERM raises `Cancelled` in the main thread instead; MLflow marks
such runs KILLED (its status for a cancelled run). Later signals do not interrupt the
cleanup that the first one started: they go to `on_repeat` (a second Ctrl-C: hurry).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

CANCEL_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1  # prctl(2)


class Cancelled(BaseException):
    """The process was asked to stop (SIGINT or SIGTERM)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"cancelled by {self.signal_name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by the signal


@contextmanager
def cancellable(on_repeat: Callable[[int], None] | None = None) -> Iterator[None]:
    """Within: the first SIGINT/SIGTERM raises `Cancelled`; later ones call `on_repeat`."""
    cancelled_by: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if cancelled_by:
            log.warning("%s while cancelling", signal.Signals(signum).name)
            if on_repeat is not None:
                on_repeat(signum)
            return
        cancelled_by.append(signum)
        raise Cancelled(signum)

    previous = {signum: signal.signal(signum, handle) for signum in CANCEL_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def term_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` for a child process that must not outlive this one: Linux sends it
    SIGTERM when this process ends, also by SIGKILL. None where that is not available.

    libc is loaded here, in the parent: a forked child of a threaded process may call
    only what needs no lock, and loading a library takes one.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def ask_for_sigterm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return ask_for_sigterm


def term_when_parent_dies() -> None:
    """Ask Linux for a SIGTERM when the parent process ends (`mlflow run` killed alone).

    Without it a SIGTERM sent only to `mlflow run` ends that process and leaves the
    orchestrator, its pipeline run and its step container running, unwatched.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("cannot ask for a signal on the parent's death: errno %d", ctypes.get_errno())
        return
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
