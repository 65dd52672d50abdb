"""The cifar10 source from a local HTTP server: exact arrays, retries, resume, refusals (from a
local file: tests/unit/test_cifar10_source.py)."""

from pathlib import Path

import pytest

from cifar_pipeline.checksums import ChecksumError
from cifar_pipeline.sources import cifar10
from cifar_pipeline.sources.download import DownloadError, RetryPolicy
from tests.helpers import assert_same, md5_spec
from tests.http_files import FileServer, serve

FAST_RETRY = RetryPolicy(attempts=3, backoff_s=0.01, timeout_s=10)


def test_download_from_http_server_gives_exact_arrays(cifar_tarball, tmp_path: Path) -> None:
    path, (train, _) = cifar_tarball
    with serve(FileServer(files={"/mirror/cifar.tgz": path.read_bytes()})) as server:
        loaded, _, _, source = cifar10.load(
            server.url("/mirror/cifar.tgz"), md5_spec(path), tmp_path / "work", FAST_RETRY
        )
    assert_same(loaded, train)
    assert source["url"].endswith("/mirror/cifar.tgz")
    assert not list((tmp_path / "work" / "download").glob("*.part"))


def test_interrupted_transfer_resumes_where_it_stopped(cifar_tarball, tmp_path: Path) -> None:
    path, (train, _) = cifar_tarball
    body = path.read_bytes()
    cut = len(body) // 3
    state = FileServer(files={"/c.tgz": body}, cut_after={"/c.tgz": cut})
    with serve(state) as server:
        loaded, _, _, _ = cifar10.load(server.url("/c.tgz"), md5_spec(path), tmp_path / "work", FAST_RETRY)
    assert_same(loaded, train)
    assert state.requests == [("/c.tgz", None), ("/c.tgz", f"bytes={cut}-")]


def test_server_without_ranges_restarts_from_zero(cifar_tarball, tmp_path: Path) -> None:
    path, (train, _) = cifar_tarball
    state = FileServer(files={"/c.tgz": path.read_bytes()}, cut_after={"/c.tgz": 1000}, ranges=False)
    with serve(state) as server:
        loaded, _, _, _ = cifar10.load(server.url("/c.tgz"), md5_spec(path), tmp_path / "work", FAST_RETRY)
    assert_same(loaded, train)  # the 200 answer to a Range request replaced the partial bytes


def test_transient_server_errors_are_retried(cifar_tarball, tmp_path: Path) -> None:
    path, (train, _) = cifar_tarball
    state = FileServer(files={"/c.tgz": path.read_bytes()}, fail_with={"/c.tgz": [503, 502]})
    with serve(state) as server:
        loaded, _, _, _ = cifar10.load(server.url("/c.tgz"), md5_spec(path), tmp_path / "work", FAST_RETRY)
    assert_same(loaded, train)
    assert len(state.requests) == 3


def test_retries_are_bounded_and_named(tmp_path: Path) -> None:
    state = FileServer(files={"/c.tgz": b"x" * 10}, fail_with={"/c.tgz": [503] * 10})
    gave_up = r"/c\.tgz: gave up after 3 attempts.*503"
    with serve(state) as server, pytest.raises(DownloadError, match=gave_up):
        cifar10.load(server.url("/c.tgz"), cifar10.OFFICIAL_CHECKSUM, tmp_path / "work", FAST_RETRY)
    assert len(state.requests) == 3
    assert not list((tmp_path / "work" / "download").iterdir())  # no partial file left


def test_missing_url_fails_at_once_naming_status(tmp_path: Path) -> None:
    with serve() as server, pytest.raises(DownloadError, match=r"/absent\.tgz: HTTP 404"):
        cifar10.load(server.url("/absent.tgz"), cifar10.OFFICIAL_CHECKSUM, tmp_path / "work", FAST_RETRY)
    assert len(server.requests) == 1  # a 404 is final: no retries


def test_truncated_download_is_refused_by_checksum(cifar_tarball, tmp_path: Path) -> None:
    path, _ = cifar_tarball
    body = path.read_bytes()
    with (
        serve(FileServer(files={"/c.tgz": body[: len(body) // 2]})) as server,
        pytest.raises(ChecksumError, match=r"c\.tgz: md5 checksum mismatch"),
    ):
        cifar10.load(server.url("/c.tgz"), md5_spec(path), tmp_path / "work", FAST_RETRY)
