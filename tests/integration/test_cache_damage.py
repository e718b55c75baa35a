"""A damaged local cache: correct bytes or a clear cas_store error, never wrong bytes, and the
cache heals once the damage is gone.

Systematic over what can be damaged (a cached chunk file, the whole-file copy a whole read
leaves, the SQLite databases, the directory itself) and how (bytes flipped, truncated,
deleted, pages overwritten, locked by another process), each read three ways: whole,
ranged, and by a new process. "Healed" means: read correctly again, and from the cache
(no blob GET reaches the server).

Bit rot (bytes flipped, size and modification time restored) is the one damage the cache's
fingerprint cannot see; what is promised for it is stated in docs/consistency.md
("Integrity") and asserted exactly, per ``verify_reads`` setting, by the ``bit_rot`` tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cas_store import CASFileSystem, cache
from cas_store.cache import LocalCache, Mirror, blob_cache_key
from cas_store.errors import IntegrityError
from cas_store.fileobj import wait_background
from cas_store.format import Entry
from tests.integration.conftest import FSFactory
from tests.support.moto import MotoServer

MiB = 2**20
DATA = random.Random(10).randbytes(3 * MiB + 123)  # four chunks of 1 MiB (the last short)
RANGE = (MiB + 1000, MiB + 1100)  # inside the second chunk, where the damage goes
DAMAGE_AT = 1050  # offset of the damaged byte in that chunk: inside RANGE


@pytest.fixture
def server(moto: MotoServer) -> MotoServer:
    return moto


# -- helpers -----------------------------------------------------------------------------


def _entry(fs: CASFileSystem, path: str) -> Entry:
    store, rel = fs.locate(path)
    record = store.resolve(rel)
    assert record is not None
    return record.entry


def _cached_path(fs: CASFileSystem, path: str, digest: str) -> Path | None:
    """The file that caches blob ``digest`` (None if not cached), from diskcache's own table."""
    store, _ = fs.locate(path)
    blobs = store.cache.blobs
    row = blobs._sql(  # diskcache keeps the file name in its Cache table
        "SELECT filename FROM Cache WHERE key = ?", (blob_cache_key("xxh128", digest),)
    ).fetchone()
    return None if row is None or row[0] is None else Path(blobs.directory) / row[0]


def _warm(fs: CASFileSystem, path: str) -> Entry:
    """Write DATA at ``path`` and read it whole: its chunks and its whole-file copy are cached."""
    fs.pipe(path, DATA)
    assert fs.cat(path) == DATA
    wait_background()  # the whole-file copy is assembled after the read
    entry = _entry(fs, path)
    assert len(entry.chunks) == 4
    assert _cached_path(fs, path, entry.digest) is not None, "no whole-file copy was kept"
    return entry


def _flip(file: Path, offset: int, *, keep_fingerprint: bool) -> None:
    """Flip one byte in place; with ``keep_fingerprint`` restore size and mtime, as bit rot
    leaves them (the inode is kept by an in-place write anyway)."""
    before = file.stat()
    with open(file, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    if keep_fingerprint:
        os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = file.stat()
        assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
            before.st_size,
            before.st_mtime_ns,
            before.st_ino,
        )
    else:
        os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))


def _damage(file: Path, kind: str) -> None:
    if kind == "flipped":
        _flip(file, DAMAGE_AT, keep_fingerprint=False)
    elif kind == "truncated":
        os.truncate(file, DAMAGE_AT)
    elif kind == "deleted":
        file.unlink()
    else:
        raise AssertionError(kind)


def _read_in_pieces(f: Any) -> bytes:
    """A streaming read from offset 0 (checked at its end, after bytes were handed out)."""
    return b"".join(iter(lambda: f.read(300_000), b""))


def _blob_gets(log: Any) -> int:
    return sum(1 for r in log.requests if r.method == "GET" and r.key and "/blobs/" in r.key)


def _assert_served_from_cache(fs: CASFileSystem, moto: MotoServer, path: str) -> None:
    """Healed: whole and ranged reads correct, and no blob GET reaches the server."""
    with moto.record() as log:
        assert fs.cat(path) == DATA
        assert fs.cat_file(path, *RANGE) == DATA[slice(*RANGE)]
    assert _blob_gets(log) == 0, [r.key for r in log.requests]


_NEW_PROCESS = textwrap.dedent(
    """
    import json, sys
    from cas_store import CASFileSystem
    options, path, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    start, end = options.pop("_range")
    fs = CASFileSystem(**options)
    try:
        whole = fs.cat(path)
        ranged = fs.cat_file(path, start, end)
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        sys.exit(0)
    open(out, "wb").write(whole)
    open(out + ".range", "wb").write(ranged)
    print(json.dumps({"error": None}))
    """
)


def _options(moto: MotoServer, bucket: str, cache_dir: Path, **extra: Any) -> dict[str, Any]:
    return {
        "root": f"s3cas://{bucket}/store",
        "key": moto.access_key,
        "secret": moto.secret_key,
        "client_kwargs": {"endpoint_url": moto.endpoint_url},
        "cache_dir": str(cache_dir),
        "skip_instance_cache": True,
        **extra,
    }


def _read_in_new_process(
    moto: MotoServer, bucket: str, cache_dir: Path, path: str, tmp_path: Path, **extra: Any
) -> tuple[bytes, bytes]:
    """(whole, ranged) as a fresh process on the same cache directory reads them."""
    options = _options(moto, bucket, cache_dir, **extra)
    out = tmp_path / "new-process.out"
    done = subprocess.run(
        [sys.executable, "-c", _NEW_PROCESS, json.dumps({**options, "_range": RANGE}), path, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["error"] is None, result
    return out.read_bytes(), Path(f"{out}.range").read_bytes()


# -- cached files: flipped (mtime changed), truncated, deleted ------------------------------


@pytest.mark.parametrize("kind", ["flipped", "truncated", "deleted"])
@pytest.mark.parametrize("target", ["chunk", "whole-copy"])
def test_damaged_cached_file_is_a_miss(
    make_fs: FSFactory, moto: MotoServer, bucket: str, root: str, tmp_path: Path, target: str, kind: str
) -> None:
    """A cached file changed through the file system (its fingerprint changes) is discarded at
    open and fetched again: whole and ranged reads, in this process and a new one, are correct;
    afterwards the cache serves the file again."""
    fs = make_fs(chunk_size=MiB)
    path = f"{root}/f.bin"
    entry = _warm(fs, path)
    whole = _cached_path(fs, path, entry.digest)
    assert whole is not None
    if target == "chunk":
        fs.store(path).cache.discard("xxh128", entry.digest)  # reads must use the chunk files
        damaged = _cached_path(fs, path, entry.chunks[1].digest)
    else:
        damaged = whole
    assert damaged is not None
    _damage(damaged, kind)

    assert fs.cat_file(path, *RANGE) == DATA[slice(*RANGE)]
    assert fs.cat(path) == DATA
    with fs.open(path, "rb") as f:
        assert _read_in_pieces(f) == DATA
    wait_background()
    assert _read_in_new_process(moto, bucket, tmp_path / "cache", path, tmp_path) == (
        DATA,
        DATA[slice(*RANGE)],
    )
    wait_background()
    _assert_served_from_cache(fs, moto, path)


@pytest.mark.parametrize("kind", ["flipped", "truncated", "deleted"])
def test_damage_found_by_a_new_process_first(
    make_fs: FSFactory, moto: MotoServer, bucket: str, root: str, tmp_path: Path, kind: str
) -> None:
    """The same for a process that never read the file before (nothing trusted in it)."""
    fs = make_fs(chunk_size=MiB)
    path = f"{root}/f.bin"
    entry = _warm(fs, path)
    for digest in (entry.digest, entry.chunks[1].digest):
        file = _cached_path(fs, path, digest)
        assert file is not None
        _damage(file, kind)
    assert _read_in_new_process(moto, bucket, tmp_path / "cache", path, tmp_path) == (
        DATA,
        DATA[slice(*RANGE)],
    )
    _assert_served_from_cache(fs, moto, path)


# -- bit rot: bytes flipped, size and mtime kept ------------------------------------------


def _rot_chunk(fs: CASFileSystem, path: str, entry: Entry) -> None:
    """Bit rot in the second chunk's file, with the whole-file copy dropped so reads use chunks."""
    fs.store(path).cache.discard("xxh128", entry.digest)
    chunk = _cached_path(fs, path, entry.chunks[1].digest)
    assert chunk is not None
    _flip(chunk, DAMAGE_AT, keep_fingerprint=True)


ROTTED = bytearray(DATA)
ROTTED[MiB + DAMAGE_AT] ^= 0xFF


def test_bit_rot_in_a_chunk_file_ranged_and_streaming_reads(make_fs: FSFactory, root: str) -> None:
    """verify_reads=True (the default), content read from chunk files: a ranged read is not
    re-hashed (the documented limit: it returns what the fingerprint-intact file holds); a
    streaming read from offset 0 is checked at its end and raises there (bytes were already
    handed out), discarding the copy, so that the next open reads correct bytes."""
    fs = make_fs(chunk_size=MiB)
    path = f"{root}/f.bin"
    entry = _warm(fs, path)
    _rot_chunk(fs, path, entry)

    assert fs.cat_file(path, *RANGE) == bytes(ROTTED[slice(*RANGE)])  # documented: not re-hashed
    with fs.open(path, "rb") as f, pytest.raises(IntegrityError, match=r"corrupt.*open the file again"):
        _read_in_pieces(f)
    assert fs.cat_file(path, *RANGE) == DATA[slice(*RANGE)]  # the damaged copy was discarded
    assert fs.cat(path) == DATA


def test_bit_rot_in_a_chunk_file_whole_read_is_repaired(
    make_fs: FSFactory, moto: MotoServer, bucket: str, root: str, tmp_path: Path
) -> None:
    """A whole read of content from chunk files is checked every time, in every process, and a
    mismatch is repaired from S3 before anything is returned; the cache then serves it again."""
    fs = make_fs(chunk_size=MiB)
    path = f"{root}/f.bin"
    entry = _warm(fs, path)
    _rot_chunk(fs, path, entry)
    assert fs.cat(path) == DATA
    assert fs.cat_file(path, *RANGE) == DATA[slice(*RANGE)]  # the damaged copy was replaced
    wait_background()
    _assert_served_from_cache(fs, moto, path)

    _rot_chunk(fs, path, entry)
    whole, _ = _read_in_new_process(moto, bucket, tmp_path / "cache", path, tmp_path)
    assert whole == DATA
    wait_background()
    _assert_served_from_cache(fs, moto, path)


def test_bit_rot_in_a_whole_file_copy_verify_reads_on(
    make_fs: FSFactory, moto: MotoServer, bucket: str, root: str, tmp_path: Path
) -> None:
    """verify_reads=True, content cached as one file: checked on the first full read in each
    process, then trusted while its fingerprint holds. So the process that verified it keeps
    serving it (documented limit); a new process checks, repairs and replaces it."""
    fs = make_fs(chunk_size=MiB)
    path = f"{root}/f.bin"
    entry = _warm(fs, path)
    copy = _cached_path(fs, path, entry.digest)
    assert copy is not None
    _flip(copy, MiB + DAMAGE_AT, keep_fingerprint=True)

    assert fs.cat(path) == bytes(ROTTED)  # documented: trusted in the process that verified it

    whole, ranged = _read_in_new_process(moto, bucket, tmp_path / "cache", path, tmp_path)
    assert (whole, ranged) == (DATA, DATA[slice(*RANGE)])  # a new process checks it first
    assert _cached_path(fs, path, entry.digest) != copy or not copy.exists()
    # The damaged copy is gone from the cache: this process reads the correct bytes again.
    assert fs.cat(path) == DATA
    wait_background()
    _assert_served_from_cache(fs, moto, path)

    # And in-process, once trust is forgotten (as in a new process): checked and repaired.
    copy = _cached_path(fs, path, entry.digest)
    assert copy is not None
    _flip(copy, DAMAGE_AT, keep_fingerprint=True)
    cache.forget_verified()
    assert fs.cat(path) == DATA
    wait_background()
    _assert_served_from_cache(fs, moto, path)


def test_bit_rot_verify_reads_off(make_fs: FSFactory, moto: MotoServer, root: str) -> None:
    """verify_reads=False: content is verified when it enters the cache only (and no whole-file
    copy is made); bit rot that keeps the fingerprint is served, as documented."""
    fs = make_fs(chunk_size=MiB, verify_reads=False)
    path = f"{root}/f.bin"
    fs.pipe(path, DATA)
    assert fs.cat(path) == DATA
    wait_background()
    entry = _entry(fs, path)
    assert _cached_path(fs, path, entry.digest) is None  # no whole-file copy without verification
    chunk = _cached_path(fs, path, entry.chunks[1].digest)
    assert chunk is not None
    _flip(chunk, DAMAGE_AT, keep_fingerprint=True)
    assert fs.cat(path) == bytes(ROTTED)
    # A change that moves the mtime is still caught at open, with verification off.
    _flip(chunk, DAMAGE_AT, keep_fingerprint=False)
    assert fs.cat(path) == DATA
    _assert_served_from_cache(fs, moto, path)


# -- the directory removed under a live store ---------------------------------------------


def test_whole_cache_directory_removed_under_a_live_store(
    make_fs: FSFactory, moto: MotoServer, bucket: str, root: str, tmp_path: Path
) -> None:
    fs = make_fs(chunk_size=MiB)
    path = f"{root}/f.bin"
    _warm(fs, path)
    with fs.open(path, "rb") as f:  # a reader open across the removal
        assert f.read(10) == DATA[:10]
        shutil.rmtree(tmp_path / "cache")
        f.seek(MiB * 2)
        assert f.read(MiB) == DATA[2 * MiB : 3 * MiB]
    assert fs.cat_file(path, *RANGE) == DATA[slice(*RANGE)]
    assert fs.cat(path) == DATA
    wait_background()
    assert _read_in_new_process(moto, bucket, tmp_path / "cache", path, tmp_path) == (
        DATA,
        DATA[slice(*RANGE)],
    )
    _assert_served_from_cache(fs, moto, path)
    assert (tmp_path / "cache" / "mirror.sqlite3").is_file()


# -- the SQLite databases ------------------------------------------------------------------


def _databases(cache_dir: Path) -> dict[str, Path]:
    return {"blobs": cache_dir / "blobs" / "cache.db", "mirror": cache_dir / "mirror.sqlite3"}


def _overwrite_pages(db: Path) -> None:
    """Garbage over every page after the first (the header stays: SQLite opens it, then finds
    the damage), with the WAL checkpointed first so that the damage is what SQLite reads."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.seek(4096)
        f.write(random.Random(3).randbytes(max(size - 4096, 4096)))


@pytest.mark.parametrize("db", ["blobs", "mirror"])
@pytest.mark.parametrize("damage", ["pages-overwritten", "truncated", "garbage"])
def test_damaged_database_is_started_afresh(
    make_fs: FSFactory, moto: MotoServer, bucket: str, root: str, tmp_path: Path, db: str, damage: str
) -> None:
    """A damaged database found by a new file system (a new process does the same) is started
    afresh: reads are correct (fetched again), and the cache serves them again afterwards."""
    fs = make_fs(chunk_size=MiB)
    path = f"{root}/f.bin"
    _warm(fs, path)
    fs.store(path).cache.close()
    file = _databases(tmp_path / "cache")[db]
    if damage == "pages-overwritten":
        _overwrite_pages(file)
    elif damage == "truncated":
        with sqlite3.connect(file) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        os.truncate(file, 4096 + 100)
    else:
        for suffix in ("-wal", "-shm"):
            Path(f"{file}{suffix}").unlink(missing_ok=True)
        file.write_bytes(b"this is not an SQLite database" * 200)

    assert _read_in_new_process(moto, bucket, tmp_path / "cache", path, tmp_path) == (
        DATA,
        DATA[slice(*RANGE)],
    )
    fresh = make_fs(chunk_size=MiB)
    assert fresh.cat_file(path, *RANGE) == DATA[slice(*RANGE)]
    assert fresh.cat(path) == DATA
    wait_background()
    _assert_served_from_cache(fresh, moto, path)


_LOCKER = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("CREATE TABLE IF NOT EXISTS locker_was_here (x)")  # a write: the lock is taken
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    conn.execute("ROLLBACK")
    """
)


@pytest.fixture
def short_lock_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache waits 60 s for another process's lock; these tests wait 0.5 s."""
    monkeypatch.setattr(LocalCache, "_TIMEOUT", 0.5)
    monkeypatch.setattr(Mirror, "_TIMEOUT", 0.5)


@contextlib.contextmanager
def _locked(db: Path) -> Iterator[None]:
    """Another process holds an exclusive transaction on ``db`` while the block runs."""
    locker = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        yield
    finally:
        assert locker.stdin is not None
        locker.stdin.close()
        assert locker.wait(timeout=60) == 0


@pytest.mark.parametrize("db", ["blobs", "mirror"])
def test_database_locked_by_another_process(
    short_lock_waits: None,
    make_fs: FSFactory,
    moto: MotoServer,
    bucket: str,
    root: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    db: str,
) -> None:
    """While another process holds a write transaction on a cache database (WAL: readers go
    on), reads return correct bytes: what cannot be recorded in the cache after the lock wait
    is logged and served uncached; writes still reach S3. Once the lock is released, the cache
    serves again. (The wait is 60 s outside this test.)"""
    fs = make_fs(chunk_size=MiB)
    path = f"{root}/f.bin"
    _warm(fs, path)
    other = f"{root}/cold.bin"
    make_fs(chunk_size=MiB, cache_dir=str(tmp_path / "elsewhere")).pipe(other, DATA[::-1])
    written = f"{root}/written-while-locked.bin"

    with _locked(_databases(tmp_path / "cache")[db]):
        assert fs.cat(path) == DATA
        assert fs.cat_file(path, *RANGE) == DATA[slice(*RANGE)]
        assert fs.cat(other) == DATA[::-1]  # not cached: its fills wait for the lock, then give up
        fs.pipe(written, DATA[: 2 * MiB])  # caching what is written is best effort
        wait_background()
    assert "database locked" in caplog.text  # the lock was in the way (and said so)

    assert make_fs(cache_dir=str(tmp_path / "check")).cat(written) == DATA[: 2 * MiB]
    assert fs.cat(other) == DATA[::-1]
    wait_background()
    _assert_served_from_cache(fs, moto, path)
    assert _read_in_new_process(moto, bucket, tmp_path / "cache", path, tmp_path) == (
        DATA,
        DATA[slice(*RANGE)],
    )
