"""Safe extraction of .tar(.gz) and .zip archives.

Every member is checked before anything is written: absolute paths, `..` components,
links and device files are refused, naming the member. Python's `data` tar filter (PEP
706) is applied on top where available. A file that is not a readable archive, or is
cut short, is refused naming the file.
"""

from __future__ import annotations

import gzip
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from cifar_pipeline.sources.errors import SourceError


class ArchiveError(SourceError):
    """The archive is unusable: unreadable, truncated, a member escapes, or a file is missing."""


def check_member_name(archive: Path, name: str) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise ArchiveError(f"{archive.name}: member {name!r} escapes the extraction directory")


def _check_tar(archive_path: Path, archive: tarfile.TarFile) -> None:
    for member in archive.getmembers():
        check_member_name(archive_path, member.name)
        if not (member.isfile() or member.isdir()):
            raise ArchiveError(f"{archive_path.name}: member {member.name!r} is a link or device; refusing")


def _check_zip(archive_path: Path, archive: zipfile.ZipFile) -> None:
    for info in archive.infolist():
        check_member_name(archive_path, info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArchiveError(f"{archive_path.name}: member {info.filename!r} is a symbolic link; refusing")


def extract(archive_path: Path, out_dir: Path) -> Path:
    """Extract a .tar, .tar.gz/.tgz or .zip archive into `out_dir`, checking every member first."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive_path):
            with zipfile.ZipFile(archive_path) as archive:
                _check_zip(archive_path, archive)
                archive.extractall(out_dir)
        else:
            with tarfile.open(archive_path, "r:*") as archive:
                _check_tar(archive_path, archive)
                if hasattr(tarfile, "data_filter"):
                    archive.extractall(out_dir, filter="data")
                else:  # Python without PEP 706: every member was checked above
                    archive.extractall(out_dir)
    except (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise ArchiveError(f"{archive_path.name}: not a readable .tar.gz or .zip archive ({exc})") from exc
    return out_dir
