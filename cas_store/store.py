"""One store root: the write and read paths that tie manifest, blobs and cache together.

Invariants kept here (DESIGN.md):

1. a manifest entry is published only after every blob it names is durable in S3;
2. a blob already present (remembered, or found by one HEAD) is not uploaded again;
3. bytes handed out match their digest (fills are verified; full reads are checked);
6. offline, cached content stays readable and nothing is half-published.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import contextlib
import datetime as dt
import io
import logging
import os
import threading
from typing import BinaryIO

from cas_store import __version__
from cas_store.blobstore import BlobStore
from cas_store.cache import LocalCache
from cas_store.config import StoreConfig
from cas_store.errors import IncompatibleStoreError, IntegrityError, StoreOfflineError
from cas_store.files import ReadFile, WriteFile
from cas_store.format import DEFAULT_CHUNK_SIZE, FORMAT_VERSION, Chunk, Entry, Marker
from cas_store.hashing import DEFAULT_ALGORITHM, hash_bytes, hash_file
from cas_store.layout import Root
from cas_store.manifest import Listed, ManifestStore, Record
from cas_store.s3 import S3, error_code, is_not_implemented, is_precondition_failed

log = logging.getLogger(__name__)


class Store:
    """The content-addressed store at one root, over one S3 client and one local cache."""

    def __init__(self, root: Root, config: StoreConfig, s3: S3, cache: LocalCache) -> None:
        self.root = root
        self.config = config
        self.s3 = s3
        self.cache = cache
        self.manifest = ManifestStore(s3, root)
        self.blobs = BlobStore(s3, root)
        # Identifies this store in the shared cache: two endpoints may have equal bucket names.
        self.id = f"{s3.endpoint}|{root.path}"
        self._marker: Marker | None = None
        self._no_marker = False  # S3 said there is no marker (and we have not created one)
        self._marker_lock = threading.Lock()

    # -- format marker ---------------------------------------------------------------------

    def marker(self, create: bool = False) -> Marker | None:
        """The store's format marker; with ``create``, initialise an empty prefix as a store.

        Raises :class:`IncompatibleStoreError` for a marker of another format version, a
        marker whose algorithm contradicts the configuration, or (on create) a prefix that
        already holds other objects.
        """
        if self._marker is not None or (self._no_marker and not create):
            return self._marker
        with self._marker_lock:
            if self._marker is None and (create or not self._no_marker):
                self._marker = self._load_marker(create)
                # A store not created yet has no paths to read either: reads need not ask again.
                self._no_marker = self._marker is None
            return self._marker

    def _load_marker(self, create: bool) -> Marker | None:
        where = f"{self.root.uri} ({self.s3.endpoint})"
        key = self.root.marker_key()
        try:
            data = self._get_small(key, f"opening the store {self.root.uri}")
        except StoreOfflineError:
            cached = self.cache.mirror.get_marker(self.id)
            if cached is None or create:
                raise
            return self._accept(Marker.decode(cached, where), cached)
        if data is not None:
            return self._accept(Marker.decode(data, where), data)
        if not create:
            return None
        occupant = self._first_object()
        if occupant is not None:
            # Either another writer created the store since our GET, or the prefix is foreign.
            data = self._get_small(key, f"opening the store {self.root.uri}")
            if data is not None:
                return self._accept(Marker.decode(data, where), data)
            raise IncompatibleStoreError(
                f"s3://{self.root.bucket}/{self.root.key()} already holds objects that are not a "
                f"cas_store store (e.g. {occupant!r}); choose an empty prefix as the root"
            )
        marker = Marker(
            FORMAT_VERSION,
            self.config.hash_algorithm or DEFAULT_ALGORITHM,
            self.config.chunk_size or DEFAULT_CHUNK_SIZE,
            f"cas_store {__version__}",
        )
        body = marker.encode()

        def put(**condition: str) -> None:
            self.s3.call(
                f"creating the store {self.root.uri}",
                "put_object",
                Bucket=self.root.bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
                **condition,
            )

        try:
            put(IfNoneMatch="*")
        except Exception as exc:
            if is_not_implemented(exc):
                put()
            elif not is_precondition_failed(exc):
                raise
        # Read back: on servers that ignore If-None-Match the last concurrent creator wins,
        # and everyone must then use what is really there.
        data = self._get_small(key, f"opening the store {self.root.uri}")
        if data is None:
            raise IncompatibleStoreError(f"the marker of {where} vanished right after it was written")
        return self._accept(Marker.decode(data, where), data)

    def _accept(self, marker: Marker, raw: bytes) -> Marker:
        wanted = self.config.hash_algorithm
        if wanted is not None and wanted != marker.hash_algorithm:
            raise IncompatibleStoreError(
                f"the store {self.root.uri} hashes with {marker.hash_algorithm!r} but the "
                f"configuration asks for {wanted!r}: drop hash_algorithm from the configuration "
                "or use a new root for the other algorithm"
            )
        wanted_size = self.config.chunk_size
        if wanted_size is not None and wanted_size != (marker.chunk_size or DEFAULT_CHUNK_SIZE):
            raise IncompatibleStoreError(
                f"the store {self.root.uri} cuts files into chunks of "
                f"{marker.chunk_size or DEFAULT_CHUNK_SIZE} bytes but "
                f"the configuration asks for {wanted_size}: drop chunk_size from the configuration "
                "(identical files would otherwise stop deduplicating) or use a new root"
            )
        self.cache.mirror.put_marker(self.id, raw)
        return marker

    def _first_object(self) -> str | None:
        """The key of some object under the root, or None if the prefix is empty."""
        prefix = self.root.key() + "/" if self.root.prefix else ""
        resp = self.s3.call(
            f"checking {self.root.uri} before creating a store there",
            "list_objects_v2",
            Bucket=self.root.bucket,
            Prefix=prefix,
            MaxKeys=1,
        )
        contents = resp.get("Contents") or []
        return str(contents[0]["Key"]) if contents else None

    def _get_small(self, key: str, what: str) -> bytes | None:
        async def get() -> bytes | None:
            try:
                resp = await self.s3.fs._call_s3("get_object", Bucket=self.root.bucket, Key=key)
            except FileNotFoundError as exc:
                if error_code(exc) == "NoSuchBucket":
                    raise
                return None
            try:
                return bytes(await resp["Body"].read())
            finally:
                resp["Body"].close()

        return self.s3.run(what, get)

    # -- resolving paths -------------------------------------------------------------------

    def resolve(self, rel: str) -> Record | None:
        """The current entry of ``rel``: from S3 when reachable, else from the mirror.

        Raises :class:`StoreOfflineError` when S3 is unreachable and the mirror has no
        answer (the path may exist; this machine just has not seen it). With
        ``entry_ttl``, an entry S3 confirmed that recently is answered from the mirror.
        """
        if self.config.entry_ttl > 0:
            fresh = self.mirrored(rel, max_age=self.config.entry_ttl)
            if fresh is not None:
                return fresh
        try:
            self.marker()
            record = self.manifest.get(rel)
        except StoreOfflineError:
            record = self.mirrored(rel)
            if record is None:
                raise
            return record
        if record is None:
            self.cache.mirror.delete_entries(self.id, [rel])
        else:
            self.remember(record)
        return record

    def mirrored(self, rel: str, max_age: float | None = None) -> Record | None:
        row = self.cache.mirror.get_entry(self.id, rel, max_age)
        if row is None:
            return None
        data, etag, modified = row
        return Record(rel, Entry.decode(data, f"{self.root.uri}/{rel}"), etag, _from_timestamp(modified))

    def remember(self, record: Record) -> None:
        self.cache.mirror.put_entry(
            self.id, record.rel, record.entry.encode(), record.etag, record.modified.timestamp()
        )

    # -- writing ---------------------------------------------------------------------------

    def open_write(self, rel: str, display_path: str) -> WriteFile:
        self.root.manifest_key(rel)  # validates the path before any byte is written
        if self.s3.is_offline():
            raise self.s3.offline_error(f"writing {display_path}")
        marker = self.marker(create=True)
        assert marker is not None
        algorithm = marker.hash_algorithm
        uploads = _ChunkUploads(self, algorithm)

        def on_close(size: int, digest: str, chunks: list[tuple[str, int]], inline: bytes | None) -> None:
            uploads.finish()  # every blob durable (or known to be) before the entry exists
            if inline is not None:
                entry = Entry(size, algorithm, digest, inline=inline)
            else:
                entry = Entry(size, algorithm, digest, chunks=tuple(Chunk(d, n) for d, n in chunks))
            entry.validate(display_path)  # never publish an entry a reader would reject
            self.publish(rel, entry)

        return WriteFile(
            display_path,
            algorithm,
            marker.chunk_size or DEFAULT_CHUNK_SIZE,
            self.config.inline_threshold,
            on_chunk=uploads.submit,
            on_close=on_close,
            on_discard=uploads.abort,
        )

    def publish(self, rel: str, entry: Entry) -> Record:
        record = self.manifest.put(rel, entry)
        self.remember(record)
        return record

    # -- reading ---------------------------------------------------------------------------

    def open_read(self, record: Record, display_path: str) -> io.BufferedIOBase:
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
                self.cache.discard(entry.algorithm, chunk.digest)

        def source() -> BinaryIO:
            if len(entry.chunks) == 1:
                return self.open_chunk(entry.algorithm, entry.chunks[0])
            self.prefetch(entry.algorithm, entry.chunks)
            return _ChunkedReader(display_path, entry, self)  # type: ignore[return-value]

        handle = source()
        return ReadFile(
            display_path,
            handle,
            entry.size,
            entry.algorithm,
            entry.digest,
            refetch=source,  # after on_corrupt discarded the cached copies: fetches afresh
            on_corrupt=discard,
            verify=self.config.verify_reads,
        )

    def open_chunk(self, algorithm: str, chunk: Chunk) -> BinaryIO:
        """A handle on the chunk's bytes: from the cache, else fetched (and cached)."""
        handle = self.cache.open_blob(algorithm, chunk.digest)
        if handle is not None:
            return handle
        return self.fetch(algorithm, chunk)

    def prefetch(self, algorithm: str, chunks: tuple[Chunk, ...]) -> None:
        """Bring the chunks the cache lacks into it, ``max_concurrency`` downloads at a time."""
        missing = {c.digest: c for c in chunks if not self.cache.has_blob(algorithm, c.digest)}
        if not missing:
            return
        with concurrent.futures.ThreadPoolExecutor(self.config.max_concurrency) as pool:
            futures = [pool.submit(self.fetch, algorithm, c) for c in missing.values()]
        for future in futures:  # all done: close every handle, then raise the first failure
            if future.exception() is None:
                future.result().close()
        for future in futures:
            future.result()

    def fetch(self, algorithm: str, chunk: Chunk) -> BinaryIO:
        """Download a blob, verify it, put it in the cache and return an open handle on it."""
        fd, tmp = self.cache.temp_file(".download")
        os.close(fd)
        try:
            try:
                self.blobs.download(algorithm, chunk.digest, chunk.size, tmp)
            except FileNotFoundError as exc:
                self.cache.mirror.forget_blob(self.id, self.root.blob_key(algorithm, chunk.digest))
                raise IntegrityError(
                    f"blob {chunk.digest} is missing from s3://{self.root.bucket}/"
                    f"{self.root.blob_key(algorithm, chunk.digest)}; a path refers to content "
                    "that was deleted outside cas_store: write the file again"
                ) from exc
            with open(tmp, "rb") as f:
                digest, size = hash_file(algorithm, f)
            if digest != chunk.digest or size != chunk.size:
                raise IntegrityError(
                    f"blob s3://{self.root.bucket}/{self.root.blob_key(algorithm, chunk.digest)} "
                    f"is corrupt in S3 (got {size} bytes hashing to {digest}); write the file again"
                )
            # Opened before adoption, so that eviction cannot pull the file away from us.
            handle = open(tmp, "rb")  # noqa: SIM115 - returned to the caller, who closes it
            self.cache.adopt(algorithm, chunk.digest, tmp)
            return handle
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # -- listing -----------------------------------------------------------------------

    def list_dir(self, rel: str) -> tuple[list[Listed], list[str]]:
        return self.manifest.list_dir(rel)


class _ChunkUploads:
    """The chunks of one file being written: each new one is cached locally and uploaded
    in the background, at most ``max_concurrency`` at a time (the writer waits for a slot,
    which bounds memory); chunks already known to be in the store cost nothing.
    """

    def __init__(self, store: Store, algorithm: str) -> None:
        self._store = store
        self._algorithm = algorithm
        self._slots = threading.BoundedSemaphore(store.config.max_concurrency)
        self._pending: list[tuple[str, concurrent.futures.Future[None]]] = []
        self._seen: set[str] = set()  # a file may repeat a chunk: store it once

    def submit(self, chunk: memoryview, digest: str) -> None:
        if digest in self._seen:
            return
        self._seen.add(digest)
        store, algorithm = self._store, self._algorithm
        key = store.root.blob_key(algorithm, digest)
        if not store.cache.has_blob(algorithm, digest):
            store.cache.put_blob(algorithm, digest, chunk)  # so that reading it back is local
        if store.cache.mirror.knows_blob(store.id, key, store.config.blob_memo_ttl):
            return
        self._raise_failed()
        self._slots.acquire()
        try:
            future = store.blobs.store(algorithm, digest, bytes(chunk))
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        self._pending.append((key, future))

    def _raise_failed(self) -> None:
        """Surface a failed upload at the next write rather than only at close()."""
        for _, future in self._pending:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def finish(self) -> None:
        """Wait for every upload; raise the first failure."""
        try:
            for key, future in self._pending:
                future.result()
                self._store.cache.mirror.remember_blob(self._store.id, key)
        except BaseException:
            self.abort()
            raise
        self._pending = []

    def abort(self) -> None:
        """Stop waiting: uploads still running may finish (an unreferenced blob is harmless)."""
        for _, future in self._pending:
            future.cancel()
        self._pending = []


class _ChunkedReader(io.BufferedIOBase):
    """The concatenated chunks of an entry stored as several blobs, as one seekable file.

    :class:`ReadFile` checks the whole-file digest on top.
    """

    def __init__(self, path: str, entry: Entry, store: Store) -> None:
        super().__init__()
        self.path = path
        self.size = entry.size
        self._entry = entry
        self._store = store
        self._starts: list[int] = []
        offset = 0
        for chunk in entry.chunks:
            self._starts.append(offset)
            offset += chunk.size
        self._pos = 0
        self._open: tuple[int, BinaryIO] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(22, "negative seek position")
        self._pos = base + offset
        return self._pos

    def _handle(self, index: int) -> BinaryIO:
        if self._open is None or self._open[0] != index:
            if self._open is not None:
                self._open[1].close()
            chunk = self._entry.chunks[index]
            self._open = (index, self._store.open_chunk(self._entry.algorithm, chunk))
        return self._open[1]

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        end = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        parts = []
        while self._pos < end:
            index = bisect.bisect_right(self._starts, self._pos) - 1
            handle = self._handle(index)
            handle.seek(self._pos - self._starts[index])
            data = handle.read(
                min(end - self._pos, self._entry.chunks[index].size - (self._pos - self._starts[index]))
            )
            if not data:
                raise IntegrityError(f"chunk {index} of {self.path} is shorter than its entry says")
            parts.append(data)
            self._pos += len(data)
        return b"".join(parts)

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None
        super().close()


def _from_timestamp(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)
