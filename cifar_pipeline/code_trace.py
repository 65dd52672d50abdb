"""A step's code identity: exactly the project files the step loaded.

A step records, at the end of its run, every file of the project that its process
loaded: the modules it imported (at the top or lazily inside a function, read from
`sys.modules`), the files it opened (an audit hook sees every `open`, e.g. the serving
code the build step copies into the inference image) and the folders it listed (a file
added to a folder the step copies changes what it makes). Each file is recorded with its
sha256, each folder with a digest of its listing.

The orchestrator compares such a record with the files in the checkout: an earlier run
may be reused only if every file it loaded is unchanged (the "verifying trace" of build
systems; see caching.py). So the identity is as fine as the step's real dependencies,
and sound: a step that loads a file sees it in its record.

Stdlib only: every step image and the orchestrator import this.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
LISTING_PREFIX = "listing:"
IGNORED_PARTS = ("__pycache__",)


class CodeIdentityError(RuntimeError):
    """A project file a step loaded cannot be read: no decision can be made without it."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def listing_digest(folder: Path) -> str:
    names = sorted(path.name for path in folder.iterdir() if path.name not in IGNORED_PARTS)
    return LISTING_PREFIX + hashlib.sha256("\n".join(names).encode()).hexdigest()


def current_digest(root: Path, entry: str) -> str | None:
    """The digest of a recorded entry now (`dir/` entries are folders); None if it is gone.

    A file that exists but cannot be read is an error naming it, never a silent match.
    """
    path = root / entry
    try:
        if entry.endswith("/"):
            return listing_digest(path) if path.is_dir() else None
        return file_sha256(path) if path.exists() else None
    except OSError as exc:
        raise CodeIdentityError(f"{entry}: cannot read it to compare the step's code ({exc})") from exc


def changed_entries(recorded: dict[str, str], root: Path = PROJECT_DIR) -> list[str]:
    """The recorded files and folders that differ in `root` now, in words, sorted."""
    changes = []
    for entry, digest in sorted(recorded.items()):
        now = current_digest(root, entry)
        if now is None:
            changes.append(f"{entry} (removed)")
        elif now != digest:
            changes.append(entry)
    return changes


class CodeTrace:
    """Records the project files this process loads. One per process (audit hooks stay)."""

    def __init__(self, root: Path = PROJECT_DIR) -> None:
        self.root = root
        self._prefix = str(root) + os.sep
        self._opened: set[str] = set()
        self._listed: set[str] = set()
        self._lock = threading.Lock()
        sys.addaudithook(self._audit)

    def _audit(self, event: str, args: tuple[object, ...]) -> None:
        # Called for every audited event in the process: return early on the others.
        if event == "open":
            target = self._opened
        elif event in ("os.listdir", "os.scandir"):
            target = self._listed
        else:
            return
        path = args[0] if args else None
        if not isinstance(path, str | bytes | os.PathLike):
            return  # a file descriptor, or listing the working directory
        # abspath, not Path.resolve: no file system access on this hot path
        absolute = os.path.abspath(os.fsdecode(path))  # noqa: PTH100
        if absolute.startswith(self._prefix):
            with self._lock:
                target.add(absolute[len(self._prefix) :])

    def _modules(self) -> set[str]:
        files = set()
        for module in list(sys.modules.values()):
            file = getattr(module, "__file__", None)
            if isinstance(file, str) and file.startswith(self._prefix):
                files.add(file[len(self._prefix) :])
        return files

    def snapshot(self) -> dict[str, str]:
        """relative path -> digest of every project file loaded so far (folders end in `/`)."""
        with self._lock:
            files, folders = self._opened | self._modules(), set(self._listed)
        record: dict[str, str] = {}
        for relative in files:
            path = self.root / relative
            if path.is_file() and not any(part in IGNORED_PARTS for part in path.parts):
                record[relative] = file_sha256(path)
        for relative in folders:
            if (self.root / relative).is_dir():
                record[relative.rstrip("/") + "/"] = listing_digest(self.root / relative)
        return dict(sorted(record.items()))


_trace: CodeTrace | None = None


def start() -> CodeTrace:
    """This process's trace, started on first use."""
    global _trace
    if _trace is None:
        _trace = CodeTrace()
    return _trace
