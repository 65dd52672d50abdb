import hashlib
import io
import re
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cifar_pipeline.checksums import ChecksumError
from cifar_pipeline.dataset import Split
from cifar_pipeline.sources import imagefolder
from cifar_pipeline.sources.archives import ArchiveError
from cifar_pipeline.sources.errors import SourceError

Colour = tuple[int, int, int]
# One file: (name, mode, size, fill). The name's suffix picks the format (.png or .jpg/.jpeg).
FileSpec = tuple[str, str, tuple[int, int], int | tuple[int, ...]]
Loaded = tuple[Split, Split, list[str], dict[str, Any]]


def write_image(path: Path, mode: str, size: tuple[int, int], fill: int | tuple[int, ...]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.new(mode, size, fill).save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


def make_folder(root: Path, classes: dict[str, list[FileSpec]]) -> Path:
    for name, files in classes.items():
        for filename, mode, size, fill in files:
            write_image(root / name / filename, mode, size, fill)
    return root


def solid(colours: list[Colour], suffix: str = ".png", size: tuple[int, int] = (6, 5)) -> list[FileSpec]:
    return [(f"{i:02d}{suffix}", "RGB", size, colour) for i, colour in enumerate(colours)]


def two_classes(root: Path, per_class: int = 3) -> Path:
    return make_folder(
        root,
        {
            "cat": solid([(200, 10 * i, 0) for i in range(per_class)]),
            "dog": solid([(0, 10 * i, 200) for i in range(per_class)], suffix=".jpg"),
        },
    )


def load_dir(
    root: Path, work: Path, test_fraction: float = 0.25, split_seed: int = 0, checksum: str = ""
) -> Loaded:
    return imagefolder.load(str(root), checksum, test_fraction, split_seed, work)


def count(split: Split, n_classes: int) -> list[int]:
    return np.bincount(split.labels, minlength=n_classes).tolist()


def assert_valid_split(split: Split) -> None:
    assert split.images.ndim == 4
    assert split.images.shape[1:] == (32, 32, 3)
    assert split.images.dtype == np.uint8
    assert split.labels.shape == (len(split.images),)


def assert_same(a: Loaded, b: Loaded) -> None:
    for left, right in zip(a[:2], b[:2], strict=True):
        np.testing.assert_array_equal(left.images, right.images)
        np.testing.assert_array_equal(left.labels, right.labels)
    assert a[2] == b[2]


# --- class folders, split here -------------------------------------------------------------

MIXED: dict[str, list[FileSpec]] = {
    # Each class's colours are far from every other class's, so an image's colour tells its class.
    "zebra": [
        ("a.png", "RGB", (7, 9), (220, 0, 0)),
        ("b.jpg", "RGB", (64, 48), (180, 20, 20)),
        ("c.jpeg", "RGB", (300, 200), (250, 60, 60)),
        ("d.png", "L", (64, 48), 40),  # greyscale -> (40, 40, 40)
    ],
    "ant": [
        ("a.jpeg", "RGB", (300, 200), (0, 200, 0)),
        ("b.png", "RGBA", (7, 9), (0, 0, 0, 0)),  # fully transparent -> white
        ("c.png", "RGBA", (64, 48), (20, 160, 20, 255)),
    ],
    "moth": [
        ("a.jpg", "RGB", (7, 9), (0, 0, 210)),
        ("b.png", "RGB", (300, 200), (30, 30, 170)),
        ("c.png", "L", (7, 9), 120),  # -> (120, 120, 120)
    ],
}
MIXED_COLOURS: dict[str, list[Colour]] = {
    "zebra": [(220, 0, 0), (180, 20, 20), (250, 60, 60), (40, 40, 40)],
    "ant": [(0, 200, 0), (255, 255, 255), (20, 160, 20)],
    "moth": [(0, 0, 210), (30, 30, 170), (120, 120, 120)],
}


def nearest_class(image: np.ndarray) -> str:
    mean = image.reshape(-1, 3).mean(axis=0)
    return min(
        ((name, float(np.abs(mean - colour).max())) for name, cs in MIXED_COLOURS.items() for colour in cs),
        key=lambda item: item[1],
    )[0]


def test_mixed_sizes_modes_and_formats_load(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", MIXED)
    train, test, names, source = load_dir(root, tmp_path / "work", test_fraction=0.3)
    assert names == ["ant", "moth", "zebra"]
    for split in (train, test):
        assert_valid_split(split)
        for image, label in zip(split.images, split.labels, strict=True):
            assert (image.reshape(-1, 3).std(axis=0) < 3).all()  # a solid image stays solid
            assert nearest_class(image) == names[label]
    assert len(train.labels) + len(test.labels) == sum(map(len, MIXED.values()))
    per_class = [len(MIXED[name]) for name in names]
    assert [a + b for a, b in zip(count(train, 3), count(test, 3), strict=True)] == per_class
    assert all(n >= 1 for n in count(test, 3))  # stratified: every class is in test
    assert all(n >= 1 for n in count(train, 3))
    assert source["layout"] == "class folders"
    assert source["test_fraction"] == 0.3
    assert source["split_seed"] == 0
    assert source["input_digest"] == "sha256:" + imagefolder.tree_digest(root)


def test_split_is_deterministic_per_seed(tmp_path: Path) -> None:
    root = make_folder(
        tmp_path / "data",
        {"big": solid([(10 * i, 5, 5) for i in range(12)]), "small": solid([(5, 5, 200), (5, 5, 100)])},
    )
    first = load_dir(root, tmp_path / "w1", test_fraction=0.25, split_seed=7)
    again = load_dir(root, tmp_path / "w2", test_fraction=0.25, split_seed=7)
    assert_same(first, again)

    def big_class_test_reds(result: Loaded) -> set[int]:
        test = result[1]
        return {
            int(image[0, 0, 0]) for image, label in zip(test.images, test.labels, strict=True) if label == 0
        }

    assert len(big_class_test_reds(first)) == 3  # round(0.25 * 12)
    other = load_dir(root, tmp_path / "w3", test_fraction=0.25, split_seed=8)
    assert big_class_test_reds(other) != big_class_test_reds(first)
    assert count(other[1], 2) == count(first[1], 2) == [3, 1]


def test_solid_colour_is_exact(tmp_path: Path) -> None:
    root = make_folder(
        tmp_path / "data",
        {
            "a": [("x.png", "RGB", (7, 9), (10, 20, 30)), ("y.png", "RGB", (64, 48), (200, 200, 200))],
            "b": solid([(1, 2, 3), (4, 5, 6)]),
        },
    )
    train, test, names, _ = load_dir(root, tmp_path / "work", test_fraction=0.5)
    images = np.concatenate([train.images, test.images])
    labels = np.concatenate([train.labels, test.labels])
    matches = [i for i, image in enumerate(images) if (image == (10, 20, 30)).all()]
    assert len(matches) == 1
    assert names[labels[matches[0]]] == "a"


# --- train/ and test/ folders ----------------------------------------------------------------


def test_explicit_train_test_layout_is_used(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_folder(root / "train", {"a": solid([(200, 0, 0)] * 3), "b": solid([(0, 0, 200)] * 2)})
    make_folder(root / "test", {"a": solid([(210, 0, 0)]), "b": solid([(0, 0, 210)] * 4, suffix=".jpg")})
    (root / "README.txt").write_text("my data set")
    train, test, names, source = load_dir(root, tmp_path / "work", test_fraction=0.5)
    assert names == ["a", "b"]
    assert count(train, 2) == [3, 2]
    assert count(test, 2) == [1, 4]
    assert (train.images[train.labels == 0] == (200, 0, 0)).all()
    assert (test.images[test.labels == 0] == (210, 0, 0)).all()
    assert source["layout"] == "train/test folders"
    assert "test_fraction" not in source


def test_train_and_test_with_different_classes_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_folder(root / "train", {"a": solid([(1, 1, 1)]), "b": solid([(2, 2, 2)])})
    make_folder(
        root / "test", {"a": solid([(1, 1, 1)]), "b": solid([(2, 2, 2)]), "zebra": solid([(3, 3, 3)])}
    )
    with pytest.raises(SourceError, match=r"only in train/: none, only in test/: \['zebra'\]"):
        load_dir(root, tmp_path / "work")


# --- refusals ----------------------------------------------------------------------------------


def test_empty_class_folder_is_refused_naming_it(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "data")
    (root / "hollow").mkdir()
    (root / "hollow" / ".DS_Store").write_bytes(b"\x00junk")  # hidden files do not count
    with pytest.raises(SourceError, match=r"no images: 'hollow'"):
        load_dir(root, tmp_path / "work")


def test_non_image_file_is_refused_naming_it(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "data")
    notes = root / "dog" / "notes.txt"
    notes.write_text("these are my dogs")
    with pytest.raises(SourceError, match="not usable PNG/JPEG") as info:
        load_dir(root, tmp_path / "work")
    assert str(notes) in str(info.value)
    assert "1 file(s)" in str(info.value)


def test_hidden_files_and_root_files_are_ignored(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "data")
    (root / "cat" / ".DS_Store").write_bytes(b"\x00\x01Bud1 junk")
    (root / ".DS_Store").write_bytes(b"\x00\x01Bud1 junk")
    (root / "README.txt").write_text("cats and dogs")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._x.png").write_bytes(b"junk")
    (root / ".hidden_class").mkdir()
    (root / ".hidden_class" / "x.png").write_bytes(b"junk")
    train, test, names, _ = load_dir(root, tmp_path / "work")
    assert names == ["cat", "dog"]
    assert len(train.labels) + len(test.labels) == 6


def test_class_with_one_image_cannot_be_split(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", {"cat": solid([(1, 1, 1)] * 3), "lonely": solid([(2, 2, 2)])})
    with pytest.raises(SourceError, match=r"class 'lonely' has 1 image"):
        load_dir(root, tmp_path / "work")


def test_fewer_than_two_classes_is_refused(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", {"only": solid([(1, 1, 1)] * 4)})
    with pytest.raises(SourceError, match=r"found 1 class folder\(s\) \(\['only'\]\); need at least 2"):
        load_dir(root, tmp_path / "work")


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_test_fraction_outside_open_unit_interval_is_refused(tmp_path: Path, fraction: float) -> None:
    root = two_classes(tmp_path / "data")
    with pytest.raises(SourceError, match=rf"test_fraction={re.escape(str(fraction))}"):
        load_dir(root, tmp_path / "work", test_fraction=fraction)


def test_directory_with_checksum_is_refused(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "data")
    with pytest.raises(SourceError, match="data_checksum applies to an archive"):
        load_dir(root, tmp_path / "work", checksum="sha256:" + "0" * 64)


def test_missing_location_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or directory"):
        load_dir(tmp_path / "absent", tmp_path / "work")


# --- archives ---------------------------------------------------------------------------------


def pack_zip(folder: Path, dest: Path, top: str) -> Path:
    with zipfile.ZipFile(dest, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{top}/{path.relative_to(folder).as_posix()}")
    return dest


def pack_tar(folder: Path, dest: Path, top: str) -> Path:
    with tarfile.open(dest, "w:gz") as archive:
        archive.add(folder, arcname=top)
    return dest


def sha256_spec(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def pets(tmp_path: Path) -> Path:
    return make_folder(
        tmp_path / "pets",
        {
            "cat": [*solid([(200, 10 * i, 0) for i in range(4)]), ("big.jpeg", "RGB", (64, 48), (250, 0, 0))],
            "dog": [*solid([(0, 10 * i, 200) for i in range(3)], suffix=".jpg"), ("g.png", "L", (7, 9), 90)],
        },
    )


@pytest.mark.parametrize("packer", [pack_zip, pack_tar], ids=["zip", "tar.gz"])
def test_archive_with_wrapper_folder_matches_the_folder(
    pets: Path, tmp_path: Path, packer: Callable[[Path, Path, str], Path]
) -> None:
    suffix = ".zip" if packer is pack_zip else ".tar.gz"
    archive = packer(pets, tmp_path / f"pets{suffix}", "pets")
    direct = load_dir(pets, tmp_path / "w_dir", test_fraction=0.4, split_seed=3)
    packed = load_dir(archive, tmp_path / "w_arc", test_fraction=0.4, split_seed=3)
    assert_same(direct, packed)
    assert packed[2] == ["cat", "dog"]
    assert packed[3]["input_digest"] == sha256_spec(archive)

    checked = load_dir(
        archive, tmp_path / "w_ok", test_fraction=0.4, split_seed=3, checksum=sha256_spec(archive)
    )
    assert_same(direct, checked)
    assert checked[3]["input_digest"] == sha256_spec(archive)

    md5 = "md5:" + hashlib.md5(archive.read_bytes()).hexdigest()
    assert (
        load_dir(archive, tmp_path / "w_md5", test_fraction=0.4, split_seed=3, checksum=md5)[3][
            "input_digest"
        ]
        == md5
    )

    with pytest.raises(ChecksumError, match=rf"^{re.escape(archive.name)}: sha256 checksum mismatch"):
        load_dir(archive, tmp_path / "w_bad", checksum="sha256:" + "0" * 64)
    assert not (tmp_path / "w_bad" / "extracted").exists()  # refused before extraction


def test_archive_without_wrapper_folder(pets: Path, tmp_path: Path) -> None:
    archive = tmp_path / "flat.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(pets.rglob("*")):
            if path.is_file():
                out.write(path, path.relative_to(pets).as_posix())
    assert_same(load_dir(pets, tmp_path / "w1"), load_dir(archive, tmp_path / "w2"))


def test_macos_zip_metadata_is_ignored(pets: Path, tmp_path: Path) -> None:
    archive = pack_zip(pets, tmp_path / "pets.zip", "pets")
    with zipfile.ZipFile(archive, "a") as out:
        out.writestr("__MACOSX/pets/cat/._00.png", b"\x00\x05\x16\x07 resource fork")
        out.writestr("pets/dog/.DS_Store", b"\x00\x01Bud1")
    assert_same(load_dir(pets, tmp_path / "w1"), load_dir(archive, tmp_path / "w2"))


def test_archive_with_readme_next_to_class_folders_matches_the_folder(pets: Path, tmp_path: Path) -> None:
    # The module docstring: files next to the class folders (a README) are ignored. That holds
    # for a folder; the same folder zipped with its wrapper folder must load the same way.
    (pets / "README.txt").write_text("cats and dogs")
    archive = pack_zip(pets, tmp_path / "pets.zip", "pets")
    assert_same(load_dir(pets, tmp_path / "w1"), load_dir(archive, tmp_path / "w2"))


def test_zip_member_escaping_is_refused(pets: Path, tmp_path: Path) -> None:
    archive = pack_zip(pets, tmp_path / "evil.zip", "pets")
    with zipfile.ZipFile(archive, "a") as out:
        out.writestr("../evil.png", (pets / "cat" / "00.png").read_bytes())
    work = tmp_path / "deep" / "work"
    with pytest.raises(ArchiveError, match=r"evil\.zip: member '\.\./evil\.png' escapes"):
        load_dir(archive, work)
    assert list(tmp_path.rglob("evil.png")) == []
    extracted = work / "extracted"
    assert not extracted.exists() or list(extracted.iterdir()) == []  # checked before writing


def test_tar_symlink_member_is_refused(pets: Path, tmp_path: Path) -> None:
    archive = tmp_path / "links.tar.gz"
    with tarfile.open(archive, "w:gz") as out:
        out.add(pets, arcname="pets")
        link = tarfile.TarInfo("pets/cat/link.png")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        out.addfile(link)
    work = tmp_path / "work"
    with pytest.raises(ArchiveError, match=r"'pets/cat/link\.png' is a link"):
        load_dir(archive, work)
    assert not (work / "extracted" / "pets").exists()


def test_unreadable_archive_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "data.tar.gz"
    bogus.write_bytes(b"not an archive at all")
    with pytest.raises(ArchiveError, match=r"data\.tar\.gz: not a readable"):
        load_dir(bogus, tmp_path / "work")


# --- tree_digest --------------------------------------------------------------------------------


def test_tree_digest_tracks_content_and_names_not_hidden_files(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "data")
    base = imagefolder.tree_digest(root)
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert imagefolder.tree_digest(root) == base

    (root / ".DS_Store").write_bytes(b"junk")
    (root / "cat" / ".hidden.png").write_bytes(b"junk")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._00.png").write_bytes(b"junk")
    assert imagefolder.tree_digest(root) == base

    target = root / "cat" / "00.png"
    original = target.read_bytes()
    write_image(target, "RGB", (6, 5), (201, 0, 0))
    changed = imagefolder.tree_digest(root)
    assert changed != base
    target.write_bytes(original)
    assert imagefolder.tree_digest(root) == base

    target.rename(root / "cat" / "renamed.png")
    assert imagefolder.tree_digest(root) != base


def test_tree_digest_sees_a_file_moved_between_classes(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "data")
    base = imagefolder.tree_digest(root)
    (root / "cat" / "00.png").rename(root / "dog" / "00.png")
    assert imagefolder.tree_digest(root) != base


def test_dataset_root_steps_through_wrappers(tmp_path: Path) -> None:
    inner = two_classes(tmp_path / "x" / "outer" / "inner")
    assert imagefolder.dataset_root(tmp_path / "x") == inner
    # A wrapper holding images itself is a class folder: stepping stops above it.
    solo = tmp_path / "y"
    write_image(solo / "cls" / "a.png", "RGB", (4, 4), (0, 0, 0))
    assert imagefolder.dataset_root(solo) == solo


def test_split_by_fraction_is_per_class() -> None:
    files = {"a": [Path(f"a/{i}.png") for i in range(10)], "b": [Path(f"b/{i}.png") for i in range(3)]}
    train, test = imagefolder.split_by_fraction(files, 0.2, split_seed=1)
    assert (len(train["a"]), len(test["a"])) == (8, 2)
    assert (len(train["b"]), len(test["b"])) == (2, 1)  # at least one test image per class
    for name in files:
        assert sorted(train[name] + test[name]) == files[name]
        assert not set(train[name]) & set(test[name])
    _, tiny = imagefolder.split_by_fraction({"a": files["a"][:2]}, 0.9, split_seed=0)
    assert len(tiny["a"]) == 1  # at least one train image too


def test_tar_gz_in_memory_members_are_decoded(tmp_path: Path) -> None:
    # Members written straight from bytes (no files on disk) with a wrapper folder and a train/test split.
    archive = tmp_path / "split.tar.gz"
    with tarfile.open(archive, "w:gz") as out:
        for split, n in (("train", 2), ("test", 1)):
            for cls, colour in (("a", (9, 8, 7)), ("b", (70, 80, 90))):
                for i in range(n):
                    buffer = io.BytesIO()
                    Image.new("RGB", (5, 5), colour).save(buffer, format="PNG")
                    info = tarfile.TarInfo(f"top/{split}/{cls}/{i}.png")
                    info.size = len(buffer.getvalue())
                    out.addfile(info, io.BytesIO(buffer.getvalue()))
    train, test, names, source = load_dir(archive, tmp_path / "work")
    assert names == ["a", "b"]
    assert count(train, 2) == [2, 2]
    assert count(test, 2) == [1, 1]
    assert (test.images[test.labels == 1] == (70, 80, 90)).all()
    assert source["layout"] == "train/test folders"
