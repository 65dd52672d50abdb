"""CIFAR-10 from the official python tarball, a mirror URL or a local file.

Order matters for safety: fetch -> verify checksum -> check every tar member ->
extract -> unpickle. The batches are pickles, so nothing is unpickled from an
archive whose checksum has not been verified.
"""

from __future__ import annotations

import logging
import pickle
import shutil
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from torchvision.datasets.utils import download_url

from cifar_pipeline.checksums import verify
from cifar_pipeline.dataset import Split
from cifar_pipeline.sources.errors import SourceError

log = logging.getLogger(__name__)

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_CHECKSUM = "md5:c58f30108f718f92721af3b95e74349a"
ARCHIVE_ROOT = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"


class ArchiveError(SourceError):
    """The archive is unusable: a member escapes, or an expected file is missing."""


def fetch_archive(location: str, download_dir: Path) -> Path:
    """Return a local path to the archive, downloading it if `location` is a URL."""
    scheme = urlparse(location).scheme
    if scheme in ("http", "https"):
        filename = Path(urlparse(location).path).name or "cifar-10-python.tar.gz"
        # torchvision's downloader: progress bar, redirects; we verify afterwards
        # ourselves because mirrors may publish a sha256 rather than an md5.
        download_url(location, root=str(download_dir), filename=filename)
        return download_dir / filename
    path = Path(location[len("file://") :] if scheme == "file" else location)
    if not path.is_file():
        raise SourceError(f"data_url={location!r}: no such file")
    return path


def check_members(archive: tarfile.TarFile) -> None:
    """Refuse members that would land outside the extraction directory."""
    for member in archive.getmembers():
        name = member.name
        if name.startswith("/") or ".." in Path(name).parts:
            raise ArchiveError(f"member {name!r} escapes the extraction directory")
        if not (member.isfile() or member.isdir()):
            raise ArchiveError(f"member {name!r} is a link or device; refusing")


def extract(archive_path: Path, out_dir: Path) -> Path:
    with tarfile.open(archive_path, "r:gz") as archive:
        check_members(archive)
        if hasattr(tarfile, "data_filter"):
            archive.extractall(out_dir, filter="data")
        else:  # Python without PEP 706: members were checked above
            archive.extractall(out_dir)  # members were checked above
    root = out_dir / ARCHIVE_ROOT
    missing = [n for n in [*TRAIN_BATCHES, TEST_BATCH, META] if not (root / n).is_file()]
    if missing:
        raise ArchiveError(f"{archive_path.name}: missing {', '.join(missing)} in {ARCHIVE_ROOT}/")
    return root


def _unpickle(path: Path) -> dict[bytes, Any]:
    with path.open("rb") as handle:
        batch: dict[bytes, Any] = pickle.load(handle, encoding="bytes")  # archive verified first
    return batch


def _read_batches(root: Path, names: list[str]) -> Split:
    images, labels = [], []
    for name in names:
        batch = _unpickle(root / name)
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return Split(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels))


def load(location: str, checksum: str, work_dir: Path) -> tuple[Split, Split, list[str], dict[str, Any]]:
    archive = fetch_archive(location, work_dir / "download")
    digest = verify(archive, checksum)
    log.info("verified %s (%s)", archive.name, checksum.partition(":")[0] or "checksum")
    extract_dir = work_dir / "extracted"
    try:
        root = extract(archive, extract_dir)
        meta = _unpickle(root / META)
        names = [n.decode() for n in meta[b"label_names"]]
        train = _read_batches(root, TRAIN_BATCHES)
        test = _read_batches(root, [TEST_BATCH])
    finally:
        shutil.rmtree(extract_dir, ignore_errors=True)
    source = {"name": "cifar10", "url": location, "checksum": checksum, "archive_digest": digest}
    return train, test, names, source
