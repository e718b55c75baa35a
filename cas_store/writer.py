"""The write path: a file's chunks become blobs, then its entry is published.

Ordering (docs/design.md, "Writing a file"): every new chunk is cached locally
(best-effort) and uploaded in the background; ``commit`` waits until each blob the
entry names is proven present in the bucket, and only then publishes the entry.
Each proof is stamped with the time its request was *sent* (gc-protocol.md, rule W1).
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import TYPE_CHECKING

from cas_store.fileobj import WriteFile
from cas_store.format import Chunk, Entry

if TYPE_CHECKING:
    from cas_store.store import Store


class FileWriter:
    """The :class:`~cas_store.fileobj.ChunkSink` of one file being written.

    New chunks are uploaded at most ``max_concurrency`` at a time (``add`` waits for a
    slot, which bounds memory); chunks known to be in the bucket cost nothing.
    """

    def __init__(self, store: Store, rel: str, display_path: str, algorithm: str, exclusive: bool) -> None:
        self._store = store
        self._exclusive = exclusive
        self._rel = rel
        self._display = display_path
        self._algorithm = algorithm
        self._slots = threading.BoundedSemaphore(store.config.max_concurrency)
        self._pending: list[tuple[str, str, concurrent.futures.Future[float]]] = []
        #: digest -> when the blob was proven present (rule W1): the memo's time, or the
        #: send time of the HEAD or PUT that proved it.
        self.proofs: dict[str, float] = {}
        self._seen: set[str] = set()  # a file may repeat a chunk: store it once

    def add(self, chunk: memoryview, digest: str) -> None:
        if digest in self._seen:
            return
        self._seen.add(digest)
        store, algorithm = self._store, self._algorithm
        key = store.blobs.key(algorithm, digest)
        store.keep_in_cache(algorithm, digest, chunk)  # best-effort: reading it back is local
        proven = store.blob_proof(key)
        if proven is not None:
            self.proofs[digest] = proven
            return
        self._raise_failed()
        self._slots.acquire()
        try:
            future = store.blobs.store(algorithm, digest, bytes(chunk))
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        self._pending.append((digest, key, future))

    def _raise_failed(self) -> None:
        """Surface a failed upload at the next write rather than only at close()."""
        for _, _, future in self._pending:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def _finish_uploads(self) -> None:
        """Wait for every upload; record each proof; raise the first failure."""
        try:
            for digest, key, future in self._pending:
                proven = future.result()
                self.proofs[digest] = proven
                self._store.remember_blob(key, proven)
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
        self._store.publish(self._rel, entry, exclusive=self._exclusive)

    def abort(self) -> None:
        """Stop waiting: uploads still running may finish (an unreferenced blob is harmless)."""
        for _, _, future in self._pending:
            future.cancel()
        self._pending = []


def open_write(store: Store, rel: str, display_path: str, exclusive: bool = False) -> WriteFile:
    """A :class:`WriteFile` that publishes ``rel`` in ``store`` on close."""
    store.root.manifest_key(rel)  # validates the path before any byte is written
    if store.objects.is_offline():
        raise store.objects.offline_error(f"writing {display_path}")
    marker = store.marker(create=True)
    assert marker is not None
    writer = FileWriter(store, rel, display_path, marker.hash_algorithm, exclusive)
    return WriteFile(
        display_path, marker.hash_algorithm, store.chunker(), store.config.inline_threshold, writer
    )
