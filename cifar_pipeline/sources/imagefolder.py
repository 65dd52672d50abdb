"""Your own images: a folder (or a .zip/.tar.gz of one) with one sub-folder per class.

Two layouts, as torchvision's ImageFolder reads them:

    pets/cat/*.jpg, pets/dog/*.png             split here by `test_fraction` (per class, seeded)
    pets/train/cat/..., pets/test/cat/...      the split you made

Class names are the folder names, sorted. Images may be PNG or JPEG of any size and mode;
`cifar_pipeline.images` turns each into 32x32 RGB. Nothing is skipped silently: an empty
class, a file that is not a PNG/JPEG image, or train/test folders with different classes
refuse the whole data set, naming the folder or file. Hidden files (`.DS_Store`) and
`__MACOSX/` folders are ignored, as are files next to the class folders (a README).
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from cifar_pipeline.checksums import file_digest, parse_spec, verify
from cifar_pipeline.dataset import IMAGE_SHAPE, Split
from cifar_pipeline.images import ImageError, decode_file
from cifar_pipeline.sources import archives, download
from cifar_pipeline.sources.errors import SourceError

log = logging.getLogger(__name__)

SPLIT_DIRS = ("train", "test")
_MAX_LISTED = 10


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name != "__MACOSX"


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and _visible(p))


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and _visible(p))


def tree_digest(root: Path) -> str:
    """sha256 over every visible file's relative path and content: the folder's identity."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and _hidden_free(p, root)):
        digest.update(f"{path.relative_to(root).as_posix()}\0{file_digest(path)}\n".encode())
    return digest.hexdigest()


def dataset_root(extracted: Path) -> Path:
    """Step down through wrapper folders (`pets.zip` -> `pets/`) to the folder holding the classes."""
    root = extracted
    while True:
        dirs = _subdirs(root)
        # A lone folder that itself holds folders is a wrapper; one holding only images is a class.
        if len(dirs) != 1 or not _subdirs(dirs[0]):
            return root
        root = dirs[0]


def class_files(folder: Path) -> dict[str, list[Path]]:
    """Class name -> its files (recursively, sorted). Refuses a folder with an empty class."""
    classes = {d.name: [p for p in sorted(d.rglob("*")) if p.is_file() and _hidden_free(p, d)]
               for d in _subdirs(folder)}  # fmt: skip
    for ignored in _files(folder):
        log.warning("ignoring %s: files next to the class folders are not images of a class", ignored)
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise SourceError(f"{folder}: class folder(s) with no images: {', '.join(map(repr, empty))}")
    return classes


def _hidden_free(path: Path, top: Path) -> bool:
    return all(_visible(Path(part)) for part in path.relative_to(top).parts)


def _decode_all(paths: list[Path]) -> np.ndarray:
    """Decode every file in parallel (Pillow releases the GIL); refuse if any is not an image."""

    def one(path: Path) -> np.ndarray | str:
        try:
            return decode_file(path)
        except ImageError as exc:
            return str(exc)

    workers = min(32, (os.cpu_count() or 1) + 4)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, paths))
    problems = [r for r in results if isinstance(r, str)]
    if problems:
        listed = "\n  ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise SourceError(f"{len(problems)} file(s) are not usable PNG/JPEG images:\n  {listed}{more}")
    if not results:
        return np.empty((0, *IMAGE_SHAPE), dtype=np.uint8)
    return np.stack([r for r in results if not isinstance(r, str)])


def _to_split(files: dict[str, list[Path]], names: list[str]) -> Split:
    paths = [path for name in names for path in files[name]]
    labels = np.array([i for i, name in enumerate(names) for _ in files[name]], dtype=np.int64)
    return Split(_decode_all(paths), labels)


def split_by_fraction(
    files: dict[str, list[Path]], test_fraction: float, split_seed: int
) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Per class, a seeded random `test_fraction` of the files (at least one) goes to test."""
    if not 0.0 < test_fraction < 1.0:
        raise SourceError(f"test_fraction={test_fraction}: expected a number between 0 and 1")
    rng = np.random.default_rng(split_seed)
    train: dict[str, list[Path]] = {}
    test: dict[str, list[Path]] = {}
    for name, paths in files.items():
        if len(paths) < 2:
            raise SourceError(f"class {name!r} has {len(paths)} image; need at least 2 to split train/test")
        n_test = min(max(1, round(test_fraction * len(paths))), len(paths) - 1)
        order = rng.permutation(len(paths))
        test[name] = sorted(paths[i] for i in order[:n_test])
        train[name] = sorted(paths[i] for i in order[n_test:])
    return train, test


def _layout(root: Path, test_fraction: float, split_seed: int) -> tuple[dict[str, list[Path]], ...]:
    """(train files, test files) by class, from train/+test/ folders or by `test_fraction`."""
    if {d.name for d in _subdirs(root)} == set(SPLIT_DIRS):
        train, test = class_files(root / "train"), class_files(root / "test")
        if set(train) != set(test):
            only_train, only_test = sorted(set(train) - set(test)), sorted(set(test) - set(train))
            raise SourceError(
                f"{root}: train/ and test/ must hold the same class folders; "
                f"only in train/: {only_train or 'none'}, only in test/: {only_test or 'none'}"
            )
        return train, test
    return split_by_fraction(class_files(root), test_fraction, split_seed)


def load(
    location: str,
    checksum: str,
    test_fraction: float,
    split_seed: int,
    work_dir: Path,
    policy: download.RetryPolicy | None = None,
) -> tuple[Split, Split, list[str], dict[str, Any]]:
    path = download.fetch(location, work_dir / "download", policy)
    source: dict[str, Any] = {"name": "imagefolder", "url": location}
    if path.is_dir():
        if checksum:
            raise SourceError(f"data_checksum applies to an archive; data_url={location!r} is a directory")
        root = path
        source["input_digest"] = "sha256:" + tree_digest(root)
    else:
        if checksum:
            algorithm, _ = parse_spec(checksum)
            source["input_digest"] = f"{algorithm}:{verify(path, checksum)}"
        else:
            source["input_digest"] = "sha256:" + file_digest(path)
        root = dataset_root(archives.extract(path, work_dir / "extracted"))
    train_files, test_files = _layout(root, test_fraction, split_seed)
    names = sorted(train_files)
    if len(names) < 2:
        raise SourceError(f"{location}: found {len(names)} class folder(s) ({names}); need at least 2")
    if {d.name for d in _subdirs(root)} == set(SPLIT_DIRS):
        source["layout"] = "train/test folders"
    else:
        source.update({"layout": "class folders", "test_fraction": test_fraction, "split_seed": split_seed})
    log.info("%s: %d classes, %d train / %d test files", location, len(names),
             sum(map(len, train_files.values())), sum(map(len, test_files.values())))  # fmt: skip
    return _to_split(train_files, names), _to_split(test_files, names), names, source
