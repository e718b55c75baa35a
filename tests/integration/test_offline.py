"""docs/design.md O5: with S3 unreachable, cached content stays readable; the rest fails fast."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cas_store import CASFileSystem, StoreOfflineError
from tests.integration.conftest import FSFactory
from tests.support.moto import MotoServer

# Detection may take one botocore retry with backoff; far below any "hang".
FAST = 5.0


@pytest.fixture
def server() -> Iterator[MotoServer]:
    """A private moto server, so stopping it does not disturb other tests."""
    with MotoServer() as private:
        yield private


def _timed_raise(fn: object, *args: object) -> float:
    start = time.monotonic()
    with pytest.raises(StoreOfflineError, match="unreachable"):
        fn(*args)  # type: ignore[operator]
    return time.monotonic() - start


def test_cached_reads_work_and_the_rest_fails_fast(
    server: MotoServer, make_fs: FSFactory, root: str, tmp_path: Path
) -> None:
    writer = make_fs()
    cached, uncached = os.urandom(300_000), os.urandom(300_000)
    writer.pipe(f"{root}/d/cached.bin", cached)
    writer.pipe(f"{root}/d/tiny.txt", b"inline")
    writer.pipe(f"{root}/d/uncached.bin", uncached)
    laptop = make_fs(cache_dir=str(tmp_path / "laptop"), offline_retry_after=60)
    assert laptop.cat(f"{root}/d/cached.bin") == cached
    assert laptop.cat(f"{root}/d/tiny.txt") == b"inline"
    laptop.ls(f"{root}/d")  # the listing is mirrored too

    server.stop()
    start = time.monotonic()
    assert laptop.cat(f"{root}/d/cached.bin") == cached
    assert time.monotonic() - start < FAST
    start = time.monotonic()
    assert laptop.cat(f"{root}/d/cached.bin") == cached  # now without even trying S3
    assert time.monotonic() - start < 0.5
    assert laptop.cat(f"{root}/d/tiny.txt") == b"inline"
    assert laptop.info(f"{root}/d/cached.bin")["size"] == len(cached)
    assert laptop.isdir(f"{root}/d")
    s = root[len("s3cas://") :]
    assert laptop.ls(f"{root}/d", detail=False) == [
        f"{s}/d/cached.bin",
        f"{s}/d/tiny.txt",
        f"{s}/d/uncached.bin",
    ]
    assert laptop.find(root) == [f"{s}/d/cached.bin", f"{s}/d/tiny.txt", f"{s}/d/uncached.bin"]
    with laptop.open(f"{root}/d/cached.bin", "rb") as f:
        f.seek(10)
        assert f.read(5) == cached[10:15]

    # Seen in a listing but never downloaded: the bytes are not here.
    assert _timed_raise(laptop.cat, f"{root}/d/uncached.bin") < FAST
    assert _timed_raise(laptop.cat, f"{root}/never/seen") < FAST
    assert _timed_raise(laptop.pipe, f"{root}/new.bin", b"x" * 100_000) < FAST
    assert _timed_raise(laptop.open, f"{root}/new2.bin", "wb") < FAST

    server.start()
    assert not writer.exists(f"{root}/new.bin")


def test_writer_losing_s3_mid_write_publishes_nothing(
    server: MotoServer, make_fs: FSFactory, root: str
) -> None:
    fs = make_fs(offline_retry_after=0.2)
    fs.pipe(f"{root}/before", b"marker is created")
    f = fs.open(f"{root}/interrupted.bin", "wb")
    f.write(os.urandom(1_000_000))
    server.stop()
    start = time.monotonic()
    with pytest.raises(StoreOfflineError):
        f.close()
    assert time.monotonic() - start < FAST
    assert list(Path(fs.cache.tmp_dir).iterdir()) == []
    server.start()
    time.sleep(0.3)  # past offline_retry_after: S3 is tried again
    assert not fs.exists(f"{root}/interrupted.bin")
    fs.pipe(f"{root}/after", b"back online")
    assert fs.cat(f"{root}/after") == b"back online"


def test_first_contact_offline_is_a_clear_error(make_fs: FSFactory, root: str, server: MotoServer) -> None:
    server.stop()
    fs: CASFileSystem = make_fs()
    assert _timed_raise(fs.cat, f"{root}/anything") < FAST
    assert _timed_raise(fs.ls, root) < FAST


def test_losing_s3_while_chunks_upload_publishes_nothing(
    server: MotoServer, make_fs: FSFactory, root: str
) -> None:
    fs = make_fs(chunk_size=2**20, offline_retry_after=0.2)
    fs.pipe(f"{root}/before", b"marker is created")

    def produce() -> None:
        with fs.open(f"{root}/big.bin", "wb") as f:
            f.write(os.urandom(3 * 2**20))  # three chunks go up in the background
            server.stop()
            for _ in range(8):
                f.write(os.urandom(2**20))

    start = time.monotonic()
    with pytest.raises(StoreOfflineError):
        produce()
    assert time.monotonic() - start < 2 * FAST
    server.start()
    time.sleep(0.3)
    assert not fs.exists(f"{root}/big.bin")
