"""The local cache: blob contents (diskcache) and a mirror of manifest entries (SQLite).

One cache directory may be shared by many threads, processes and stores at once:
blobs are keyed by algorithm and digest only, so identical content is cached once
whichever store it came from; mirror rows are keyed by store.

Layout of ``cache_dir``::

    blobs/            diskcache.Cache, one file per blob (chunks and whole-file copies), size-bounded
    mirror.sqlite3    manifest entries and markers this machine has seen, blobs known to be in
                      S3, chunk runs of files written here (cas_store.runs)
    tmp/              chunks being cached, downloads and whole-file copies being assembled
                      (same filesystem: adoption is a rename)

It is only a cache, and it heals: when the directory (or part of it) is removed under
a live process, what is missing is created again and lost blobs are misses; a damaged
database is started afresh. A fault it cannot heal raises
:class:`~cas_store.errors.CacheError` naming the directory, except when caching a
written chunk (:meth:`LocalCache.put_blob`), which is best effort.

SQLite keeps working on a database file deleted while open (on its unlinked inode),
so removal is noticed by the file system: a missing tmp directory or blob file, or
a database path that names another file (one ``stat``, only before writes, which
cost a transaction anyway, and before believing a positive :meth:`LocalCache.has_blob`).
A warm read costs nothing extra.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import random
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import diskcache

from cas_store.errors import CacheError, CASStoreError

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_STALE_TMP_SECONDS = 24 * 3600
# How often a rename into the cache is retried when the target directory vanishes (as Disk._write).
_ADOPT_ATTEMPTS = 10
# What a fault of the cache directory raises: the file system, SQLite, diskcache's lock timeout.
_FAULTS = (OSError, sqlite3.Error, diskcache.Timeout)

_Identity = tuple[int, int] | None


#: Pruning a cache whose policy is "none" (diskcache then never evicts) removes the least
#: recently stored blobs first; blobs are looked up this many per query, then evicted singly.
_PRUNE_ORDER = "least-recently-stored"
_PRUNE_BATCH = 100


class _Adopt:
    """A value for :class:`AdoptingDisk`: move this file into the cache instead of copying it."""

    def __init__(self, path: str) -> None:
        self.path = path


class AdoptingDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's Disk, plus storing a finished file by renaming it into the cache.

    Saves a full copy per fill: chunk and download files already live on the cache's
    filesystem and are complete and verified before they are stored. Also records, per
    thread, why the last fetch failed (diskcache reports a failed open as a miss).
    """

    def __init__(self, directory: str, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.failures = threading.local()

    def store(self, value: Any, read: bool, key: Any = diskcache.UNKNOWN) -> tuple[int, int, str | None, Any]:
        if not isinstance(value, _Adopt):
            return super().store(value, read, key)  # type: ignore[no-any-return]
        filename, full_path = self.filename(key, value)
        full_dir = os.path.dirname(full_path)
        size = os.path.getsize(value.path)
        # As Disk._write: another process's eviction removes the directories it empties
        # (Disk.remove), possibly this one between makedirs and rename; make it again.
        for attempt in range(1, _ADOPT_ATTEMPTS + 1):
            with contextlib.suppress(OSError):
                # The mode applies to the leaf only: make the fan-out level above it first.
                os.makedirs(os.path.dirname(full_dir), mode=_PRIVATE_DIR, exist_ok=True)
                os.makedirs(full_dir, mode=_PRIVATE_DIR)
            try:
                os.rename(value.path, full_path)
            except FileNotFoundError:
                if attempt == _ADOPT_ATTEMPTS or not os.path.exists(value.path):
                    raise
                continue
            break
        value.path = full_path  # where a retry finds the file if the transaction fails
        return size, diskcache.core.MODE_BINARY, filename, None

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        try:
            return super().fetch(mode, filename, value, read)
        except OSError as exc:
            self.failures.error = exc
            raise


#: Modes of what the cache creates, whatever the umask: the mirror holds paths and inline
#: file contents, the blobs the content of every file read.
_PRIVATE_DIR = 0o700
_PRIVATE_FILE = 0o600


def _private_file(path: Path) -> None:
    """Create ``path`` empty and readable by its owner only, unless it exists: SQLite then
    opens it as a new database, and gives its -wal and -shm files the same mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE_FILE)
    except FileExistsError:
        return
    os.close(fd)


def _fingerprint(st: os.stat_result) -> str:
    # Any write through the file system changes mtime_ns; a rename keeps the inode.
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


#: How many verified cached files a process remembers (LRU): about 100 bytes each.
_VERIFIED_MAX = 65536
_verified: collections.OrderedDict[tuple[int, str, str], None] = collections.OrderedDict()
_verified_lock = threading.Lock()


def _verified_key(file: int | BinaryIO, digest: str) -> tuple[int, str, str] | None:
    try:
        st = os.fstat(file if isinstance(file, int) else file.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return st.st_dev, _fingerprint(st), digest


def trusted(file: int | BinaryIO, digest: str) -> bool:
    """Whether this process already hashed the content of this very file (same device,
    inode, size and mtime) and found ``digest``: then a read need not hash it again."""
    key = _verified_key(file, digest)
    with _verified_lock:
        if key is None or key not in _verified:
            return False
        _verified.move_to_end(key)
        return True


def mark_verified(file: int | BinaryIO, digest: str) -> None:
    """Record that the content of the open file (descriptor or handle) hashed to ``digest``."""
    key = _verified_key(file, digest)
    if key is None:
        return
    with _verified_lock:
        _verified[key] = None
        _verified.move_to_end(key)
        while len(_verified) > _VERIFIED_MAX:
            _verified.popitem(last=False)


def forget_verified() -> None:
    """Forget every file verified so far: the next read of each hashes it again (as in a
    new process)."""
    with _verified_lock:
        _verified.clear()


def _identity(path: Path) -> _Identity:
    """Which file ``path`` names now (None: none), to notice a database removed or replaced."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def blob_cache_key(algorithm: str, digest: str) -> str:
    return f"{algorithm}:{digest}"


# -- faults ------------------------------------------------------------------------------


def _sqlite_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None  # the primary code of an extended one


def _is_damaged(exc: BaseException) -> bool:
    """Whether ``exc`` says a database file is corrupt or not a database at all."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = _sqlite_code(exc)
    if code is not None:
        return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    return "malformed" in str(exc) or "not a database" in str(exc)


_ONLY_A_CACHE = "remove the directory (it is only a cache)"


def _diagnose(exc: BaseException) -> tuple[str, str]:
    """(cause, what to do) of a fault of the cache directory."""
    code = _sqlite_code(exc)
    err = exc.errno if isinstance(exc, OSError) else None
    if err in (errno.ENOSPC, errno.EDQUOT) or code == sqlite3.SQLITE_FULL:
        return "disk full", "free disk space there, lower cache_size, or set cache_dir to another disk"
    if err in (errno.EACCES, errno.EPERM, errno.EROFS) or code in (
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_PERM,
    ):
        return (
            "permission denied",
            "make it writable by this user, or set cache_dir to a directory this user can write",
        )
    if isinstance(exc, diskcache.Timeout) or code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return (
            "database locked",
            "another process holds a lock on its database: retry; if this persists, stop that "
            f"process or {_ONLY_A_CACHE}",
        )
    if err in (errno.EMFILE, errno.ENFILE):
        return "too many open files", "raise the open-file limit (ulimit -n)"
    if _is_damaged(exc):
        return "damaged database", _ONLY_A_CACHE
    if err == errno.EIO or code == sqlite3.SQLITE_IOERR:
        return "disk I/O error", f"check the disk, then {_ONLY_A_CACHE}"
    if code == sqlite3.SQLITE_CANTOPEN:
        return "cannot open its database", f"check its permissions and free space, or {_ONLY_A_CACHE}"
    return "failed", _ONLY_A_CACHE


def _cache_error(directory: Path, action: str, exc: BaseException) -> CacheError:
    cause, advice = _diagnose(exc)
    detail = str(exc) or type(exc).__name__
    error = CacheError(f"the local cache {directory} could not {action}: {cause} ({detail}); {advice}")
    if isinstance(exc, OSError):
        error.errno = exc.errno
    return error


def _translated(exc: BaseException) -> bool:
    """Whether ``exc`` is a raw cache fault (not already one of ours)."""
    return isinstance(exc, _FAULTS) and not isinstance(exc, CASStoreError)


# -- the mirror --------------------------------------------------------------------------


class Mirror:
    """Manifest entries this machine has seen, and blobs known to be in a store's bucket.

    A small SQLite database (WAL, one connection per thread and process), because
    offline listings need ordered prefix scans, which diskcache does not offer.
    Recreated when its file is removed or replaced (checked before writes; reads may
    answer from the removed file until then), started afresh when damaged.
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
    _RUNS = (
        "CREATE TABLE IF NOT EXISTS runs (lead TEXT PRIMARY KEY, chunks BLOB NOT NULL, "
        "used REAL NOT NULL) WITHOUT ROWID"
    )
    # Added within schema 2 like runs: the length of each blob the memo vouches for, which
    # tells a writer that deduplicates against it whether it is compressed (docs/format.md 4.1).
    _BLOB_SIZES = (
        "CREATE TABLE IF NOT EXISTS blob_sizes (store TEXT NOT NULL, key TEXT NOT NULL, "
        "stored INTEGER NOT NULL, PRIMARY KEY (store, key)) WITHOUT ROWID"
    )
    #: Chunk runs kept (the most recently recorded): about 40 KiB per GiB of file each.
    RUNS_KEPT = 1024
    _TIMEOUT = 60.0  # seconds to wait for another connection's lock

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._generation = 0  # bumped on reopening: every thread then reconnects
        self._identity: _Identity = None
        try:
            self._reopen()
        except _FAULTS as exc:
            raise _cache_error(path.parent, "open its mirror database", exc) from exc

    def _reopen(self) -> None:
        """Connect afresh (creating what is missing); start the database afresh if damaged."""
        self.path.parent.mkdir(mode=_PRIVATE_DIR, parents=True, exist_ok=True)
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            if not _is_damaged(exc):
                raise
            self._remove_damaged(exc)
            self._setup()

    def _setup(self) -> None:
        self._generation += 1
        _private_file(self.path)
        conn = self._connect()
        with _transaction(conn):
            if conn.execute("PRAGMA user_version").fetchone()[0] != self._SCHEMA_VERSION:
                for table in ("entries", "remote_blobs", "markers"):
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                for statement in self._SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {self._SCHEMA_VERSION}")
            # Added within schema 2 (older versions ignore the table): chunk runs of files
            # written here, which let a writer of the same content skip the chunker.
            conn.execute(self._RUNS)
            conn.execute(self._BLOB_SIZES)
        self._identity = _identity(self.path)

    def _remove_damaged(self, exc: BaseException) -> None:
        log.warning("the cache's mirror database %s is damaged (%s); starting it afresh", self.path, exc)
        self.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")

    def _connect(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        pid = os.getpid()
        if conn is None or local.pid != pid or local.generation != self._generation:
            if conn is not None and local.pid == pid:  # never close a connection inherited by fork
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            local.conn = None
            conn = sqlite3.connect(
                self.path, timeout=self._TIMEOUT, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except BaseException:
                conn.close()
                raise
            local.conn, local.pid, local.generation = conn, pid, self._generation
        return conn

    def check(self) -> bool:
        """Reopen if the database file was removed or replaced; True if it was."""
        if _identity(self.path) == self._identity:
            return False
        with self._lock:
            if _identity(self.path) == self._identity:
                return False
            log.info("the cache's mirror database %s was removed; creating it again", self.path)
            self._reopen()
        return True

    def _run(self, action: str, query: Callable[[sqlite3.Connection], _T], *, write: bool = False) -> _T:
        """``query`` on this thread's connection, healing the database once if that helps."""
        generation = self._generation
        try:
            if write and self.check():  # else the write would go to a removed file
                generation = self._generation
            return query(self._connect())
        except _FAULTS as exc:
            if not _translated(exc):
                raise
            self._recover(generation, action, exc)
        try:
            return query(self._connect())
        except _FAULTS as exc:
            if not _translated(exc):
                raise
            raise _cache_error(self.path.parent, action, exc) from exc

    def _recover(self, generation: int, action: str, exc: BaseException) -> None:
        """Heal what ``exc`` reveals, or raise it as a CacheError."""
        try:
            with self._lock:
                if self._generation != generation:  # another thread reopened meanwhile
                    return
                if _is_damaged(exc):
                    self._remove_damaged(exc)
                    self._reopen()
                    return
                if _identity(self.path) != self._identity:
                    log.info("the cache's mirror database %s was removed; creating it again", self.path)
                    self._reopen()
                    return
        except _FAULTS as second:
            raise _cache_error(self.path.parent, action, second) from second
        raise _cache_error(self.path.parent, action, exc) from exc

    def close(self) -> None:
        """Close this thread's connection (as diskcache does); it reopens on the next use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def put_entry(self, store: str, rel: str, entry: bytes, etag: str, modified: float) -> None:
        """Record an entry that S3 confirmed just now (one autocommitted statement)."""
        row = (store, rel, entry, etag, modified, time.time())
        self._run(
            "record a manifest entry",
            lambda conn: conn.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)", row),
            write=True,
        )

    def put_entries(self, store: str, rows: Iterable[tuple[str, bytes, str, float]]) -> None:
        now = time.time()
        values = [(store, *row, now) for row in rows]

        def put(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)", values)

        self._run("record manifest entries", put, write=True)

    def get_entry(
        self, store: str, rel: str, max_age: float | None = None
    ) -> tuple[bytes, str, float] | None:
        """(entry, etag, modified) of ``rel``; with ``max_age``, only if S3 confirmed it that recently."""
        row = self._run(
            "read a manifest entry",
            lambda conn: conn.execute(
                "SELECT entry, etag, modified, checked FROM entries WHERE store = ? AND rel = ?", (store, rel)
            ).fetchone(),
        )
        if row is None or (max_age is not None and time.time() - row[3] >= max_age):
            return None
        return bytes(row[0]), row[1], row[2]

    def delete_entries(self, store: str, rels: Iterable[str]) -> None:
        keys = [(store, r) for r in rels]

        def delete(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany("DELETE FROM entries WHERE store = ? AND rel = ?", keys)

        self._run("delete manifest entries", delete, write=True)

    def _under(self, columns: str, store: str, rel: str, limit: int = -1) -> list[Any]:
        """Rows of every path below directory ``rel`` ('' for the root), in path order."""
        low, high = (rel + "/", rel + "0") if rel else ("", "\U0010ffff")  # '0' sorts right after '/'
        return self._run(
            "list manifest entries",
            lambda conn: conn.execute(
                f"SELECT {columns} FROM entries WHERE store = ? AND rel >= ? AND rel < ? "
                "ORDER BY rel LIMIT ?",
                (store, low, high, limit),
            ).fetchall(),
        )

    def entries_under(self, store: str, rel: str) -> list[tuple[str, bytes, str, float]]:
        """(path, entry, etag, modified) of every path below directory ``rel``, in path order."""
        rows = self._under("rel, entry, etag, modified", store, rel)
        return [(r[0], bytes(r[1]), r[2], r[3]) for r in rows]

    def fresh_under(self, store: str, rel: str, max_age: float) -> bool:
        """Whether some path below directory ``rel`` was confirmed by S3 within ``max_age``."""
        low, high = (rel + "/", rel + "0") if rel else ("", "\U0010ffff")
        row = self._run(
            "list manifest entries",
            lambda conn: conn.execute(
                "SELECT 1 FROM entries WHERE store = ? AND rel >= ? AND rel < ? AND checked > ? LIMIT 1",
                (store, low, high, time.time() - max_age),
            ).fetchone(),
        )
        return row is not None

    def paths_under(self, store: str, rel: str, limit: int = -1) -> list[str]:
        """Every path (at most ``limit``) below directory ``rel``, in order."""
        return [r[0] for r in self._under("rel", store, rel, limit)]

    def remember_blob(self, store: str, key: str, proven_at: float, stored: int | None = None) -> None:
        """Record that the blob at ``key`` was proven present by a request sent at ``proven_at``
        (and, if known, that its object holds ``stored`` bytes).

        The time of the proof, never of the last use or of the write's end: the garbage
        collector's safety rests on it (gc-protocol.md, rule W1). A later proof replaces an
        earlier one; an earlier one never replaces a later one.
        """
        row = (store, key, proven_at)

        def remember(conn: sqlite3.Connection) -> None:
            if stored is None:
                conn.execute(_REMEMBER_BLOB, row)
                return
            with _transaction(conn):
                conn.execute(_REMEMBER_BLOB, row)
                conn.execute("INSERT OR REPLACE INTO blob_sizes VALUES (?, ?, ?)", (store, key, stored))

        self._run("record a stored blob", remember, write=True)

    def blob_memo(self, store: str, key: str) -> tuple[float, int | None] | None:
        """(when the blob at ``key`` was last proven present, its length if known), if known."""
        row = self._run(
            "look up a stored blob",
            lambda conn: conn.execute(
                "SELECT r.seen, s.stored FROM remote_blobs r LEFT JOIN blob_sizes s "
                "ON s.store = r.store AND s.key = r.key WHERE r.store = ? AND r.key = ?",
                (store, key),
            ).fetchone(),
        )
        return None if row is None else (float(row[0]), None if row[1] is None else int(row[1]))

    def blob_proven_at(self, store: str, key: str) -> float | None:
        """When the blob at ``key`` was last proven present (seconds since the epoch), if known."""
        row = self._run(
            "look up a stored blob",
            lambda conn: conn.execute(
                "SELECT seen FROM remote_blobs WHERE store = ? AND key = ?", (store, key)
            ).fetchone(),
        )
        return None if row is None else float(row[0])

    def forget_blob(self, store: str, key: str) -> None:
        def forget(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                for table in ("remote_blobs", "blob_sizes"):
                    conn.execute(f"DELETE FROM {table} WHERE store = ? AND key = ?", (store, key))

        self._run("forget a stored blob", forget, write=True)

    def put_run(self, lead: str, chunks: bytes) -> None:
        """Keep the chunk run of a file whose first chunk is ``lead`` (see :mod:`cas_store.runs`)."""

        def put(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?)", (lead, chunks, time.time()))
            if random.random() < 1 / 64:  # a scan of the table: now and then is enough
                conn.execute(
                    "DELETE FROM runs WHERE lead IN "
                    "(SELECT lead FROM runs ORDER BY used DESC LIMIT -1 OFFSET ?)",
                    (self.RUNS_KEPT,),
                )

        self._run("record a chunk run", put, write=True)

    def get_run(self, lead: str) -> bytes | None:
        row = self._run(
            "look up a chunk run",
            lambda conn: conn.execute("SELECT chunks FROM runs WHERE lead = ?", (lead,)).fetchone(),
        )
        return None if row is None else bytes(row[0])

    def put_marker(self, store: str, marker: bytes) -> None:
        self._run(
            "record a store marker",
            lambda conn: conn.execute("INSERT OR REPLACE INTO markers VALUES (?, ?)", (store, marker)),
            write=True,
        )

    def marker_roots(self, prefix: str) -> list[str]:
        """The ids of the stores whose marker was seen, among those starting with ``prefix``."""
        rows = self._run(
            "look up store roots",
            lambda conn: conn.execute(
                "SELECT store FROM markers WHERE substr(store, 1, ?) = ?", (len(prefix), prefix)
            ).fetchall(),
        )
        return [str(r[0]).split("|", 1)[1] for r in rows]

    def get_marker(self, store: str) -> bytes | None:
        row = self._run(
            "read a store marker",
            lambda conn: conn.execute("SELECT marker FROM markers WHERE store = ?", (store,)).fetchone(),
        )
        return None if row is None else bytes(row[0])


_REMEMBER_BLOB = (
    "INSERT INTO remote_blobs VALUES (?, ?, ?) ON CONFLICT (store, key) "
    "DO UPDATE SET seen = max(seen, excluded.seen)"
)


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# -- the cache ---------------------------------------------------------------------------


class LocalCache:
    """Size-bounded blob cache plus the manifest mirror, in one directory.

    Guarantees: a blob is in the cache only after its digest was verified; a fill
    is atomic (rename of a complete file); a cached file later modified on disk is
    detected at open by its fingerprint and treated as a miss, and so is one removed.
    Faults raise :class:`~cas_store.errors.CacheError`, except in :meth:`put_blob`.
    """

    _TIMEOUT = 60.0  # seconds to wait for another connection's lock on the blob database

    def __init__(self, directory: Path, size_limit: int, eviction_policy: str) -> None:
        self.directory = directory
        self.tmp_dir = directory / "tmp"
        self._blobs_dir = directory / "blobs"
        self._blobs_db = self._blobs_dir / diskcache.core.DBNAME
        self._blobs_identity: _Identity = None
        self._size_limit = size_limit
        self._eviction_policy = eviction_policy
        self._lock = threading.Lock()  # held while healing
        self._warned: set[str] = set()  # causes of put_blob failures already logged as warnings
        try:
            self._make_dirs()
            self.blobs = self._open_blobs()
        except _FAULTS as exc:
            raise _cache_error(directory, "be opened", exc) from exc
        self.mirror = Mirror(directory / "mirror.sqlite3")
        self._remove_stale_tmp()

    def _make_dirs(self) -> None:
        # Private: the mirror holds paths and inline file contents.
        self.directory.mkdir(mode=_PRIVATE_DIR, parents=True, exist_ok=True)
        self.tmp_dir.mkdir(mode=_PRIVATE_DIR, exist_ok=True)

    def _open_blobs(self) -> Any:
        """A diskcache.Cache on ``blobs/``, created if missing, started afresh if damaged."""
        try:
            blobs = self._new_blobs()
        except sqlite3.DatabaseError as exc:
            if not _is_damaged(exc):
                raise
            log.warning(
                "the cache's blob database %s is damaged (%s); emptying the blob cache", self._blobs_db, exc
            )
            shutil.rmtree(self._blobs_dir, ignore_errors=True)
            blobs = self._new_blobs()
        self._blobs_identity = _identity(self._blobs_db)
        return blobs

    def _new_blobs(self) -> Any:
        # Before diskcache makes them, with its own modes (0755, and SQLite's 0644).
        self._blobs_dir.mkdir(mode=_PRIVATE_DIR, exist_ok=True)
        _private_file(self._blobs_db)
        return diskcache.Cache(
            str(self._blobs_dir),
            timeout=self._TIMEOUT,
            size_limit=self._size_limit,
            eviction_policy=self._eviction_policy,
            disk=AdoptingDisk,
        )

    def _remove_stale_tmp(self) -> None:
        # Spools of processes that died mid-write; young ones may belong to live writers.
        cutoff = time.time() - _STALE_TMP_SECONDS
        with contextlib.suppress(OSError):
            for path in self.tmp_dir.iterdir():
                with contextlib.suppress(OSError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()

    # -- healing -------------------------------------------------------------------------

    def _reconcile(self) -> bool:
        """Create again what was removed (lock held); True if anything was."""
        healed = not self.tmp_dir.is_dir()
        self._make_dirs()
        if _identity(self._blobs_db) != self._blobs_identity:
            log.info("the cache's blob database %s was removed; creating it again", self._blobs_db)
            old, self.blobs = self.blobs, self._open_blobs()
            with contextlib.suppress(sqlite3.Error):
                old.close()
            healed = True
        return self.mirror.check() or healed

    def _heal(self, action: str) -> None:
        try:
            with self._lock:
                self._reconcile()
        except _FAULTS as exc:
            if not _translated(exc):
                raise
            raise _cache_error(self.directory, action, exc) from exc

    def _recover(self, blobs: Any, action: str, exc: BaseException) -> None:
        """Heal what ``exc`` reveals, or raise it as a CacheError."""
        try:
            with self._lock:
                if self.blobs is not blobs:  # another thread healed meanwhile
                    return
                if _is_damaged(exc):
                    log.warning(
                        "the cache's blob database %s is damaged (%s); emptying the blob cache",
                        self._blobs_db,
                        exc,
                    )
                    with contextlib.suppress(sqlite3.Error):
                        blobs.close()
                    shutil.rmtree(self._blobs_dir, ignore_errors=True)
                    self._make_dirs()
                    self.blobs = self._open_blobs()
                    return
                if self._reconcile():
                    return
        except _FAULTS as second:
            if not _translated(second):
                raise
            raise _cache_error(self.directory, action, second) from second
        raise _cache_error(self.directory, action, exc) from exc

    def _call(self, action: str, operation: Callable[[Any], _T], *, write: bool = False) -> _T:
        """``operation(self.blobs)``, healing once if that helps; faults raise CacheError.

        With ``write``, first make sure the blob database is still the file on disk (one
        stat), so that a fill never goes to a removed database.
        """
        blobs = self.blobs
        try:
            if write and _identity(self._blobs_db) != self._blobs_identity:
                self._heal(action)
                blobs = self.blobs
            return operation(blobs)
        except _FAULTS as exc:
            if not _translated(exc):
                raise
            self._recover(blobs, action, exc)
        try:
            return operation(self.blobs)
        except _FAULTS as exc:
            if not _translated(exc):
                raise
            raise _cache_error(self.directory, action, exc) from exc

    # -- blobs ---------------------------------------------------------------------------

    @property
    def size_limit(self) -> int:
        """The bound on the bytes of cached blobs (diskcache evicts beyond it)."""
        return self._size_limit

    def temp_file(self, suffix: str) -> tuple[int, str]:
        """A new file in the cache's tmp directory: (fd, path)."""
        return self._call(
            "create a temporary file", lambda _: tempfile.mkstemp(dir=self.tmp_dir, suffix=suffix)
        )

    def adopt(self, algorithm: str, digest: str, path: str) -> bool:
        """Move the verified file ``path`` into the cache as blob ``digest`` (no copy).

        False, caching nothing, if ``path`` vanished meanwhile (the cache directory was
        removed): the blob is then a miss. Faults raise CacheError; ``path`` is gone either way.
        """
        key = blob_cache_key(algorithm, digest)
        item = _Adopt(path)

        def fill(blobs: Any) -> bool:
            try:
                tag = _fingerprint(os.stat(item.path))
                blobs.set(key, item, read=True, tag=tag)
            except FileNotFoundError:
                if os.path.exists(item.path):
                    raise
                return False
            return True

        try:
            stored = self._call("store a blob", fill, write=True)
        except BaseException:
            if item.path != path:  # moved into blobs/ but never recorded
                with contextlib.suppress(OSError):
                    os.unlink(item.path)
            raise
        if not stored:
            self._heal("store a blob")
        return stored

    def put_blob(self, algorithm: str, digest: str, data: memoryview | bytes) -> bool:
        """Cache ``data``, whose digest the caller computed from these very bytes.

        Best effort, for the write path: a fault of the cache (disk full, permissions, a
        locked or damaged database) is logged, as a warning once per cause, and returns
        False. True if the blob is now cached.
        """
        try:
            for _ in range(2):  # again if the cache directory was removed meanwhile
                fd, path = self.temp_file(".chunk")
                try:
                    try:
                        with open(fd, "wb") as f:
                            f.write(data)
                    except OSError as exc:
                        raise _cache_error(self.directory, "store a blob", exc) from exc
                    if self.adopt(algorithm, digest, path):
                        return True
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    raise
        except _FAULTS as exc:
            self._warn_once(exc)
        return False

    def _warn_once(self, exc: BaseException) -> None:
        root = exc.__cause__ if isinstance(exc, CacheError) else None
        cause, _ = _diagnose(root if root is not None else exc)
        level = logging.DEBUG if cause in self._warned else logging.WARNING
        self._warned.add(cause)
        log.log(level, "not caching a chunk being written, which S3 still gets: %s", exc)

    def open_blob(self, algorithm: str, digest: str) -> BinaryIO | None:
        """An open handle on the cached blob, or None on a miss, a tampered or a removed cache file."""
        key = blob_cache_key(algorithm, digest)

        def get(blobs: Any) -> tuple[Any, Any, OSError | None, Any]:
            failures = blobs.disk.failures
            failures.error = None
            result = blobs.get(key, read=True, tag=True)
            handle, tag = result if result is not None else (None, None)
            return handle, tag, failures.error, blobs

        handle, tag, error, blobs = self._call("read a blob", get)
        if handle is None:
            if error is None:
                return None
            if not isinstance(error, FileNotFoundError):
                raise _cache_error(self.directory, "read a blob", error) from error
            # Its file is gone: the cache directory was removed, or just this file.
            self._heal("read a blob")
            if self.blobs is blobs:  # the same database: only this file went away
                self._forget(key)
            return None
        if not hasattr(handle, "fileno") or _fingerprint(os.fstat(handle.fileno())) != tag:
            handle.close()
            log.warning("cached blob %s was modified on disk; discarding it", digest)
            self._forget(key)
            return None
        return handle  # type: ignore[no-any-return]

    def _forget(self, key: str) -> None:
        """Drop the cache row of a file found missing or modified (best effort: a miss anyway)."""
        try:
            self._call("discard a blob", lambda blobs: blobs.delete(key), write=True)
        except CacheError as exc:
            log.debug("could not discard %s from the cache: %s", key, exc)

    def has_blob(self, algorithm: str, digest: str) -> bool:
        """Whether the cache holds the blob (open_blob may still miss: eviction, removal)."""
        key = blob_cache_key(algorithm, digest)
        found = self._call("look up a blob", lambda blobs: key in blobs)
        if found and _identity(self._blobs_db) != self._blobs_identity:
            # That answer came from a removed database: the directory was removed under us.
            self._heal("look up a blob")
            found = self._call("look up a blob", lambda blobs: key in blobs)
        return found

    def discard(self, algorithm: str, digest: str) -> None:
        key = blob_cache_key(algorithm, digest)
        self._call("discard a blob", lambda blobs: blobs.delete(key), write=True)

    # -- managing the blob cache as a whole (cas-store cache ...) --------------------------

    def stats(self) -> tuple[int, int, int]:
        """(blobs cached, bytes of their files, bytes diskcache bounds: files plus database)."""
        return self._call(
            "be read", lambda blobs: (len(blobs), int(blobs.reset("size")), int(blobs.volume()))
        )

    def prune(self, to: int) -> tuple[int, int, int]:
        """Evict blobs, in the eviction policy's order (least recently stored first for the
        policy "none"), until diskcache's measure of the size is at most ``to`` bytes, and no
        more than needed (diskcache's ``cull`` removes ten per step). (removed, before, after)."""
        if to < 0:
            raise ValueError(f"cannot prune the cache to a negative size ({to})")

        def prune(blobs: Any) -> tuple[int, int, int]:
            before = int(blobs.volume())
            policies = diskcache.core.EVICTION_POLICY
            order = policies.get(blobs.eviction_policy, {}).get("cull") or policies[_PRUNE_ORDER]["cull"]
            query = order.format(fields="key", now=time.time())
            removed = 0
            database = os.path.join(blobs.directory, diskcache.core.DBNAME)
            with contextlib.closing(sqlite3.connect(database, timeout=self._TIMEOUT)) as conn:
                while blobs.volume() > to:
                    keys = [row[0] for row in conn.execute(query, (_PRUNE_BATCH,)).fetchall()]
                    if not keys:
                        break
                    for key in keys:
                        if blobs.volume() <= to:
                            break
                        removed += bool(blobs.delete(key, retry=True))
            return removed, before, int(blobs.volume())

        return self._call("be pruned", prune, write=True)

    def clear(self) -> int:
        """Remove every cached blob (the mirror stays); returns how many."""
        return self._call("be cleared", lambda blobs: int(blobs.clear(retry=True)), write=True)

    def close(self) -> None:
        """Close this thread's database handles; they reopen on the next use."""
        self.blobs.close()
        self.mirror.close()
