"""The write path: a file's chunks become blobs, then its entry is published.

Ordering (docs/design.md, "Writing a file"): every new chunk is cached locally
(best-effort) and uploaded in the background; ``commit`` waits until each blob the
entry names is proven present in the bucket, and only then publishes the entry.
Each proof is stamped with the time its request was *sent* (gc-protocol.md, rule W1).
In a store with compression each new chunk is encoded before its upload where that pays,
and the entry records the length of every chunk's blob as its proof reported it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from cas_store.backend.base import gather_limited
from cas_store.blobs import Proof
from cas_store.errors import BlobMissingError, CacheError, IntegrityError
from cas_store.fileobj import WriteFile
from cas_store.format import Chunk, Entry
from cas_store.hashing import hash_bytes
from cas_store.runs import ChunkRuns

if TYPE_CHECKING:
    from cas_store.compression import Compression
    from cas_store.manifest import Record
    from cas_store.store import Store

log = logging.getLogger(__name__)


#: The byte budget of one file's uploads is ``max_concurrency`` times the chunker's average
#: chunk size, and at least this: fixed 8 MiB chunks keep ``max_concurrency`` uploads in
#: flight as before, and content-defined chunks (about 2 MiB) twice as many, in about the
#: memory of fixed 4 MiB ones.
UPLOAD_PART = 4 * 2**20


@dataclasses.dataclass(frozen=True)
class WriteReport:
    """What one published write cost the bucket, handed to a write observer
    (:attr:`cas_store.CASFileSystem.on_written`) once the file's entry is published."""

    #: The file's URL.
    path: str
    #: Its size in bytes (what a reader gets back).
    size: int
    #: Bytes this write added to the bucket: the chunks it uploaded (chunks the bucket
    #: already held, or another writer stored first, cost nothing) and, for a small file
    #: kept inside its entry, those bytes. The entry's own few hundred bytes are not counted.
    added: int
    #: The file is small enough to live inside its entry (``inline_threshold``): such
    #: files are stored whole each time, never deduplicated.
    inline: bool = False


#: Receives a :class:`WriteReport` after each published write; must not raise.
WriteObserver = Callable[[WriteReport], None]


class ByteBudget:
    """Bytes in flight, bounded: :meth:`acquire` waits until ``n`` more fit within
    ``max_bytes`` (or nothing is in flight: one item larger than the budget goes alone)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._in_flight = 0
        self._cond = threading.Condition()

    def acquire(self, n: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._in_flight == 0 or self._in_flight + n <= self.max_bytes)
            self._in_flight += n

    def release(self, n: int) -> None:
        with self._cond:
            self._in_flight -= n
            self._cond.notify_all()


class FileWriter:
    """The :class:`~cas_store.fileobj.ChunkSink` of one file being written.

    New chunks are uploaded in the background while their bytes in flight stay within
    ``max_concurrency`` times the chunker's average chunk size, at least
    :data:`UPLOAD_PART` (``add`` waits for room, which bounds memory; a single larger
    chunk goes alone): small chunks get more requests at a time than large ones. Chunks
    known to be in the bucket cost nothing.
    """

    def __init__(
        self,
        store: Store,
        rel: str,
        display_path: str,
        algorithm: str,
        exclusive: bool,
        avg_chunk: int,
        on_written: WriteObserver | None = None,
    ) -> None:
        self._store = store
        self._exclusive = exclusive
        self._rel = rel
        self._display = display_path
        self._algorithm = algorithm
        self._budget = ByteBudget(store.config.max_concurrency * max(avg_chunk, UPLOAD_PART))
        self._pending: list[tuple[str, str, concurrent.futures.Future[Proof]]] = []
        #: digest -> when the blob was proven present (rule W1): the memo's time, or the
        #: send time of the HEAD or PUT that proved it.
        self.proofs: dict[str, float] = {}
        #: digest -> the length of the blob's object, where known (raw: the chunk's size).
        self.sizes: dict[str, int] = {}
        self._compression = store.compression
        compression = self._compression
        self._encode = None if compression is None else functools.partial(_encoded, compression)
        self._seen: set[str] = set()  # a file may repeat a chunk: store it once
        self._on_written = on_written
        self._uploaded = 0  # bytes of the chunks this file's PUTs created
        self._uploaded_lock = threading.Lock()

    def add(self, chunk: memoryview, digest: str, hashed: bool = True) -> None:
        if digest in self._seen:
            return
        self._seen.add(digest)
        store, algorithm = self._store, self._algorithm
        key = store.blobs.key(algorithm, digest)
        memo = store.blob_memo(key)
        if memo is not None and memo[1] is None and self._compression is not None:
            memo = None  # how it is stored is unknown: the HEAD below says (no upload if present)
        proven = None if memo is None else memo[0]
        cached = store.has_cached(algorithm, digest)
        # Taken from a chunk run and about to be stored (cache or bucket): its digest must be its own.
        if not hashed and (proven is None or not cached) and hash_bytes(algorithm, chunk) != digest:
            raise IntegrityError(
                f"a chunk of {self._display} taken from a recorded chunk run does not hash to "
                f"the run's digest {digest}: the local cache's runs table is damaged; nothing "
                "was published: delete mirror.sqlite3 in the cache directory and write again"
            )
        if not cached:
            store.keep_in_cache(algorithm, digest, chunk)  # best-effort: reading it back is local
        if memo is not None:
            self.proofs[digest] = memo[0]
            if memo[1] is not None:
                self.sizes[digest] = memo[1]
            return
        self._raise_failed()
        size = len(chunk)
        self._budget.acquire(size)
        try:
            # In a store this process just created, nobody else is likely to have put the blob:
            # no HEAD first (the conditional PUT settles a concurrent writer; Store.is_new).
            future = store.blobs.store(
                algorithm,
                digest,
                bytes(chunk),
                ask_first=not store.is_new,
                uploaded=self._count_upload,
                encode=self._encode,
            )
        except BaseException:
            self._budget.release(size)
            raise
        future.add_done_callback(lambda _: self._budget.release(size))
        self._pending.append((digest, key, future))

    def _count_upload(self, n: int) -> None:
        with self._uploaded_lock:
            self._uploaded += n

    def _raise_failed(self) -> None:
        """Surface a failed upload at the next write rather than only at close()."""
        for _, _, future in self._pending:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def flush(self) -> None:
        self._finish_uploads()

    def _finish_uploads(self) -> None:
        """Wait for every upload; record each proof; raise the first failure."""
        try:
            for digest, key, future in self._pending:
                proof = future.result()
                self.proofs[digest] = proof.at
                if proof.stored is not None:
                    self.sizes[digest] = proof.stored
                self._store.remember_blob(key, proof.at, proof.stored)
        except BaseException:
            self.abort()
            raise
        self._pending = []

    def commit(self, size: int, digest: str, chunks: list[Chunk], inline: bytes | None) -> None:
        self._finish_uploads()  # every blob durable (or known to be) before the entry exists
        if inline is not None:
            entry = Entry(size, self._algorithm, digest, inline=inline)
        else:
            entry = Entry(size, self._algorithm, digest, chunks=tuple(chunks))
        entry.validate(self._display)  # never publish an entry a reader would reject
        publish(self._store, self._rel, entry, self.proofs, exclusive=self._exclusive, sizes=self.sizes)
        if self._on_written is not None:
            report = WriteReport(
                self._display, size, self._uploaded + len(inline or b""), inline=inline is not None
            )
            try:
                self._on_written(report)
            except Exception:  # the write is published: an observer must not fail it
                log.warning("the write observer failed on %s", self._display, exc_info=True)

    def abort(self) -> None:
        """Stop waiting: uploads still running may finish (an unreferenced blob is harmless)."""
        for _, _, future in self._pending:
            future.cancel()
        self._pending = []


def encode(compression: Compression | None, chunk: memoryview) -> bytes:
    """The bytes to store as ``chunk``'s blob: its compressed form where that pays, else itself."""
    encoded = None if compression is None else compression.encode(chunk)
    return bytes(chunk) if encoded is None else encoded


def _encoded(compression: Compression, chunk: bytes) -> bytes:
    encoded = compression.encode(chunk)
    return chunk if encoded is None else encoded


def publish(
    store: Store,
    rel: str,
    entry: Entry,
    proofs: dict[str, float],
    *,
    exclusive: bool = False,
    sizes: dict[str, int] | None = None,
) -> Record:
    """Publish ``entry`` at ``rel`` following rule W (docs/gc.md section 4): every entry PUT
    of a version 2 store (writes, copies, moves) goes through here.

    ``proofs`` maps digests to when the blob was proven present (W1); blobs it lacks are
    looked up in the memo (W2). W3: just before the PUT, every proof older than ``V - P``
    (or from the future: a clock stepped back) is re-checked by a HEAD, and a missing blob
    is repaired (uploaded again from the local cache, else restored from quarantine, else
    the write fails with :class:`BlobMissingError` and nothing is published). W4: if the
    PUT landed later than ``P`` after that check, the blobs are checked and repaired again.
    Writes shorter than ``V - P`` make no request beyond the PUT.

    ``sizes`` maps digests to the lengths of their blobs' objects as proofs reported them;
    the entry published records them (and those the checks learn), compressed or raw.
    """
    sizes = {} if sizes is None else sizes
    gc = store.gc
    if gc is None or not entry.chunks:  # version 1 stores have no collector
        return store.publish(rel, entry.with_sizes(sizes), exclusive=exclusive)
    digests = list(dict.fromkeys(c.digest for c in entry.chunks))
    for d in digests:
        if d not in proofs:
            proven = store.blob_proof(store.blobs.key(entry.algorithm, d))
            if proven is not None:
                proofs[d] = proven
    checked = _recheck(store, entry.algorithm, digests, proofs, gc.recheck_after, sizes)
    if store.clock() - checked >= gc.publish:  # the repairs took long: check afresh (W4)
        checked = _recheck(store, entry.algorithm, digests, proofs, gc.recheck_after, sizes)
    record = store.publish(rel, entry.with_sizes(sizes), exclusive=exclusive)
    if store.clock() - checked >= gc.publish:
        log.info("the entry PUT of %s took longer than %.3g s: checking its blobs again", rel, gc.publish)
        _recheck(store, entry.algorithm, digests, {}, gc.recheck_after, {})
    return record


def _recheck(
    store: Store,
    algorithm: str,
    digests: list[str],
    proofs: dict[str, float],
    recheck_after: float,
    sizes: dict[str, int],
) -> float:
    """W3: HEAD every blob whose proof is stale and repair the missing ones; update ``proofs``.

    Returns the check time t_c: the send time of the first HEAD, or now if none was needed.
    """
    now = store.clock()
    stale = [d for d in digests if not 0 <= now - proofs.get(d, -math.inf) < recheck_after]
    if not stale:
        return now
    checked = store.clock()

    async def head(digest: str) -> tuple[str, Proof | None]:
        sent = store.clock()
        found = await store.objects.head(store.blobs.key(algorithm, digest))
        return digest, (Proof(sent, found.size) if found is not None else None)

    answers = store.objects.run(
        f"checking {len(stale)} blobs before publishing",
        lambda: gather_limited(store.config.max_concurrency, [head(d) for d in stale]),
    )
    for digest, answered in answers:
        key = store.blobs.key(algorithm, digest)
        if answered is None:
            store.forget_blob(key)
        proof = _repair(store, algorithm, digest) if answered is None else answered
        proofs[digest] = proof.at
        if proof.stored is not None:
            sizes[digest] = proof.stored
        store.remember_blob(key, proof.at, proof.stored)
    return checked


def _repair(store: Store, algorithm: str, digest: str) -> Proof:
    """Make a blob that answered 404 present again; its new proof (W3)."""
    key = store.blobs.key(algorithm, digest)
    data = _cached_bytes(store, algorithm, digest)
    if data is not None:
        log.info("blob %s vanished before its entry was published: uploading it again", digest)
        payload = encode(store.compression, memoryview(data))
        return store.blobs.store(algorithm, digest, payload, ask_first=False).result()
    proven = store.blobs.restore(algorithm, digest)
    if proven is None:
        raise BlobMissingError(
            f"blob {digest} vanished from s3://{store.root.bucket}/{key} while the file naming it was "
            "written, and neither the local cache nor the collector's quarantine holds it: nothing "
            "was published; write the file again",
            digest=digest,
            key=key,
        )
    return Proof(proven)  # a quarantine copy holds the blob's own bytes, whatever their length


def _cached_bytes(store: Store, algorithm: str, digest: str) -> bytes | None:
    """The blob's bytes from the local cache, verified (a damaged copy is no source)."""
    try:
        handle = store.cache.open_blob(algorithm, digest)
    except CacheError:
        return None
    if handle is None:
        return None
    with handle:
        data = handle.read()
    if hash_bytes(algorithm, data) != digest:
        store.cache.discard(algorithm, digest)
        return None
    return data


def open_write(
    store: Store,
    rel: str,
    display_path: str,
    exclusive: bool = False,
    on_written: WriteObserver | None = None,
) -> WriteFile:
    """A :class:`WriteFile` that publishes ``rel`` in ``store`` on close, then tells
    ``on_written`` what the write added to the bucket."""
    store.root.manifest_key(rel)  # validates the path before any byte is written
    if store.objects.is_offline():
        raise store.objects.offline_error(f"writing {display_path}")
    marker = store.marker(create=True)
    assert marker is not None
    chunker = store.chunker()
    writer = FileWriter(
        store, rel, display_path, marker.hash_algorithm, exclusive, chunker.avg_size, on_written
    )
    runs = ChunkRuns(store.cache.mirror, marker.hash_algorithm, marker.chunker_spec)
    return WriteFile(
        display_path, marker.hash_algorithm, chunker, store.config.inline_threshold, writer, runs
    )
