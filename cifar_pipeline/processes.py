"""Local processes by PID: whether one still runs, and when it started (Linux /proc)."""

from __future__ import annotations

import os
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
