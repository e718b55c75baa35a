"""LocalCache and Mirror on their own: healing, best-effort fills, translated faults."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cas_store import cache as cache_mod
from cas_store.errors import CacheError, CASStoreError

ALG = "xxh3-128"


def open_cache(directory: Path, policy: str = "least-recently-stored") -> Any:
    return cache_mod.LocalCache(directory, 1 << 30, policy)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def cache(cache_dir: Path) -> Iterator[Any]:
    c = open_cache(cache_dir)
    yield c
    c.close()


def read_blob(cache: Any, digest: str) -> bytes | None:
    handle = cache.open_blob(ALG, digest)
    if handle is None:
        return None
    with handle:
        return bytes(handle.read())


def corrupt_pages(path: Path) -> None:
    """Flip bytes in every page but the first: the header still reads, queries fail."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        for offset in range(8192, size, 4096):
            f.seek(offset)
            f.write(b"\xff" * 64)


@pytest.fixture
def lock_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_mod.LocalCache, "_TIMEOUT", 0.1, raising=False)
    monkeypatch.setattr(cache_mod.Mirror, "_TIMEOUT", 0.1, raising=False)


def hold_write_lock(db: Path) -> sqlite3.Connection:
    locker = sqlite3.connect(db, isolation_level=None, timeout=5)
    locker.execute("BEGIN IMMEDIATE")
    return locker


def assert_names_directory(exc: BaseException, directory: Path) -> None:
    assert isinstance(exc, CacheError)
    assert isinstance(exc, OSError)
    assert isinstance(exc, CASStoreError)
    assert str(directory) in str(exc)


# -- the cache directory removed under a live cache (a) ------------------------------------


def test_removed_directory_blobs_are_misses_and_fills_work_again(cache: Any, cache_dir: Path) -> None:
    assert cache.put_blob(ALG, "a", b"alpha") is not False
    shutil.rmtree(cache_dir)

    assert not cache.has_blob(ALG, "a")
    assert cache.open_blob(ALG, "a") is None
    cache.discard(ALG, "a")

    # A read's fill: download into a temporary file, adopt it.
    fd, path = cache.temp_file(".download")
    with open(fd, "wb") as f:
        f.write(b"alpha")
    cache.adopt(ALG, "a", path)
    assert read_blob(cache, "a") == b"alpha"
    assert cache.has_blob(ALG, "a")
    for name in ("tmp", "blobs/cache.db", "mirror.sqlite3"):
        assert (cache_dir / name).exists(), name

    # What was filled went to the database on disk, not to the removed one.
    other = open_cache(cache_dir)
    assert read_blob(other, "a") == b"alpha"
    other.close()


def test_removed_directory_write_path_fills_again(cache: Any, cache_dir: Path) -> None:
    shutil.rmtree(cache_dir)
    assert cache.put_blob(ALG, "b", b"beta") is not False
    assert read_blob(cache, "b") == b"beta"
    other = open_cache(cache_dir)
    assert read_blob(other, "b") == b"beta"
    other.close()


def test_removed_directory_twice_and_removed_tmp(cache: Any, cache_dir: Path) -> None:
    for round_ in range(2):
        shutil.rmtree(cache_dir)
        assert cache.put_blob(ALG, f"c{round_}", b"gamma") is not False
        assert read_blob(cache, f"c{round_}") == b"gamma"
    shutil.rmtree(cache_dir / "tmp")
    fd, path = cache.temp_file(".download")
    os.close(fd)
    assert Path(path).parent == cache_dir / "tmp"


def test_removed_directory_mirror_writes_reach_the_new_database(cache: Any, cache_dir: Path) -> None:
    mirror = cache.mirror
    mirror.put_entry("s", "old", b"e1", "t1", 1.0)
    mirror.put_marker("s", b"old marker")
    shutil.rmtree(cache_dir)

    mirror.put_entry("s", "new", b"e2", "t2", 2.0)
    assert (cache_dir / "mirror.sqlite3").exists()
    other = open_cache(cache_dir)
    assert other.mirror.get_entry("s", "new") == (b"e2", "t2", 2.0)
    assert other.mirror.get_entry("s", "old") is None
    assert other.mirror.get_marker("s") is None

    mirror.put_entries("s", [("dir/x", b"e3", "t3", 3.0)])
    mirror.put_marker("s", b"marker")
    assert mirror.get_entry("s", "new") == (b"e2", "t2", 2.0)
    assert mirror.paths_under("s", "dir") == ["dir/x"]
    assert other.mirror.entries_under("s", "dir") == [("dir/x", b"e3", "t3", 3.0)]
    assert other.mirror.get_marker("s") == b"marker"
    mirror.delete_entries("s", ["new"])
    assert other.mirror.get_entry("s", "new") is None
    other.close()


def test_removed_directory_mirror_blob_proofs(cache: Any, cache_dir: Path) -> None:
    mirror = cache.mirror
    shutil.rmtree(cache_dir)
    mirror.remember_blob("s", "blobkey", 100.0)
    other = open_cache(cache_dir)
    assert other.mirror.blob_proven_at("s", "blobkey") == 100.0
    mirror.forget_blob("s", "blobkey")
    assert other.mirror.blob_proven_at("s", "blobkey") is None
    other.close()


def test_removed_directory_other_threads_reconnect(cache: Any, cache_dir: Path) -> None:
    """Each thread has its own connections; all of them must move to the new databases."""
    errors: list[BaseException] = []
    connected, healed = threading.Event(), threading.Event()

    def worker() -> None:
        try:
            assert cache.put_blob(ALG, "t1", b"one") is not False
            cache.mirror.put_entry("s", "t1", b"e", "t", 1.0)
            connected.set()
            healed.wait(10)
            assert cache.put_blob(ALG, "t2", b"two") is not False
            cache.mirror.put_entry("s", "t2", b"e", "t", 1.0)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    assert connected.wait(10)
    shutil.rmtree(cache_dir)
    assert cache.put_blob(ALG, "m", b"main") is not False  # this thread heals
    healed.set()
    thread.join(10)
    assert not errors

    other = open_cache(cache_dir)
    assert read_blob(other, "t2") == b"two"
    assert read_blob(other, "m") == b"main"
    assert other.mirror.get_entry("s", "t2") is not None
    other.close()


def test_lost_blob_file_is_a_miss(cache: Any, cache_dir: Path) -> None:
    assert cache.put_blob(ALG, "d", b"delta") is not False
    for path in (cache_dir / "blobs").rglob("*.val"):
        path.unlink()
    assert cache.open_blob(ALG, "d") is None
    assert not cache.has_blob(ALG, "d")  # the row of the lost file is gone too


# -- cache faults on the write path are best effort (d) ------------------------------------


class _FullFile:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def write(self, data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_put_blob_disk_full_is_logged_once_and_returns_false(
    cache: Any, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cache_mod, "open", lambda fd, mode: _FullFile(fd), raising=False)
    with caplog.at_level(logging.DEBUG, logger="cas_store.cache"):
        assert cache.put_blob(ALG, "e", b"epsilon") is False
        assert cache.put_blob(ALG, "f", b"phi") is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(cache_dir) in warnings[0].getMessage()
    assert "disk" in warnings[0].getMessage()
    assert list((cache_dir / "tmp").iterdir()) == []  # no spool left behind
    assert not cache.has_blob(ALG, "e")


def test_put_blob_database_full_returns_false(cache: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> None:
        exc = sqlite3.OperationalError("database or disk is full")
        exc.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
        raise exc

    monkeypatch.setattr(type(cache.blobs), "set", full)
    assert cache.put_blob(ALG, "g", b"gamma") is False


def test_put_blob_unusable_tmp_returns_false_but_temp_file_raises(cache: Any, cache_dir: Path) -> None:
    shutil.rmtree(cache_dir / "tmp")
    (cache_dir / "tmp").write_bytes(b"not a directory")
    assert cache.put_blob(ALG, "h", b"eta") is False
    with pytest.raises(CacheError) as info:
        cache.temp_file(".download")
    assert_names_directory(info.value, cache_dir)


def test_put_blob_locked_database_returns_false(lock_timeout: None, cache_dir: Path) -> None:
    cache = open_cache(cache_dir)
    locker = hold_write_lock(cache_dir / "blobs" / "cache.db")
    try:
        assert cache.put_blob(ALG, "i", b"iota") is False
        assert list((cache_dir / "tmp").iterdir()) == []
        assert [p for p in (cache_dir / "blobs").rglob("*.val")] == []
    finally:
        locker.rollback()
        locker.close()
    assert cache.put_blob(ALG, "i", b"iota") is True
    cache.close()


def test_adopt_survives_eviction_removing_its_directory(cache: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process's eviction (Disk.remove) empties and removes the directory between
    makedirs and rename."""
    real_rename = os.rename
    raced: list[str] = []

    def racing_rename(src: Any, dst: Any) -> None:
        if not raced and f"{os.sep}blobs{os.sep}" in str(dst):
            raced.append(str(dst))
            os.removedirs(os.path.dirname(dst))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", racing_rename)
    assert cache.put_blob(ALG, "j", b"kappa") is not False
    assert raced
    assert read_blob(cache, "j") == b"kappa"


# -- faults are translated, damaged databases rebuilt --------------------------------------


def test_locked_blob_database_on_read_raises_cache_error(lock_timeout: None, cache_dir: Path) -> None:
    cache = open_cache(cache_dir, "least-recently-used")  # its reads write the access time
    assert cache.put_blob(ALG, "k", b"kappa") is not False
    locker = hold_write_lock(cache_dir / "blobs" / "cache.db")
    try:
        with pytest.raises(CacheError) as info:
            cache.open_blob(ALG, "k")
        assert_names_directory(info.value, cache_dir)
        assert "lock" in str(info.value)
        with pytest.raises(CacheError) as info:
            cache.discard(ALG, "k")
        assert_names_directory(info.value, cache_dir)
    finally:
        locker.rollback()
        locker.close()
    assert read_blob(cache, "k") == b"kappa"
    cache.close()


def test_locked_mirror_raises_cache_error(lock_timeout: None, cache_dir: Path) -> None:
    cache = open_cache(cache_dir)
    locker = hold_write_lock(cache_dir / "mirror.sqlite3")
    try:
        with pytest.raises(CacheError) as info:
            cache.mirror.put_entry("s", "p", b"e", "t", 1.0)
        assert_names_directory(info.value, cache_dir)
        assert "lock" in str(info.value)
    finally:
        locker.rollback()
        locker.close()
    cache.mirror.put_entry("s", "p", b"e", "t", 1.0)
    cache.close()


def test_cache_directory_that_cannot_be_created_raises_cache_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(CacheError) as info:
        open_cache(tmp_path / "file" / "cache")
    assert_names_directory(info.value, tmp_path / "file" / "cache")


def test_mirror_that_is_not_a_database_is_rebuilt(cache_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = open_cache(cache_dir)
    cache.mirror.put_entry("s", "p", b"e", "t", 1.0)
    cache.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{cache_dir / 'mirror.sqlite3'}{suffix}").unlink(missing_ok=True)
    (cache_dir / "mirror.sqlite3").write_bytes(os.urandom(8192))
    with caplog.at_level(logging.WARNING, logger="cas_store.cache"):
        cache = open_cache(cache_dir)
    assert any("damaged" in r.getMessage() for r in caplog.records)
    assert cache.mirror.get_entry("s", "p") is None
    cache.mirror.put_entry("s", "p", b"e", "t", 1.0)
    assert cache.mirror.get_entry("s", "p") == (b"e", "t", 1.0)
    cache.close()


def test_mirror_with_damaged_pages_is_rebuilt(cache_dir: Path) -> None:
    cache = open_cache(cache_dir)
    cache.mirror.put_entries("s", [(f"p{i:04}", b"e" * 200, "t", 1.0) for i in range(2000)])
    cache.close()
    corrupt_pages(cache_dir / "mirror.sqlite3")
    cache = open_cache(cache_dir)
    assert cache.mirror.get_entry("s", "p0001") is None  # "database disk image is malformed"
    assert cache.mirror.entries_under("s", "") == []
    cache.mirror.put_entry("s", "x", b"e", "t", 1.0)
    assert cache.mirror.get_entry("s", "x") == (b"e", "t", 1.0)
    cache.close()


def test_blob_database_that_is_not_a_database_is_rebuilt(cache_dir: Path) -> None:
    cache = open_cache(cache_dir)
    assert cache.put_blob(ALG, "l", b"lambda") is not False
    cache.close()
    db = cache_dir / "blobs" / "cache.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(os.urandom(8192))
    cache = open_cache(cache_dir)
    assert cache.open_blob(ALG, "l") is None
    assert cache.put_blob(ALG, "l", b"lambda") is not False
    assert read_blob(cache, "l") == b"lambda"
    cache.close()


def test_blob_database_with_damaged_pages_is_rebuilt(cache_dir: Path) -> None:
    cache = open_cache(cache_dir)
    for i in range(300):
        assert cache.put_blob(ALG, f"m{i}", b"mu %d" % i) is not False
    cache.close()
    corrupt_pages(cache_dir / "blobs" / "cache.db")
    cache = open_cache(cache_dir)
    assert cache.open_blob(ALG, "m1") is None
    assert cache.put_blob(ALG, "m1", b"mu 1") is not False
    assert read_blob(cache, "m1") == b"mu 1"
    cache.close()
