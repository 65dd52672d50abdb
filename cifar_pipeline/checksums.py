"""File digests and checksum specifications ("md5:<hex>" or "sha256:<hex>")."""

from __future__ import annotations

import hashlib
from pathlib import Path

SUPPORTED_ALGORITHMS = ("md5", "sha256")
_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A file's digest differs from the expected one, or a spec is malformed."""


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_spec(spec: str) -> tuple[str, str]:
    """Split "algo:hex" into its parts; a bare hex string is taken by its length."""
    if ":" in spec:
        algorithm, _, expected = spec.partition(":")
    else:
        algorithm = {32: "md5", 64: "sha256"}.get(len(spec), "")
        expected = spec
    algorithm = algorithm.lower()
    if algorithm not in SUPPORTED_ALGORITHMS:
        raise ChecksumError(f"checksum {spec!r}: expected 'md5:<32 hex>' or 'sha256:<64 hex>'")
    return algorithm, expected.lower()


def verify(path: Path, spec: str) -> str:
    """Raise ChecksumError unless `path` matches `spec`; return the actual digest."""
    algorithm, expected = parse_spec(spec)
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise ChecksumError(f"{path.name}: {algorithm} checksum mismatch: expected {expected}, got {actual}")
    return actual
