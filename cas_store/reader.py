"""The read path: an entry's chunks, from the local cache or fetched, as one file.

Ordering (docs/design.md, "Reading a file"): a chunk enters the cache only after its
digest was verified; a full read also checks the whole-file digest; a blob missing
from the bucket or corrupt there is an error carrying its digest and key. A blob
shorter than its chunk is a compressed one: fetched whole and decoded before the digest
check, so the cache holds every chunk decoded (docs/format.md 4.1).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import concurrent.futures
import contextlib
import functools
import io
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from cas_store import cache, config
from cas_store.compression import DecodeError, decode_into
from cas_store.errors import (
    BlobCorruptError,
    BlobMissingError,
    CacheError,
    CASStoreError,
    IntegrityError,
    ObjectNotFoundError,
    ShortObjectError,
)
from cas_store.fileobj import ReadFile, SeekableReader, in_background
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
    on_verified: Callable[[], object] | None = None
    if whole is not None and verify:
        # Hashed on its first full read in this process; trusted while it stays that file.
        verify = not cache.trusted(whole, entry.digest)
        on_verified = functools.partial(cache.mark_verified, whole, entry.digest)
    elif whole is None and len(entry.chunks) > 1 and entry.size <= store.cache.size_limit // WHOLE_COPY_SHARE:
        on_verified = functools.partial(in_background, functools.partial(assemble_whole_copy, store, entry))
    return ReadFile(
        display_path,
        whole if whole is not None else source(),
        entry.size,
        entry.algorithm,
        entry.digest,
        refetch=source,  # after on_corrupt discarded the cached copies: fetches afresh
        on_corrupt=discard,
        verify=verify,
        on_verified=on_verified,
    )


#: A whole-file copy is made only of files up to this fraction of the cache's size: it
#: takes the space of the file again, and should not evict the chunks it was read from.
WHOLE_COPY_SHARE = 4


def assemble_whole_copy(store: Store, entry: Entry) -> bool:
    """Cache the content of ``entry`` as one file, under its digest, from its cached chunks.

    Called (on the readers' background thread) after a read of the whole file matched its
    digest: its chunks were just read from the cache or put there. The copy is born
    verified: it is the concatenation of the very files whose bytes were just hashed. It
    is written in :data:`COPY_WRITE` pieces: the page cache then holds it in large folios,
    which read about a quarter faster than the small pages a kernel-side copy
    (``copy_file_range``) leaves (measured on Linux 6.18, ext4). Best effort: False, and
    nothing kept, if a chunk was evicted meanwhile or the cache cannot take the copy.
    Chunks and copy are evicted independently.
    """
    algorithm = entry.algorithm
    try:
        if store.cache.has_blob(algorithm, entry.digest):
            return False
        fd, tmp = store.cache.temp_file(".whole")
    except CacheError as exc:
        log.debug("no whole-file copy of %s: %s", entry.digest, exc)
        return False
    try:
        with open(fd, "wb", buffering=0) as out:
            if not _concatenate(store, entry, out):
                return False
            kept = store.cache.adopt(algorithm, entry.digest, tmp)  # tmp is gone either way
            if kept:
                cache.mark_verified(out.fileno(), entry.digest)  # the rename kept its fingerprint
            return kept
    except (OSError, CacheError) as exc:
        log.debug("no whole-file copy of %s: %s", entry.digest, exc)
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


#: The size of the writes that make a whole-file copy (see :func:`assemble_whole_copy`).
COPY_WRITE = 8 * 2**20


def _concatenate(store: Store, entry: Entry, out: BinaryIO) -> bool:
    """Write the cached chunks of ``entry`` to ``out`` in order; False if one is not cached."""
    buffer = bytearray(COPY_WRITE)
    view, filled = memoryview(buffer), 0
    for chunk in entry.chunks:
        handle = store.cache.open_blob(entry.algorithm, chunk.digest)
        if handle is None:
            return False  # evicted meanwhile
        with handle:
            left = chunk.size
            while left:
                n = handle.readinto(view[filled : filled + min(left, COPY_WRITE - filled)])  # type: ignore[attr-defined]
                if not n:
                    raise OSError(f"cached chunk {chunk.digest} is shorter than {chunk.size} bytes")
                filled, left = filled + n, left - n
                if filled == COPY_WRITE:
                    out.write(view)
                    filled = 0
    out.write(view[:filled])
    return out.tell() == entry.size


def open_chunk(store: Store, algorithm: str, chunk: Chunk) -> BinaryIO:
    """A handle on the chunk's bytes: from the cache, else fetched (and cached)."""
    return fetch(store, algorithm, chunk)  # which answers from the cache when it can


def fetch(store: Store, algorithm: str, chunk: Chunk) -> BinaryIO:
    """Download a blob, verify it, put it in the cache and return an open handle on it;
    waits (see :meth:`Downloads.fetch`)."""
    cached = store.cache.open_blob(algorithm, chunk.digest)  # without the backend: offline too
    if cached is not None:
        return cached
    what = f"downloading blob {chunk.digest}"
    return store.objects.run(what, lambda: store.downloads.fetch(algorithm, chunk))


class Handoff:
    """Handles fetched in the background for one reader and not taken yet.

    A download may complete just as its reader closes (a cancelled future drops its
    result): whatever was fetched for a closed reader is closed here, so none leaks.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, BinaryIO] = {}
        self.closed = False

    def give(self, handle: BinaryIO) -> BinaryIO:
        with self._lock:
            if not self.closed:
                self._held[id(handle)] = handle
                return handle
        handle.close()
        raise asyncio.CancelledError("the reader was closed")

    def give_now(self, handle: BinaryIO, closed: Exception) -> BinaryIO:
        """:meth:`give`, for a handle fetched in the reader's own thread."""
        try:
            return self.give(handle)
        except asyncio.CancelledError:
            raise closed from None

    def take(self, handle: BinaryIO) -> BinaryIO:
        with self._lock:
            self._held.pop(id(handle), None)
        return handle

    def close(self) -> None:
        with self._lock:
            self.closed = True
            held, self._held = list(self._held.values()), {}
        for handle in held:
            handle.close()


class Downloads:
    """The downloads of one store: coroutines on its backend's event loop (s3fs's, for S3),
    admitted by bytes in flight.

    Chunks are small and many (hundreds per GiB with content-defined chunking), so a
    count of requests says little about memory or bandwidth; the budget admits a download
    while the bytes of those running stay within ``max_bytes`` (one at a time if a single
    chunk is larger), in the order they were submitted: the chunk a read needs now, queued
    first, is never overtaken by read-ahead queued after it. One pipeline for every open
    file of the store, no thread per download; the local cache's database calls run off
    the loop (``asyncio.to_thread``), as they may wait for another process's lock.
    """

    def __init__(self, store: Store, max_bytes: int) -> None:
        self._store = store
        self.max_bytes = max_bytes
        # Loop-confined: touched only by coroutines on the event loop.
        self._in_flight = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        # Thread-side: what is submitted and not done (wait_idle).
        self._outstanding = 0
        self._cond = threading.Condition()

    def submit(self, algorithm: str, chunk: Chunk, handoff: Handoff) -> concurrent.futures.Future[BinaryIO]:
        """Fetch the chunk in the background; ``future.cancel()`` stops it, queued or running."""

        async def work() -> BinaryIO:
            return handoff.give(await self.fetch(algorithm, chunk, handoff))

        with self._cond:
            self._outstanding += 1
        try:
            future = self._store.objects.submit(f"downloading blob {chunk.digest}", work)
        except CASStoreError as exc:  # offline: the read that needs the chunk raises it
            future = concurrent.futures.Future()
            future.set_exception(exc)
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

    async def fetch(self, algorithm: str, chunk: Chunk, handoff: Handoff | None = None) -> BinaryIO:
        """Download a blob, verify it, put it in the cache and return an open handle on it.

        A cache that cannot take the blob (disk full, directory unusable) does not fail the
        read: the verified bytes are served from an unlinked temporary file instead. Another
        reader may have cached it meanwhile: then no download. A download for a reader that
        closed (``handoff``) does not start, even if the cancellation has not arrived yet.
        """
        store = self._store
        cached = await asyncio.to_thread(store.cache.open_blob, algorithm, chunk.digest)
        if cached is not None:
            return cached
        await self._admit(chunk.size)
        try:
            if handoff is not None and handoff.closed:
                raise asyncio.CancelledError("the reader was closed")
            return await _fetch(store, algorithm, chunk)
        finally:
            self._release(chunk.size)

    async def _admit(self, n: int) -> None:
        if not self._waiting and self._fits(n):
            self._in_flight += n
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append((n, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release(n)  # admitted, then cancelled before it could start
            else:
                self._waiting.remove((n, turn))
                self._wake()  # it may have been the head of the queue
            raise

    def _fits(self, n: int) -> bool:
        return self._in_flight == 0 or self._in_flight + n <= self.max_bytes

    def _release(self, n: int) -> None:
        self._in_flight -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiting:
            n, turn = self._waiting[0]
            if turn.done():  # cancelled
                self._waiting.popleft()
                continue
            if not self._fits(n):
                return
            self._waiting.popleft()
            self._in_flight += n
            turn.set_result(None)


async def _fetch(store: Store, algorithm: str, chunk: Chunk) -> BinaryIO:
    try:
        fd, tmp = store.cache.temp_file(".download")
    except CacheError as exc:
        log.warning("reading blob %s without the local cache: %s", chunk.digest, exc)
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned to the caller, who closes it
        try:
            await _download_verified(store, algorithm, chunk, spool.fileno())
        except BaseException:
            spool.close()
            raise
        return spool
    try:
        try:
            await _download_verified(store, algorithm, chunk, fd)
        finally:
            os.close(fd)
        # Opened before adoption, so that eviction cannot pull the file away from us.
        handle = open(tmp, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # Adoption owns ``tmp`` from here (moved into the cache, or removed): it completes even if
    # this download is cancelled meanwhile, so that the cache never sees half a move.
    try:
        await asyncio.shield(asyncio.to_thread(_adopt, store, algorithm, chunk.digest, tmp))
    except BaseException:
        handle.close()
        raise
    return handle


def _adopt(store: Store, algorithm: str, digest: str, tmp: str) -> None:
    try:
        store.cache.adopt(algorithm, digest, tmp)
    except CacheError as exc:
        # The bytes are verified and open: serve them uncached rather than fail the read.
        log.warning("could not keep blob %s in the local cache: %s", digest, exc)


#: Rule R (docs/gc.md section 5): rounds of "quarantine, then the main key again" before a
#: missing blob is an error. One round is not enough when collector runs overlap.
READ_ROUNDS = 3


async def _download_verified(store: Store, algorithm: str, chunk: Chunk, fd: int) -> None:
    """Download the blob into the file ``fd`` and check it against its digest and size.

    Rule R: a blob missing at its main key is looked for in quarantine, where a collector
    may have moved it while an entry still names it, then at its main key again.
    """
    key = store.blobs.key(algorithm, chunk.digest)
    where = f"s3://{store.root.bucket}/{key}"
    if await _download_from(store, algorithm, chunk, fd, key):
        return
    await asyncio.to_thread(store.forget_blob, key)
    for _ in range(READ_ROUNDS):
        for copy in await store.blobs.quarantined_async(algorithm, chunk.digest):
            if await _download_from(store, algorithm, chunk, fd, copy, quarantine=True):
                log.info("read blob %s from its quarantine copy %s", chunk.digest, copy)
                return
        if await _download_from(store, algorithm, chunk, fd, key):
            return
    raise BlobMissingError(
        f"blob {chunk.digest} is missing from {where} (and from the collector's quarantine); a "
        "path refers to content that was deleted outside cas_store, or removed and then collected "
        "while it was being read: write the file again",
        digest=chunk.digest,
        key=key,
    )


async def _download_from(
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
        if chunk.stored is None:
            try:
                await store.blobs.download_async(
                    algorithm, chunk.digest, chunk.size, DOWNLOAD_PART, sink, key=key
                )
            except ShortObjectError:
                # Stored compressed after all (by a writer whose entry this is not): fetch it whole.
                sink = _WritingSink(fd, algorithm)
                if not await _download_encoded(store, chunk, key, sink, quarantine):
                    return False
        elif not await _download_encoded(store, chunk, key, sink, quarantine):
            return False
    except ObjectNotFoundError:
        return False
    if sink.in_order and sink.hashed == chunk.size:
        digest, size = sink.hasher.hexdigest(), sink.hashed
    else:
        digest, size = await asyncio.to_thread(_hash_fd, algorithm, fd)
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


async def _download_encoded(
    store: Store, chunk: Chunk, key: str, sink: _WritingSink, quarantine: bool
) -> bool:
    """GET a compressed blob whole and write the chunk it decodes to into ``sink``; False
    if there is no such object, or for a quarantine copy that does not decode."""
    found = await store.objects.get(key)
    if found is None:
        return False
    try:
        # Off the event loop: zstd releases the GIL, so other downloads go on meanwhile. In
        # pieces into the chunk's file, so only the frame is held whole; after a failure the
        # next attempt rewrites the file, or it is removed.
        await asyncio.to_thread(decode_into, found[0], chunk.size, sink)
    except DecodeError as exc:
        if quarantine:
            log.warning("quarantine copy %s of blob %s is damaged (%s): skipped", key, chunk.digest, exc)
            return False
        raise BlobCorruptError(
            f"blob s3://{store.root.bucket}/{key} is corrupt in S3 ({exc}): delete that object, then "
            "write the file again (a write re-uploads a blob only when it is missing)",
            digest=chunk.digest,
            key=key,
        ) from exc
    return True


def _hash_fd(algorithm: str, fd: int) -> tuple[str, int]:
    with os.fdopen(fd, "rb", closefd=False) as raw:
        raw.seek(0)
        return hash_file(algorithm, raw)


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
        self._handoff = Handoff()  # what read-ahead fetched and this reader has not taken
        self._lock = threading.RLock()  # the queue, against close() from another thread
        self._new_call = True  # no chunk was opened yet by the read call in progress
        self._cached: set[int] = set()  # chunks found in the local cache
        if policy == "all":
            self.expect_full_read()

    def read(self, size: int | None = -1) -> bytes:
        self._new_call = True
        return super().read(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self._new_call = True
        return super().readinto(buffer)

    def expect_full_read(self) -> None:
        """The caller reads everything from here on: fetch every chunk not cached, in parallel."""
        if self._policy != "none":
            for index in range(self._index_of(self._pos), len(self._entry.chunks)):
                self._queue(index)

    def _queue(self, index: int) -> None:
        with self._lock:
            self._queue_locked(index)

    def _queue_locked(self, index: int) -> None:
        if self._handoff.closed:
            return
        if index >= len(self._entry.chunks) or index in self._queued or index in self._cached:
            return
        if self._open is not None and self._open[0] == index:
            return
        chunk = self._entry.chunks[index]
        if self._store.cache.has_blob(self._entry.algorithm, chunk.digest):
            self._cached.add(index)  # asked once per reader: a warm read asks nothing more
            return  # opened from the cache when needed
        self._queued[index] = self._store.downloads.submit(self._entry.algorithm, chunk, self._handoff)

    def _index_of(self, pos: int) -> int:
        return max(bisect.bisect_right(self._starts, pos) - 1, 0)

    def _handle(self, index: int) -> BinaryIO:
        if self._open is not None and self._open[0] == index:
            return self._open[1]
        if self._open is not None:
            self._open[1].close()
            self._open = None
        closed = ValueError(f"{self.path} was closed during the read")
        with self._lock:  # against a close() from another thread
            if self._handoff.closed:
                raise closed
            self._queue(index)  # the chunk needed now goes first, ahead of any read-ahead
            if self._policy == "auto":
                # Sequential access doubles the window, up to MAX_READ_AHEAD; a seek resets it.
                # Once per read call: a read that spans chunks is one access, not several.
                if self._new_call:
                    sequential = index == self._last + 1 and self._last >= 0
                    self._window = min(2 * self._window, MAX_READ_AHEAD) if sequential else 1
                    self._new_call = False
                for ahead in range(index + 1, index + 1 + self._window):
                    self._queue(ahead)
            self._last = index
            queued = self._queued.pop(index, None)
        chunk = self._entry.chunks[index]
        if queued is None:
            handle = self._handoff.give_now(open_chunk(self._store, self._entry.algorithm, chunk), closed)
        else:
            try:
                handle = queued.result()  # a closed reader's handles close in the handoff
            except concurrent.futures.CancelledError:
                raise closed from None
        self._open = (index, self._handoff.take(handle))
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
        with self._lock:
            self._handoff.close()  # first: a download admitted from now on does not start
            for future in self._queued.values():
                future.cancel()  # queued or running: stopped; done: its handle is in the handoff
            self._queued.clear()
        if self._open is not None:
            self._open[1].close()
            self._open = None
        super().close()
