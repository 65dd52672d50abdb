from pathlib import Path

import numpy as np
import pytest

from cifar_pipeline.checksums import ChecksumError, parse_spec, verify
from cifar_pipeline.dataset import Split, read_dataset, write_dataset
from cifar_pipeline.sources import digits


def _split(n: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    return Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 3, n))


def test_roundtrip_preserves_arrays_and_records_checksums(tmp_path: Path) -> None:
    train, test = _split(12, 0), _split(5, 1)
    manifest = write_dataset(tmp_path, train, test, ["a", "b", "c"], {"name": "unit"})
    loaded = read_dataset(tmp_path)
    np.testing.assert_array_equal(loaded.train.images, train.images)
    np.testing.assert_array_equal(loaded.test.labels, test.labels)
    assert loaded.class_names == ["a", "b", "c"]
    assert set(manifest["sha256"]) == {
        "train_images.npy",
        "train_labels.npy",
        "test_images.npy",
        "test_labels.npy",
    }
    assert manifest["shapes"]["train"]["images"] == [12, 32, 32, 3]
    assert sum(manifest["class_counts"]["test"]) == 5
    assert len(manifest["mean"]) == 3


def test_tampered_array_is_refused(tmp_path: Path) -> None:
    write_dataset(tmp_path, _split(4, 0), _split(4, 1), ["a", "b", "c"], {})
    images = np.load(tmp_path / "test_images.npy")
    images[0, 0, 0, 0] ^= 1
    np.save(tmp_path / "test_images.npy", images)
    with pytest.raises(ChecksumError, match=r"test_images\.npy: sha256 mismatch"):
        read_dataset(tmp_path)


def test_split_rejects_wrong_dtype() -> None:
    with pytest.raises(ValueError, match="uint8"):
        Split(np.zeros((2, 32, 32, 3), dtype=np.float32), np.zeros(2))


def test_checksum_spec_parsing_and_mismatch_message(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert parse_spec("900150983cd24fb0d6963f7d28e17f72") == ("md5", "900150983cd24fb0d6963f7d28e17f72")
    verify(path, "md5:900150983cd24fb0d6963f7d28e17f72")
    with pytest.raises(ChecksumError, match=r"expected 0+, got 9001"):
        verify(path, "md5:" + "0" * 32)
    with pytest.raises(ChecksumError, match="expected 'md5:"):
        parse_spec("crc32:abcd")


def test_digits_become_32x32_rgb_uint8_with_stratified_split() -> None:
    train, test, names, source = digits.load(test_fraction=0.2, split_seed=0)
    assert train.images.shape[1:] == (32, 32, 3)
    assert train.images.dtype == np.uint8
    assert len(train.labels) + len(test.labels) == 1797
    assert names == [str(d) for d in range(10)]
    assert set(np.unique(test.labels)) == set(range(10))
    assert train.images.max() == 255
    # grey: all three channels equal
    np.testing.assert_array_equal(train.images[..., 0], train.images[..., 2])
    assert source["name"] == "digits"
