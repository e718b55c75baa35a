"""The read path: an entry's chunks, from the local cache or fetched, as one file.

Ordering (docs/design.md, "Reading a file"): a chunk enters the cache only after its
digest was verified; a full read also checks the whole-file digest; a blob missing
from the bucket or corrupt there is an error carrying its digest and key.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import contextlib
import functools
import io
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from cas_store import cache, config
from cas_store.errors import (
    BlobCorruptError,
    BlobMissingError,
    CacheError,
    IntegrityError,
    ObjectNotFoundError,
)
from cas_store.fileobj import ReadFile, SeekableReader
from cas_store.format import DEFAULT_CHUNK_SIZE, Chunk, Entry
from cas_store.hashing import hash_bytes, hash_file, new_hasher

if TYPE_CHECKING:
    from cas_store.manifest import Record
    from cas_store.store import Store

log = logging.getLogger(__name__)

#: Ranged GETs of this size for blobs larger than it (AWS advises 8-16 MiB).
DOWNLOAD_PART = DEFAULT_CHUNK_SIZE


#: Read-ahead policies (``StoreConfig.read_ahead``): ``auto`` fetches the chunks a read
#: covers, reads ahead while access is sequential (1, 2, 4, then 8 chunks) and fetches every
#: chunk at once for a whole read; ``none`` fetches only the chunks reads cover; ``all``
#: fetches every chunk when the file is opened.
READ_AHEAD_POLICIES = config.READ_AHEAD_POLICIES
#: The largest read-ahead window of ``auto``, in chunks.
MAX_READ_AHEAD = 8


def open_read(
    store: Store, record: Record, display_path: str, read_ahead: str | None = None
) -> io.BufferedIOBase:
    """A verified, seekable reader of the entry's content. Opening fetches nothing; reads
    fetch the chunks they cover (and more, by ``read_ahead``: the store's policy if None)."""
    entry = record.entry
    if entry.inline is not None:
        if hash_bytes(entry.algorithm, entry.inline) != entry.digest:
            raise IntegrityError(
                f"the manifest entry of {display_path} holds inline bytes that do not match "
                "its digest; the entry is corrupt: write the file again"
            )
        return io.BytesIO(entry.inline)
    policy = read_ahead or store.config.read_ahead
    if policy not in READ_AHEAD_POLICIES:
        raise ValueError(f"read_ahead must be one of {', '.join(READ_AHEAD_POLICIES)}, not {policy!r}")

    def discard() -> None:
        store.cache.discard(entry.algorithm, entry.digest)  # a whole-file copy, if any
        for chunk in entry.chunks:
            store.cache.discard(entry.algorithm, chunk.digest)

    def source() -> BinaryIO:
        return ChunkedReader(display_path, entry, store, policy)  # type: ignore[return-value]

    # The content as one cached file: the blob of a one-chunk file, or the whole-file copy of
    # a file of several chunks that was read whole before (cached under the digest of its
    # content): a warm read is then one local file, not one per chunk.
    whole = store.cache.open_blob(entry.algorithm, entry.digest)
    verify = store.config.verify_reads
    on_verified = None
    if whole is not None and verify:
        # Hashed on its first full read in this process; trusted while it stays that file.
        verify = not cache.trusted(whole, entry.digest)
        on_verified = functools.partial(cache.mark_verified, whole, entry.digest)
    copy = None
    if (
        whole is None
        and len(entry.chunks) > 1
        and verify
        and entry.size <= store.cache.size_limit // WHOLE_COPY_SHARE
    ):
        copy = WholeCopy(store, entry.algorithm, entry.digest)
    return ReadFile(
        display_path,
        whole if whole is not None else source(),
        entry.size,
        entry.algorithm,
        entry.digest,
        refetch=source,  # after on_corrupt discarded the cached copies: fetches afresh
        on_corrupt=discard,
        verify=verify,
        copy=copy,
        on_verified=on_verified,
    )


#: A whole-file copy is made only of files up to this fraction of the cache's size: it
#: takes the space of the file again, and should not evict the chunks it was read from.
WHOLE_COPY_SHARE = 4


class WholeCopy:
    """A whole-file copy for the local cache, written as a file is read in order from the
    start (by :class:`~cas_store.fileobj.ReadFile`, on its background thread) and kept, under
    the content's digest, once the content verified. Best effort: a cache that cannot take
    it costs the reader nothing but the copy."""

    def __init__(self, store: Store, algorithm: str, digest: str) -> None:
        self._cache = store.cache
        self._algorithm = algorithm
        self._digest = digest
        self._fd: int | None = None
        self._path: str | None = None
        self._failed = False

    def write(self, data: bytes | memoryview) -> None:
        if self._failed:
            return
        try:
            if self._fd is None:
                self._fd, self._path = self._cache.temp_file(".whole")
            with memoryview(data) as whole:
                view = whole
                while view:
                    view = view[os.write(self._fd, view) :]
        except (OSError, CacheError) as exc:
            log.debug("not keeping a whole-file copy of %s: %s", self._digest, exc)
            self._failed = True
            self.abort()

    def commit(self) -> None:
        if self._failed or self._fd is None or self._path is None:
            return
        fd, self._fd = self._fd, None
        path, self._path = self._path, None
        try:
            # Its content was hashed as it was written: born verified (the rename into the
            # cache keeps the inode and mtime the fingerprint is made of).
            if self._cache.adopt(self._algorithm, self._digest, path):
                cache.mark_verified(fd, self._digest)
        except CacheError as exc:
            log.debug("not keeping a whole-file copy of %s: %s", self._digest, exc)
        finally:
            os.close(fd)

    def abort(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path)
            self._path = None


def open_chunk(store: Store, algorithm: str, chunk: Chunk) -> BinaryIO:
    """A handle on the chunk's bytes: from the cache, else fetched (and cached)."""
    return fetch(store, algorithm, chunk)  # which answers from the cache when it can


class Downloads:
    """The downloads of one store: a shared pool of workers, bounded by bytes in flight.

    Chunks are small and many (hundreds per GiB with content-defined chunking), so a
    count of requests says little about memory or bandwidth; the budget admits a download
    while the bytes of those running stay within ``max_bytes`` (one at a time if a single
    chunk is larger). One pool for every open file of the store: no pool per open.
    """

    def __init__(self, max_bytes: int, workers: int) -> None:
        self.max_bytes = max_bytes
        self._in_flight = 0
        self._outstanding = 0  # submitted and not done
        self._cond = threading.Condition()
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="cas_store-download")

    def submit(
        self, store: Store, algorithm: str, chunk: Chunk, cancelled: threading.Event
    ) -> concurrent.futures.Future[BinaryIO]:
        """Fetch the chunk in the background, unless ``cancelled`` is set before it starts."""
        with self._cond:
            self._outstanding += 1
        future = self._pool.submit(fetch, store, algorithm, chunk, cancelled)
        future.add_done_callback(self._done)
        return future

    def _done(self, _: concurrent.futures.Future[BinaryIO]) -> None:
        with self._cond:
            self._outstanding -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no submitted download is queued or running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._outstanding == 0, timeout)

    @contextlib.contextmanager
    def budget(self, n: int) -> Iterator[None]:
        """Hold ``n`` bytes of the budget while the block runs."""
        with self._cond:
            self._cond.wait_for(lambda: self._in_flight == 0 or self._in_flight + n <= self.max_bytes)
            self._in_flight += n
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= n
                self._cond.notify_all()


def fetch(store: Store, algorithm: str, chunk: Chunk, cancelled: threading.Event | None = None) -> BinaryIO:
    """Download a blob, verify it, put it in the cache and return an open handle on it.

    A cache that cannot take the blob (disk full, directory unusable) does not fail the
    read: the verified bytes are served from an unlinked temporary file instead. Another
    reader may have cached it meanwhile: then no download. ``cancelled`` (set by a reader's
    ``close``) stops a read-ahead that has not started downloading.
    """
    cached = store.cache.open_blob(algorithm, chunk.digest)
    if cached is not None:
        return cached
    with store.downloads.budget(chunk.size):
        if cancelled is not None and cancelled.is_set():
            raise concurrent.futures.CancelledError(f"read-ahead of blob {chunk.digest} cancelled")
        return _fetch(store, algorithm, chunk)


def _fetch(store: Store, algorithm: str, chunk: Chunk) -> BinaryIO:
    try:
        fd, tmp = store.cache.temp_file(".download")
    except CacheError as exc:
        log.warning("reading blob %s without the local cache: %s", chunk.digest, exc)
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned to the caller, who closes it
        try:
            _download_verified(store, algorithm, chunk, spool.fileno())
        except BaseException:
            spool.close()
            raise
        return spool
    try:
        try:
            _download_verified(store, algorithm, chunk, fd)
        finally:
            os.close(fd)
        # Opened before adoption, so that eviction cannot pull the file away from us.
        handle = open(tmp, "rb")  # noqa: SIM115 - returned to the caller, who closes it
        try:
            store.cache.adopt(algorithm, chunk.digest, tmp)
        except CacheError as exc:
            # The bytes are verified and open: serve them uncached rather than fail the read.
            log.warning("could not keep blob %s in the local cache: %s", chunk.digest, exc)
        return handle
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


#: Rule R (docs/gc.md section 5): rounds of "quarantine, then the main key again" before a
#: missing blob is an error. One round is not enough when collector runs overlap.
READ_ROUNDS = 3


def _download_verified(store: Store, algorithm: str, chunk: Chunk, fd: int) -> None:
    """Download the blob into the file ``fd`` and check it against its digest and size.

    Rule R: a blob missing at its main key is looked for in quarantine, where a collector
    may have moved it while an entry still names it, then at its main key again.
    """
    key = store.blobs.key(algorithm, chunk.digest)
    where = f"s3://{store.root.bucket}/{key}"
    if _download_from(store, algorithm, chunk, fd, key):
        return
    store.forget_blob(key)
    for _ in range(READ_ROUNDS):
        for copy in store.blobs.quarantined(algorithm, chunk.digest):
            if _download_from(store, algorithm, chunk, fd, copy, quarantine=True):
                log.info("read blob %s from its quarantine copy %s", chunk.digest, copy)
                return
        if _download_from(store, algorithm, chunk, fd, key):
            return
    raise BlobMissingError(
        f"blob {chunk.digest} is missing from {where} (and from the collector's quarantine); a "
        "path refers to content that was deleted outside cas_store, or removed and then collected "
        "while it was being read: write the file again",
        digest=chunk.digest,
        key=key,
    )


def _download_from(
    store: Store, algorithm: str, chunk: Chunk, fd: int, key: str, quarantine: bool = False
) -> bool:
    """Download ``key`` into ``fd`` and verify it; False if there is no such object (or, for
    a quarantine copy, if it is not the blob: a damaged copy is skipped, never served).

    The bytes are hashed as they arrive when they arrive in order (one ranged GET: every
    blob up to ``DOWNLOAD_PART``), else the file is hashed once it is complete.
    """
    sink = _WritingSink(fd, algorithm)
    try:
        os.ftruncate(fd, chunk.size)
        store.blobs.download(algorithm, chunk.digest, chunk.size, DOWNLOAD_PART, sink, key=key)
    except ObjectNotFoundError:
        return False
    if sink.in_order and sink.hashed == chunk.size:
        digest, size = sink.hasher.hexdigest(), sink.hashed
    else:
        with os.fdopen(fd, "rb", closefd=False) as raw:
            raw.seek(0)
            digest, size = hash_file(algorithm, raw)
    if digest == chunk.digest and size == chunk.size:
        return True
    if quarantine:
        log.warning("quarantine copy %s of blob %s is damaged: skipped", key, chunk.digest)
        return False
    raise BlobCorruptError(
        f"blob s3://{store.root.bucket}/{key} is corrupt in S3 (got {size} bytes hashing to {digest}): "
        "delete that object, then write the file again (a write re-uploads a blob only when it is "
        "missing)",
        digest=chunk.digest,
        key=key,
    )


class _WritingSink:
    """Writes a download's bytes at their offsets and hashes them while they come in order.

    A retried GET delivers offsets from the start of its range again: bytes already hashed
    are skipped (a blob is immutable). Bytes out of order (parallel ranges) end the hashing.
    """

    def __init__(self, fd: int, algorithm: str) -> None:
        self.fd = fd
        self.hasher = new_hasher(algorithm)
        self.hashed = 0
        self.in_order = True

    def __call__(self, offset: int, data: bytes) -> None:
        os.pwrite(self.fd, data, offset)
        if not self.in_order:
            return
        if offset > self.hashed:
            self.in_order = False
            return
        skip = self.hashed - offset
        if skip < len(data):
            self.hasher.update(memoryview(data)[skip:])
            self.hashed += len(data) - skip


class ChunkedReader(SeekableReader):
    """The concatenated chunks of an entry, as one seekable file, fetched as reads need them.

    A read fetches the whole chunks that cover it, in parallel (whole, so that each is
    verified before use); by the ``policy`` (:data:`READ_AHEAD_POLICIES`) it also reads
    ahead. What is queued and not started yet is cancelled at :meth:`close`.
    :class:`~cas_store.fileobj.ReadFile` checks the whole-file digest on top.
    """

    def __init__(self, path: str, entry: Entry, store: Store, policy: str = "auto") -> None:
        super().__init__(path, entry.size)
        self._entry = entry
        self._store = store
        self._policy = policy
        self._starts: list[int] = []
        offset = 0
        for chunk in entry.chunks:
            self._starts.append(offset)
            offset += chunk.size
        self._open: tuple[int, BinaryIO] | None = None
        self._queued: dict[int, concurrent.futures.Future[BinaryIO]] = {}
        self._window = 1
        self._last = -1  # the chunk read last
        self._closed_event = threading.Event()  # cancels read-ahead not started yet
        self._cached: set[int] = set()  # chunks found in the local cache
        if policy == "all":
            self.expect_full_read()

    def expect_full_read(self) -> None:
        """The caller reads everything from here on: fetch every chunk not cached, in parallel."""
        if self._policy != "none":
            for index in range(self._index_of(self._pos), len(self._entry.chunks)):
                self._queue(index)

    def _queue(self, index: int) -> None:
        if index >= len(self._entry.chunks) or index in self._queued or index in self._cached:
            return
        if self._open is not None and self._open[0] == index:
            return
        chunk = self._entry.chunks[index]
        if self._store.cache.has_blob(self._entry.algorithm, chunk.digest):
            self._cached.add(index)  # asked once per reader: a warm read asks nothing more
            return  # opened from the cache when needed
        self._queued[index] = self._store.downloads.submit(
            self._store, self._entry.algorithm, chunk, self._closed_event
        )

    def _index_of(self, pos: int) -> int:
        return max(bisect.bisect_right(self._starts, pos) - 1, 0)

    def _handle(self, index: int) -> BinaryIO:
        if self._open is not None and self._open[0] == index:
            return self._open[1]
        if self._open is not None:
            self._open[1].close()
            self._open = None
        self._queue(index)  # the chunk needed now goes first, ahead of any read-ahead
        if self._policy == "auto":
            # Sequential access doubles the window, up to MAX_READ_AHEAD; a seek resets it.
            sequential = index == self._last + 1
            self._window = min(2 * self._window, MAX_READ_AHEAD) if sequential and self._last >= 0 else 1
            for ahead in range(index + 1, index + 1 + self._window):
                self._queue(ahead)
        self._last = index
        queued = self._queued.pop(index, None)
        chunk = self._entry.chunks[index]
        handle = (
            queued.result() if queued is not None else open_chunk(self._store, self._entry.algorithm, chunk)
        )
        self._open = (index, handle)
        return handle

    def _locate(self) -> tuple[int, int, int]:
        """(chunk index, offset in it, bytes left in it) of the current position."""
        index = bisect.bisect_right(self._starts, self._pos) - 1
        within = self._pos - self._starts[index]
        return index, within, self._entry.chunks[index].size - within

    def _cover(self, n: int) -> None:
        """Queue every chunk that bytes [pos, pos + n) touch beyond the current one."""
        first = self._index_of(self._pos)
        last = self._index_of(min(self._pos + n, self.size) - 1)
        for index in range(first + 1, last + 1):
            self._queue(index)

    def _read_into(self, view: memoryview) -> int:
        if self._pos >= self.size or not view:
            return 0
        index, within, left = self._locate()
        self._queue(index)
        self._cover(len(view))
        handle = self._handle(index)
        handle.seek(within)
        n = int(handle.readinto(view[: min(len(view), left)]))  # type: ignore[attr-defined]
        if not n:
            raise IntegrityError(f"chunk {index} of {self.path} is shorter than its entry says")
        self._pos += n
        return n

    def _read_direct(self, n: int) -> bytes | None:
        if self._pos >= self.size:
            return b""
        index, within, left = self._locate()
        if n > left:
            return None  # spans chunks: one buffer, filled from each
        handle = self._handle(index)
        handle.seek(within)
        data = handle.read(n)
        if len(data) < n:
            raise IntegrityError(f"chunk {index} of {self.path} is shorter than its entry says")
        self._pos += n
        return data

    def close(self) -> None:
        self._closed_event.set()
        if self._open is not None:
            self._open[1].close()
            self._open = None
        for future in self._queued.values():
            if not future.cancel():  # running or done: its handle is ours to close
                future.add_done_callback(_close_result)
        self._queued.clear()
        super().close()


def _close_result(future: concurrent.futures.Future[BinaryIO]) -> None:
    """Close what a read-ahead fetched for a reader that is gone (its failure is nobody's)."""
    if not future.cancelled() and future.exception() is None:
        future.result().close()
