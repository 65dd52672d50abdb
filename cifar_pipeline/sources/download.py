"""Get a data source's input file: a local path, or an http(s) download that survives a flaky network.

torchvision's `download_url` (which the CIFAR-10 source used first) streams straight to
the destination in one attempt: it cannot resume an interrupted transfer, does not retry,
and its integrity check is md5 only. A 170 MB CIFAR-10 tarball behind a company proxy needs
all three, so the transfer is written here with `requests`: bytes go to `<name>.part`,
an interrupted transfer continues with an HTTP Range request where the server supports
ranges (and starts over where it does not), attempts are bounded with exponential backoff,
and the file gets its final name only once every byte the server announced has arrived.
Checksums are verified by the caller (md5 or sha256, see `cifar_pipeline.checksums`).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests
import urllib3
from tqdm import tqdm

from cifar_pipeline import __version__
from cifar_pipeline.sources.errors import SourceError

log = logging.getLogger(__name__)

USER_AGENT = f"cifar-pipeline/{__version__}"
_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIABLE_RANGE = re.compile(r"bytes \*/(\d+)")
# Status codes worth another attempt; any other 4xx is the caller's mistake and final.
_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class DownloadError(SourceError):
    """A download failed for good: a final HTTP status, or every attempt was interrupted."""


class _Retry(Exception):
    """One attempt failed in a way that another attempt may fix."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff_s: float = 1.0  # first wait; doubles after each failed attempt, capped at 30 s
    timeout_s: float = 60.0  # connect and per-read timeout


def is_url(location: str) -> bool:
    return urlparse(location).scheme in ("http", "https")


def local_path(location: str) -> Path:
    """The path a non-URL data location names (a plain path or a file:// URL)."""
    parsed = urlparse(location)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(location)


def fetch(location: str, download_dir: Path, policy: RetryPolicy | None = None) -> Path:
    """Return a local path for `location`, downloading it first if it is an http(s) URL."""
    if not is_url(location):
        path = local_path(location)
        if not path.exists():
            raise SourceError(f"data_url={location!r}: no such file or directory")
        return path
    name = Path(unquote(urlparse(location).path)).name or "download"
    download_dir.mkdir(parents=True, exist_ok=True)
    return download(location, download_dir / name, policy or RetryPolicy())


def download(url: str, dest: Path, policy: RetryPolicy) -> Path:
    """Download `url` to `dest` via `dest.part`, resuming and retrying within `policy`."""
    if policy.attempts < 1:
        raise ValueError(f"download attempts={policy.attempts}: expected at least 1")
    partial = dest.with_name(dest.name + ".part")
    partial.unlink(missing_ok=True)
    wait = policy.backoff_s
    for attempt in range(1, policy.attempts + 1):
        try:
            _attempt(url, partial, policy.timeout_s)
        except _Retry as exc:
            if attempt == policy.attempts:
                partial.unlink(missing_ok=True)
                raise DownloadError(f"{url}: gave up after {attempt} attempts; last error: {exc}") from exc
            log.warning("download of %s interrupted (%s); attempt %d/%d in %.1f s", url, exc,
                        attempt + 1, policy.attempts, wait)  # fmt: skip
            time.sleep(wait)
            wait = min(wait * 2, 30.0)
            continue
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(dest)
        return dest
    raise AssertionError("unreachable")  # the loop returns or raises


def _attempt(url: str, partial: Path, timeout_s: float) -> None:
    """One GET that continues `partial` if it has bytes; returns once the file is complete."""
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout_s) as response:
            if response.status_code == 416 and have:
                _check_already_complete(response, have)
                return
            if response.status_code in _RETRYABLE_STATUS:
                raise _Retry(f"HTTP {response.status_code}")
            if response.status_code not in (200, 206):
                raise DownloadError(f"{url}: HTTP {response.status_code} {response.reason}")
            offset, total = _resume_offset(response, have)
            if offset != have:
                log.info("server did not resume at byte %d; starting %s over", have, url)
            _stream(response, partial, offset, total)
    except (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.HTTPError,
    ) as exc:
        raise _Retry(f"{type(exc).__name__}: {exc}") from exc


def _resume_offset(response: requests.Response, have: int) -> tuple[int, int | None]:
    """Where this response's body starts in the file, and the file's total size if known."""
    if response.status_code == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if match and int(match.group(1)) == have:
            total = match.group(3)
            return have, None if total == "*" else int(total)
        raise _Retry(f"unexpected Content-Range {response.headers.get('Content-Range')!r} for byte {have}")
    length = response.headers.get("Content-Length")
    return 0, int(length) if length is not None else None  # 200: the whole file again


def _check_already_complete(response: requests.Response, have: int) -> None:
    """416 to `Range: bytes=<have>-`: complete if the server's size is exactly `have`."""
    match = _UNSATISFIABLE_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    if match and int(match.group(1)) == have:
        return
    raise _Retry(f"server refused to resume at byte {have} (HTTP 416)")


def _stream(response: requests.Response, partial: Path, offset: int, total: int | None) -> None:
    with (
        partial.open("r+b" if offset else "wb") as handle,
        tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=partial.name[: -len(".part")],
            mininterval=1.0, file=sys.stderr,
        ) as progress,
    ):  # fmt: skip
        handle.seek(offset)
        handle.truncate()
        # raw.read1 hands over every byte as it arrives. iter_content/read(n) buffer up to n
        # bytes and drop that buffer when the connection breaks, losing what a resume needs.
        while chunk := response.raw.read1(_CHUNK, decode_content=False):
            handle.write(chunk)
            progress.update(len(chunk))
        received = handle.tell()
    if total is not None and received != total:
        raise _Retry(f"connection closed at byte {received} of {total}")
