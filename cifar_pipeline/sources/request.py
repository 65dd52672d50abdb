"""What the fetch step was asked for, checked up front, and the identity of its input.

The input key names "this input, split this way, by this code": two fetches with the same
key produce the same dataset, so the second can reuse the first's artifacts. It is built
from content (checksums), never from a URL or a path: a mirror of the official tarball and
a local copy of it have the same key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from cifar_pipeline import __version__
from cifar_pipeline.checksums import file_digest, parse_spec
from cifar_pipeline.dataset import Split
from cifar_pipeline.sources import cifar10, download, imagefolder
from cifar_pipeline.sources.errors import SourceError

SOURCES = ("cifar10", "imagefolder", "digits")
Loaded = tuple[Split, Split, list[str], dict[str, Any]]


def _digits() -> ModuleType:
    """The digits source, imported on first use: scikit-learn takes a second to import
    and only this source needs it."""
    from cifar_pipeline.sources import digits

    return digits


@dataclass(frozen=True)
class FetchRequest:
    source: str
    data_url: str = ""
    data_checksum: str = ""
    test_fraction: float = 0.2
    split_seed: int = 0  # the train/test split's seed; training's `seed` is another
    retry: download.RetryPolicy = field(default_factory=download.RetryPolicy)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise SourceError(f"source={self.source!r}: expected one of {', '.join(SOURCES)}")
        if self.source == "imagefolder" and not self.data_url:
            raise SourceError("source=imagefolder needs data_url: a folder, .zip or .tar.gz of class folders")
        if self.source == "digits" and (self.data_url or self.data_checksum):
            raise SourceError("source=digits is built in; data_url and data_checksum must be empty")
        if self.data_checksum:
            parse_spec(self.data_checksum)  # malformed spec: refuse before any download
        if self.source != "cifar10" and not 0.0 < self.test_fraction < 1.0:
            raise SourceError(f"test_fraction={self.test_fraction}: expected a number between 0 and 1")

    def load(self, work_dir: Path) -> Loaded:
        if self.source == "cifar10":
            return cifar10.load(
                self.data_url or cifar10.OFFICIAL_URL,
                self.data_checksum or cifar10.OFFICIAL_CHECKSUM,
                work_dir,
                self.retry,
            )
        if self.source == "imagefolder":
            return imagefolder.load(
                self.data_url, self.data_checksum, self.test_fraction, self.split_seed, work_dir, self.retry
            )
        return _digits().load(self.test_fraction, self.split_seed)

    def known_input_digest(self) -> str | None:
        """The input's content digest if it is known without downloading; None otherwise."""
        if self.source == "digits":
            return _digits().input_digest()
        spec = self.data_checksum or (cifar10.OFFICIAL_CHECKSUM if self.source == "cifar10" else "")
        if spec:
            algorithm, expected = parse_spec(spec)
            return f"{algorithm}:{expected}"
        if download.is_url(self.data_url):
            return None  # an archive at a URL with no checksum: only its bytes say what it is
        path = download.local_path(self.data_url)
        if path.is_dir():
            return "sha256:" + imagefolder.tree_digest(path)
        return "sha256:" + file_digest(path) if path.is_file() else None

    def input_key(self, input_digest: str) -> str:
        identity = {
            "source": self.source,
            "input_digest": input_digest,
            "split": None if self.source == "cifar10" else [self.test_fraction, self.split_seed],
            "code_version": __version__,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
