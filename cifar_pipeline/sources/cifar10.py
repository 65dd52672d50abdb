"""CIFAR-10 from the official python tarball, a mirror URL or a local file.

Order matters for safety: fetch -> verify checksum -> check every tar member ->
extract -> unpickle. The batches are pickles, so nothing is unpickled from an
archive whose checksum has not been verified.
"""

from __future__ import annotations

import io
import logging
import pickle
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from cifar_pipeline.checksums import parse_spec, verify
from cifar_pipeline.dataset import Split
from cifar_pipeline.sources import archives, download
from cifar_pipeline.sources.archives import ArchiveError
from cifar_pipeline.sources.errors import SourceError

log = logging.getLogger(__name__)

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_CHECKSUM = "md5:c58f30108f718f92721af3b95e74349a"
ARCHIVE_ROOT = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"


def extract(archive_path: Path, out_dir: Path) -> Path:
    root = archives.extract(archive_path, out_dir) / ARCHIVE_ROOT
    missing = [n for n in [*TRAIN_BATCHES, TEST_BATCH, META] if not (root / n).is_file()]
    if missing:
        raise ArchiveError(f"{archive_path.name}: missing {', '.join(missing)} in {ARCHIVE_ROOT}/")
    return root


def _unpickle(path: Path) -> dict[bytes, Any]:
    try:
        with path.open("rb") as handle:
            batch: dict[bytes, Any] = pickle.load(handle, encoding="bytes")  # archive verified first
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ArchiveError(f"{path.name}: not a CIFAR-10 batch ({exc})") from exc
    if not isinstance(batch, dict):
        raise ArchiveError(f"{path.name}: not a CIFAR-10 batch (a {type(batch).__name__}, expected a dict)")
    return batch


def _read_batches(root: Path, names: list[str]) -> Split:
    images, labels = [], []
    for name in names:
        batch = _unpickle(root / name)
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return Split(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels))


def load(
    location: str, checksum: str, work_dir: Path, policy: download.RetryPolicy | None = None
) -> tuple[Split, Split, list[str], dict[str, Any]]:
    archive = download.fetch(location, work_dir / "download", policy)
    if archive.is_dir():
        raise SourceError(f"data_url={location!r}: is a directory; expected cifar-10-python.tar.gz")
    digest = verify(archive, checksum)
    log.info("verified %s (%s)", archive.name, checksum.partition(":")[0] or "checksum")
    extract_dir = work_dir / "extracted"
    try:
        root = extract(archive, extract_dir)
        meta = _unpickle(root / META)
        names = [n.decode() for n in meta[b"label_names"]]
        train = _read_batches(root, TRAIN_BATCHES)
        test = _read_batches(root, [TEST_BATCH])
    except (KeyError, ValueError, TypeError) as exc:
        if isinstance(exc, SourceError):
            raise
        raise ArchiveError(
            f"{archive.name}: batches are not in the CIFAR-10 python format ({exc!r})"
        ) from exc
    finally:
        shutil.rmtree(extract_dir, ignore_errors=True)
    algorithm, _ = parse_spec(checksum)
    source = {"name": "cifar10", "url": location, "input_digest": f"{algorithm}:{digest}"}
    return train, test, names, source


def write_archive(path: Path, train: Split, test: Split, label_names: list[str]) -> None:
    """Write `train`/`test` as a tarball in the official cifar-10-python layout.

    For mirrors, tests and benchmarks: the inverse of `load` (train split across the
    five data batches as evenly as the count allows).
    """

    def batch(split: Split) -> dict[bytes, Any]:
        flat = split.images.transpose(0, 3, 1, 2).reshape(len(split.images), -1)
        return {b"data": np.ascontiguousarray(flat), b"labels": split.labels.tolist()}

    chunks = np.array_split(np.arange(len(train.labels)), len(TRAIN_BATCHES))
    members: dict[str, dict[bytes, Any]] = {
        name: batch(Split(train.images[idx], train.labels[idx]))
        for name, idx in zip(TRAIN_BATCHES, chunks, strict=True)
    }
    members[TEST_BATCH] = batch(test)
    members[META] = {b"label_names": [n.encode() for n in label_names]}
    with tarfile.open(path, "w:gz") as archive:
        for name, content in members.items():
            payload = pickle.dumps(content, protocol=pickle.HIGHEST_PROTOCOL)
            info = tarfile.TarInfo(f"{ARCHIVE_ROOT}/{name}")
            info.size = len(payload)
            info.mtime = 0  # reproducible bytes, so the checksum of a regenerated archive is stable
            archive.addfile(info, io.BytesIO(payload))
