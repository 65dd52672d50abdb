"""Local processes: whether one still runs and when it started (Linux /proc), stopping a
server with every process of its group, and a free loopback port for one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from contextlib import suppress
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on; None where there is no /proc entry."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: fields after its last ")"
    return stat.rsplit(")", 1)[1].split()


def process_start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), "" where unknown."""
    fields = _stat_fields(pid)
    return fields[19] if fields else ""


def process_exists(pid: int) -> bool:
    """Whether `pid` runs (an exited process its parent has not reaped yet does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, another user's
    fields = _stat_fields(pid)
    return fields is None or fields[0] != "Z"  # no /proc: the signal test is all there is


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _signal_group(group: int, signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(group, signum)


def _wait_for_group(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until the process has ended and no process of its group is left."""
    deadline = time.monotonic() + timeout
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def stop_process_group(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """SIGTERM the group `process` leads (a server and its workers), SIGKILL it if any of it
    lingers past `timeout`; wait until all of it is gone. False if it had to be killed."""
    _signal_group(process.pid, signal.SIGTERM)
    if _wait_for_group(process, timeout):
        return True
    _signal_group(process.pid, signal.SIGKILL)
    _wait_for_group(process, timeout)
    return False
