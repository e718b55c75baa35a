"""The read path: an entry's chunks, from the local cache or fetched, as one file.

Ordering (docs/design.md, "Reading a file"): a chunk enters the cache only after its
digest was verified; a full read also checks the whole-file digest; a blob missing
from the bucket or corrupt there is an error carrying its digest and key.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import contextlib
import io
import logging
import os
import tempfile
from typing import TYPE_CHECKING, BinaryIO

from cas_store.errors import (
    BlobCorruptError,
    BlobMissingError,
    CacheError,
    IntegrityError,
    ObjectNotFoundError,
)
from cas_store.fileobj import ReadFile, SeekableReader
from cas_store.format import DEFAULT_CHUNK_SIZE, Chunk, Entry
from cas_store.hashing import hash_bytes, hash_file

if TYPE_CHECKING:
    from cas_store.manifest import Record
    from cas_store.store import Store

log = logging.getLogger(__name__)

#: Ranged GETs of this size for blobs larger than it (AWS advises 8-16 MiB).
DOWNLOAD_PART = DEFAULT_CHUNK_SIZE


def open_read(store: Store, record: Record, display_path: str) -> io.BufferedIOBase:
    """A verified, seekable reader of the entry's content."""
    entry = record.entry
    if entry.inline is not None:
        if hash_bytes(entry.algorithm, entry.inline) != entry.digest:
            raise IntegrityError(
                f"the manifest entry of {display_path} holds inline bytes that do not match "
                "its digest; the entry is corrupt: write the file again"
            )
        return io.BytesIO(entry.inline)

    def discard() -> None:
        for chunk in entry.chunks:
            store.cache.discard(entry.algorithm, chunk.digest)

    def source() -> BinaryIO:
        if len(entry.chunks) == 1:
            return open_chunk(store, entry.algorithm, entry.chunks[0])
        prefetch(store, entry.algorithm, entry.chunks)
        return ChunkedReader(display_path, entry, store)  # type: ignore[return-value]

    return ReadFile(
        display_path,
        source(),
        entry.size,
        entry.algorithm,
        entry.digest,
        refetch=source,  # after on_corrupt discarded the cached copies: fetches afresh
        on_corrupt=discard,
        verify=store.config.verify_reads,
    )


def open_chunk(store: Store, algorithm: str, chunk: Chunk) -> BinaryIO:
    """A handle on the chunk's bytes: from the cache, else fetched (and cached)."""
    handle = store.cache.open_blob(algorithm, chunk.digest)
    if handle is not None:
        return handle
    return fetch(store, algorithm, chunk)


def prefetch(store: Store, algorithm: str, chunks: tuple[Chunk, ...]) -> None:
    """Bring the chunks the cache lacks into it, ``max_concurrency`` downloads at a time."""
    missing = {c.digest: c for c in chunks if not store.cache.has_blob(algorithm, c.digest)}
    if not missing:
        return
    with concurrent.futures.ThreadPoolExecutor(store.config.max_concurrency) as pool:
        futures = [pool.submit(fetch, store, algorithm, c) for c in missing.values()]
    for future in futures:  # all done: close every handle, then raise the first failure
        if future.exception() is None:
            future.result().close()
    for future in futures:
        future.result()


def fetch(store: Store, algorithm: str, chunk: Chunk) -> BinaryIO:
    """Download a blob, verify it, put it in the cache and return an open handle on it.

    A cache that cannot take the blob (disk full, directory unusable) does not fail the
    read: the verified bytes are served from an unlinked temporary file instead.
    """
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
    a quarantine copy, if it is not the blob: a damaged copy is skipped, never served)."""
    try:
        os.ftruncate(fd, chunk.size)
        store.blobs.download(
            algorithm,
            chunk.digest,
            chunk.size,
            DOWNLOAD_PART,
            lambda at, data: os.pwrite(fd, data, at),
            key=key,
        )
    except ObjectNotFoundError:
        return False
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


class ChunkedReader(SeekableReader):
    """The concatenated chunks of an entry stored as several blobs, as one seekable file.

    :class:`~cas_store.fileobj.ReadFile` checks the whole-file digest on top.
    """

    def __init__(self, path: str, entry: Entry, store: Store) -> None:
        super().__init__(path, entry.size)
        self._entry = entry
        self._store = store
        self._starts: list[int] = []
        offset = 0
        for chunk in entry.chunks:
            self._starts.append(offset)
            offset += chunk.size
        self._open: tuple[int, BinaryIO] | None = None

    def _handle(self, index: int) -> BinaryIO:
        if self._open is None or self._open[0] != index:
            if self._open is not None:
                self._open[1].close()
            chunk = self._entry.chunks[index]
            self._open = (index, open_chunk(self._store, self._entry.algorithm, chunk))
        return self._open[1]

    def _locate(self) -> tuple[int, int, int]:
        """(chunk index, offset in it, bytes left in it) of the current position."""
        index = bisect.bisect_right(self._starts, self._pos) - 1
        within = self._pos - self._starts[index]
        return index, within, self._entry.chunks[index].size - within

    def _read_into(self, view: memoryview) -> int:
        if self._pos >= self.size or not view:
            return 0
        index, within, left = self._locate()
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
        if self._open is not None:
            self._open[1].close()
            self._open = None
        super().close()
