"""The local cache: blob contents (diskcache) and a mirror of manifest entries (SQLite).

One cache directory may be shared by many threads, processes and stores at once:
blobs are keyed by algorithm and digest only, so identical content is cached once
whichever store it came from; mirror rows are keyed by store.

Layout of ``cache_dir``::

    blobs/            diskcache.Cache, one file per blob, size-bounded
    mirror.sqlite3    manifest entries this machine has seen, blobs known to be in S3
    tmp/              chunks being cached and downloads (same filesystem: adoption is a rename)
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import diskcache

log = logging.getLogger(__name__)

_STALE_TMP_SECONDS = 24 * 3600


class _Adopt:
    """A value for :class:`AdoptingDisk`: move this file into the cache instead of copying it."""

    def __init__(self, path: str) -> None:
        self.path = path


class AdoptingDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's Disk, plus storing a finished file by renaming it into the cache.

    Saves a full copy per fill: chunk and download files already live on the cache's
    filesystem and are complete and verified before they are stored.
    """

    def store(self, value: Any, read: bool, key: Any = diskcache.UNKNOWN) -> tuple[int, int, str | None, Any]:
        if isinstance(value, _Adopt):
            filename, full_path = self.filename(key, value)
            os.makedirs(os.path.dirname(full_path), exist_ok=True)
            size = os.path.getsize(value.path)
            os.rename(value.path, full_path)
            return size, diskcache.core.MODE_BINARY, filename, None
        return super().store(value, read, key)  # type: ignore[no-any-return]


def _fingerprint(st: os.stat_result) -> str:
    # Any write through the file system changes mtime_ns; a rename keeps the inode.
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def blob_cache_key(algorithm: str, digest: str) -> str:
    return f"{algorithm}:{digest}"


class Mirror:
    """Manifest entries this machine has seen, and blobs known to be in a store's bucket.

    A small SQLite database (WAL, one connection per thread and process), because
    offline listings need ordered prefix scans, which diskcache does not offer.
    """

    # The mirror is a cache: a database of another schema version is dropped and rebuilt.
    _SCHEMA_VERSION = 2
    _SCHEMA = (
        # checked: when S3 last confirmed the entry (see StoreConfig.entry_ttl).
        "CREATE TABLE entries (store TEXT NOT NULL, rel TEXT NOT NULL, entry BLOB NOT NULL, "
        "etag TEXT NOT NULL, modified REAL NOT NULL, checked REAL NOT NULL, "
        "PRIMARY KEY (store, rel)) WITHOUT ROWID",
        "CREATE TABLE remote_blobs (store TEXT NOT NULL, key TEXT NOT NULL, seen REAL NOT NULL, "
        "PRIMARY KEY (store, key)) WITHOUT ROWID",
        "CREATE TABLE markers (store TEXT PRIMARY KEY, marker BLOB NOT NULL)",
    )

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        conn = self._connect()
        with _transaction(conn):
            if conn.execute("PRAGMA user_version").fetchone()[0] != self._SCHEMA_VERSION:
                for table in ("entries", "remote_blobs", "markers"):
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                for statement in self._SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {self._SCHEMA_VERSION}")

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def close(self) -> None:
        """Close this thread's connection (as diskcache does); it reopens on the next use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def put_entry(self, store: str, rel: str, entry: bytes, etag: str, modified: float) -> None:
        """Record an entry that S3 confirmed just now (one autocommitted statement)."""
        self._connect().execute(
            "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)",
            (store, rel, entry, etag, modified, time.time()),
        )

    def put_entries(self, store: str, rows: Iterable[tuple[str, bytes, str, float]]) -> None:
        now = time.time()
        conn = self._connect()
        with _transaction(conn):
            conn.executemany(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                [(store, *row, now) for row in rows],
            )

    def get_entry(
        self, store: str, rel: str, max_age: float | None = None
    ) -> tuple[bytes, str, float] | None:
        """(entry, etag, modified) of ``rel``; with ``max_age``, only if S3 confirmed it that recently."""
        row = (
            self._connect()
            .execute(
                "SELECT entry, etag, modified, checked FROM entries WHERE store = ? AND rel = ?", (store, rel)
            )
            .fetchone()
        )
        if row is None or (max_age is not None and time.time() - row[3] >= max_age):
            return None
        return bytes(row[0]), row[1], row[2]

    def delete_entries(self, store: str, rels: Iterable[str]) -> None:
        conn = self._connect()
        with _transaction(conn):
            conn.executemany("DELETE FROM entries WHERE store = ? AND rel = ?", [(store, r) for r in rels])

    def _under(self, columns: str, store: str, rel: str, limit: int = -1) -> sqlite3.Cursor:
        """Rows of every path below directory ``rel`` ('' for the root), in path order."""
        low, high = (rel + "/", rel + "0") if rel else ("", "\U0010ffff")  # '0' sorts right after '/'
        return self._connect().execute(
            f"SELECT {columns} FROM entries WHERE store = ? AND rel >= ? AND rel < ? ORDER BY rel LIMIT ?",
            (store, low, high, limit),
        )

    def entries_under(self, store: str, rel: str) -> list[tuple[str, bytes, str, float]]:
        """(path, entry, etag, modified) of every path below directory ``rel``, in path order."""
        rows = self._under("rel, entry, etag, modified", store, rel)
        return [(r[0], bytes(r[1]), r[2], r[3]) for r in rows]

    def paths_under(self, store: str, rel: str, limit: int = -1) -> list[str]:
        """Every path (at most ``limit``) below directory ``rel``, in order."""
        return [r[0] for r in self._under("rel", store, rel, limit)]

    def remember_blob(self, store: str, key: str) -> None:
        self._connect().execute(
            "INSERT OR REPLACE INTO remote_blobs VALUES (?, ?, ?)", (store, key, time.time())
        )

    def knows_blob(self, store: str, key: str, max_age: float) -> bool:
        row = (
            self._connect()
            .execute("SELECT seen FROM remote_blobs WHERE store = ? AND key = ?", (store, key))
            .fetchone()
        )
        return row is not None and time.time() - row[0] < max_age

    def forget_blob(self, store: str, key: str) -> None:
        self._connect().execute("DELETE FROM remote_blobs WHERE store = ? AND key = ?", (store, key))

    def put_marker(self, store: str, marker: bytes) -> None:
        self._connect().execute("INSERT OR REPLACE INTO markers VALUES (?, ?)", (store, marker))

    def get_marker(self, store: str) -> bytes | None:
        row = self._connect().execute("SELECT marker FROM markers WHERE store = ?", (store,)).fetchone()
        return None if row is None else bytes(row[0])


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class LocalCache:
    """Size-bounded blob cache plus the manifest mirror, in one directory.

    Guarantees: a blob is in the cache only after its digest was verified; a fill
    is atomic (rename of a complete file); a cached file later modified on disk is
    detected at open by its fingerprint and treated as a miss.
    """

    def __init__(self, directory: Path, size_limit: int, eviction_policy: str) -> None:
        self.directory = directory
        self.tmp_dir = directory / "tmp"
        # Private: the mirror holds paths and inline file contents.
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.tmp_dir.mkdir(mode=0o700, exist_ok=True)
        self.blobs = diskcache.Cache(
            str(directory / "blobs"),
            size_limit=size_limit,
            eviction_policy=eviction_policy,
            disk=AdoptingDisk,
        )
        self.mirror = Mirror(directory / "mirror.sqlite3")
        self._remove_stale_tmp()

    def _remove_stale_tmp(self) -> None:
        # Spools of processes that died mid-write; young ones may belong to live writers.
        cutoff = time.time() - _STALE_TMP_SECONDS
        for path in self.tmp_dir.iterdir():
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    def temp_file(self, suffix: str) -> tuple[int, str]:
        """A new file in the cache's tmp directory: (fd, path)."""
        return tempfile.mkstemp(dir=self.tmp_dir, suffix=suffix)

    def adopt(self, algorithm: str, digest: str, path: str) -> None:
        """Move the verified file ``path`` into the cache as blob ``digest`` (no copy)."""
        tag = _fingerprint(os.stat(path))
        self.blobs.set(blob_cache_key(algorithm, digest), _Adopt(path), read=True, tag=tag)

    def put_blob(self, algorithm: str, digest: str, data: memoryview | bytes) -> None:
        """Cache ``data``, whose digest the caller computed from these very bytes."""
        fd, path = self.temp_file(".chunk")
        try:
            with open(fd, "wb") as f:
                f.write(data)
            self.adopt(algorithm, digest, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise

    def open_blob(self, algorithm: str, digest: str) -> BinaryIO | None:
        """An open handle on the cached blob, or None on a miss or a tampered cache file."""
        key = blob_cache_key(algorithm, digest)
        result = self.blobs.get(key, read=True, tag=True)
        handle, tag = result if result is not None else (None, None)
        if handle is None:
            return None
        if not hasattr(handle, "fileno") or _fingerprint(os.fstat(handle.fileno())) != tag:
            handle.close()
            log.warning("cached blob %s was modified on disk; discarding it", digest)
            self.discard(algorithm, digest)
            return None
        return handle  # type: ignore[no-any-return]

    def has_blob(self, algorithm: str, digest: str) -> bool:
        return blob_cache_key(algorithm, digest) in self.blobs

    def discard(self, algorithm: str, digest: str) -> None:
        self.blobs.delete(blob_cache_key(algorithm, digest))

    def close(self) -> None:
        """Close this thread's database handles; they reopen on the next use."""
        self.blobs.close()
        self.mirror.close()
