"""The cifar10 source from a local file: exact arrays and refusals (from an HTTP mirror:
tests/integration/test_cifar10_source.py)."""

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cifar_pipeline.checksums import ChecksumError
from cifar_pipeline.sources import cifar10
from cifar_pipeline.sources.archives import ArchiveError
from cifar_pipeline.sources.errors import SourceError
from tests.helpers import CLASS_NAMES, assert_same, md5_spec


def write_by_hand(path: Path, per_batch: int = 20) -> dict[str, dict[bytes, object]]:
    """The official layout written from its published description, independently of our writer:
    each row is 3072 bytes, the red plane's 1024 pixels first, then green, then blue."""
    rng = np.random.default_rng(7)
    batches: dict[str, dict[bytes, object]] = {
        name: {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
               b"labels": rng.integers(0, 10, per_batch).tolist()}
        for name in [*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH]
    }  # fmt: skip
    meta = {b"label_names": [n.encode() for n in CLASS_NAMES]}
    with tarfile.open(path, "w:gz") as archive:
        for name, content in [*batches.items(), ("batches.meta", meta)]:
            payload = pickle.dumps(content)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return batches


def test_official_layout_gives_exact_arrays(tmp_path: Path) -> None:
    path = tmp_path / "cifar-10-python.tar.gz"
    batches = write_by_hand(path)
    train, test, names, source = cifar10.load(str(path), md5_spec(path), tmp_path / "work")
    rows = np.concatenate([batches[name][b"data"] for name in cifar10.TRAIN_BATCHES])  # type: ignore[misc]
    # pixel (row 0, col 1) of image 0 is byte 1 (red), 1025 (green), 2049 (blue)
    assert tuple(train.images[0, 0, 1]) == (rows[0, 1], rows[0, 1025], rows[0, 2049])
    np.testing.assert_array_equal(train.images, rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(test.labels, batches["test_batch"][b"labels"])
    assert names == CLASS_NAMES
    assert source["input_digest"] == md5_spec(path)
    assert not (tmp_path / "work" / "extracted").exists()  # extraction is cleaned up


def test_writer_round_trips(cifar_tarball, tmp_path: Path) -> None:
    path, (train, test) = cifar_tarball
    loaded_train, loaded_test, _, _ = cifar10.load(str(path), md5_spec(path), tmp_path / "work")
    assert_same(loaded_train, train)
    assert_same(loaded_test, test)


def test_wrong_checksum_is_refused_before_extraction(cifar_tarball, tmp_path: Path) -> None:
    path, _ = cifar_tarball
    mismatch = r"cifar-10-python\.tar\.gz: md5 checksum mismatch: expected 0+, got"
    with pytest.raises(ChecksumError, match=mismatch):
        cifar10.load(str(path), "md5:" + "0" * 32, tmp_path / "work")
    assert not (tmp_path / "work" / "extracted").exists()


def test_truncated_file_with_its_own_checksum_is_refused_as_unreadable(cifar_tarball, tmp_path: Path) -> None:
    """A mirror checksum that matches a cut-short file still cannot get it past extraction."""
    path, _ = cifar_tarball
    short = tmp_path / "short.tar.gz"
    short.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ArchiveError, match=r"short\.tar\.gz: not a readable"):
        cifar10.load(str(short), md5_spec(short), tmp_path / "work")


def tar_with_one_file(path: Path, member: str, payload: bytes) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo(member)
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    return path


def test_missing_batch_is_named(tmp_path: Path) -> None:
    path = tar_with_one_file(tmp_path / "partial.tar.gz", "cifar-10-batches-py/data_batch_1", b"{}")
    with pytest.raises(ArchiveError, match=r"partial\.tar\.gz: missing data_batch_2.*test_batch"):
        cifar10.load(str(path), md5_spec(path), tmp_path / "work")


def test_not_an_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_bytes(gzip.compress(b"<html>mirror login page</html>"))
    with pytest.raises(ArchiveError, match=r"page\.html: not a readable"):
        cifar10.load(str(path), md5_spec(path), tmp_path / "work")


def test_missing_local_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"absent\.tar\.gz'?: no such file"):
        cifar10.load(str(tmp_path / "absent.tar.gz"), cifar10.OFFICIAL_CHECKSUM, tmp_path)


def test_member_escaping_extraction_dir_is_refused(tmp_path: Path) -> None:
    path = tar_with_one_file(tmp_path / "evil.tar.gz", "../escape.txt", b"x")
    with pytest.raises(ArchiveError, match=r"evil\.tar\.gz: member '\.\./escape\.txt' escapes"):
        cifar10.load(str(path), md5_spec(path), tmp_path / "work")
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "work" / "escape.txt").exists()


def test_symlink_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "link.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        archive.addfile(info)
    with pytest.raises(ArchiveError, match=r"data_batch_1' is a link"):
        cifar10.load(str(path), md5_spec(path), tmp_path / "work")
