import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cifar_pipeline.checksums import ChecksumError
from cifar_pipeline.sources import cifar10
from cifar_pipeline.sources.errors import SourceError
from tests.conftest import CLASS_NAMES, md5_spec


def test_good_tarball_gives_exact_arrays(cifar_tarball, tmp_path: Path) -> None:
    path, batches = cifar_tarball
    train, test, names, source = cifar10.load(str(path), md5_spec(path), tmp_path / "work")
    expected = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    np.testing.assert_array_equal(train.images, expected.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(test.labels, batches["test_batch"][b"labels"])
    assert names == CLASS_NAMES
    assert source["archive_digest"] == md5_spec(path).split(":")[1]
    assert not (tmp_path / "work" / "extracted").exists()  # extraction is cleaned up


def test_wrong_checksum_is_refused_before_extraction(cifar_tarball, tmp_path: Path) -> None:
    path, _ = cifar_tarball
    with pytest.raises(ChecksumError, match=r"cifar-10-python\.tar\.gz: md5 checksum mismatch: expected 0+"):
        cifar10.load(str(path), "md5:" + "0" * 32, tmp_path / "work")
    assert not (tmp_path / "work" / "extracted").exists()


def test_missing_local_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        cifar10.load(str(tmp_path / "absent.tar.gz"), cifar10.OFFICIAL_CHECKSUM, tmp_path)


def test_member_escaping_extraction_dir_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(cifar10.ArchiveError, match=r"'\.\./escape\.txt' escapes"):
        cifar10.load(str(path), md5_spec(path), tmp_path / "work")
    assert not (tmp_path / "escape.txt").exists()
