"""One store root: the facade that ties manifest, blobs, cache and mirror together.

:class:`Store` owns the bookkeeping every front end needs (the fsspec file system, the
ZenML flavor through it, the CLI): the format marker, resolving a path online or from the
mirror, listing, removal, the offline fallback and mirror pruning. The write and read
paths live in :mod:`cas_store.writer` and :mod:`cas_store.reader`; the invariants they keep
are stated in ``docs/design.md``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cas_store import __version__, reader, writer
from cas_store.backend.base import ObjectStore
from cas_store.blobs import Blobs
from cas_store.cache import LocalCache
from cas_store.chunking import Chunker, ChunkerSpec, configured_chunker
from cas_store.compression import Compression, parse_compression
from cas_store.config import StoreConfig
from cas_store.errors import CacheError, IncompatibleStoreError, StoreOfflineError
from cas_store.fileobj import WriteFile
from cas_store.format import Entry, Marker
from cas_store.hashing import DEFAULT_ALGORITHM
from cas_store.layout import Root
from cas_store.manifest import Listed, Manifest, Record
from cas_store.safety import GCDurations

log = logging.getLogger(__name__)

#: Seconds during which a root found empty (no marker, no object) is created without asking
#: again: ``exists()`` then ``open("wb")`` on a new store costs one GET and one LIST, not two.
EMPTY_TRUSTED = 60.0
#: Seconds after this process created a store during which its writers upload new chunks
#: without asking first (see :attr:`Store.is_new`).
NEW_STORE_WINDOW = 60.0
#: Seconds an open of a path this machine holds a mirrored entry for waits for the bucket's
#: answer before it is served from the mirror, as offline: an unreachable bucket that does
#: not refuse connections takes ``offline_timeout`` to detect, and cached files must stay
#: readable meanwhile. The request goes on; if it fails, the circuit breaker opens.
MIRROR_PATIENCE = 1.5


@dataclass(frozen=True)
class Listing:
    """A directory's contents: its files (with entries) and its subdirectories' paths."""

    files: list[Record]
    dirs: list[str]


class Store:
    """The content-addressed store at one root, over one :class:`ObjectStore` and one local cache.

    Thread-safe. ``clock`` (seconds since the epoch) stamps blob proofs; tests inject one.
    """

    def __init__(
        self,
        root: Root,
        config: StoreConfig,
        objects: ObjectStore,
        cache: LocalCache,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if objects.bucket != root.bucket:
            raise ValueError(f"the object store is bucket {objects.bucket!r}, the root {root.uri}")
        self.root = root
        self.config = config
        self.objects = objects
        self.cache = cache
        self.clock = clock
        self.manifest = Manifest(objects, root, config.max_concurrency)
        self.blobs = Blobs(objects, root, config.max_concurrency, clock)
        # Where this store is, for the mirror's markers: two endpoints may have equal bucket names.
        self.location = f"{objects.endpoint}|{root.path}"
        self._marker: Marker | None = None
        self._remembered: Marker | None = None  # the mirror's copy of the marker, until it loads
        self._downloads: reader.Downloads | None = None
        #: True once this object created the store: the marker it reads back is the one it wrote
        #: (on a server that ignores If-None-Match, a concurrent creator's may have won).
        self.created = False
        self._created_at = 0.0
        self._no_marker = False  # the bucket said there is no marker (and we have not created one)
        self._empty_at: float | None = None  # when the bucket last said the root is empty
        #: A request for an entry that outlasted MIRROR_PATIENCE: while it is unanswered,
        #: paths mirrored here are served without asking again.
        self._slow_answer: concurrent.futures.Future[Record | None] | None = None
        self._marker_lock = threading.Lock()

    @property
    def id(self) -> str:
        """Keys this store's rows in the local mirror and memo (C2 of docs/design.md).

        For a version 2 store it includes the marker's ``store_id``: a prefix wiped and
        created again is another store, and nothing remembered of the old one is trusted.
        Until the marker is loaded, the mirror's copy of it decides (so that reads answered
        from the mirror make no request).
        """
        marker = self._marker or self._mirrored_marker()
        if marker is None or marker.store_id is None:
            return self.location
        return f"{self.location}|{marker.store_id}"

    def _mirrored_marker(self) -> Marker | None:
        if self._remembered is None:
            try:
                raw = self.cache.mirror.get_marker(self.location)
                if raw is not None:
                    self._remembered = Marker.decode(raw, self.where())
            except (CacheError, IncompatibleStoreError):
                return None
        return self._remembered

    @property
    def gc(self) -> GCDurations | None:
        """The marker's collection durations (None for a version 1 store, or no store yet)."""
        marker = self.marker()
        return None if marker is None else marker.gc

    def where(self, rel: str = "") -> str:
        """The ``s3cas://`` URI of ``rel``, for messages."""
        return f"{self.root.uri}/{rel}" if rel else self.root.uri

    # -- format marker ---------------------------------------------------------------------

    def marker(
        self,
        create: bool = False,
        *,
        gc_grace: float | None = None,
        chunker: ChunkerSpec | None = None,
        compression: str | None = None,
    ) -> Marker | None:
        """The store's format marker; with ``create``, initialise an empty prefix as a store
        (with ``gc_grace``, ``chunker`` and ``compression`` (as the configuration's option),
        each else the configuration's; a ``chunker`` the configuration contradicts is refused
        before anything is written).

        Raises :class:`IncompatibleStoreError` for a marker of another format version, a
        marker whose settings contradict the configuration, or a prefix that holds other
        objects but no marker (a foreign prefix: reads would otherwise see an empty store).
        """
        if self._marker is not None or (self._no_marker and not create):
            return self._marker
        with self._marker_lock:
            if self._marker is None and (create or not self._no_marker):
                grace = self.config.gc_grace if gc_grace is None else gc_grace
                # An empty root seen moments ago is not asked about again before creating: the
                # conditional PUT and the read-back settle a concurrent creator.
                seen = self._empty_at
                recent = seen is not None and time.monotonic() - seen < EMPTY_TRUSTED
                self._marker = self._load_marker(create, grace, chunker, compression, known_empty=recent)
                # A store not created yet has no paths to read either: reads need not ask again.
                self._no_marker = self._marker is None
            return self._marker

    def reload_marker(self) -> Marker | None:
        """Read the marker from the bucket again (after ``cas-store upgrade`` rewrote it)."""
        with self._marker_lock:
            self._marker, self._no_marker = None, False
            self._remembered = None
        return self.marker()

    def chunker(self) -> Chunker:
        """The chunker every writer of this store must cut with (the marker's)."""
        marker = self.marker(create=True)
        assert marker is not None
        return marker.chunker_spec.build()

    def _load_marker(
        self,
        create: bool,
        gc_grace: float,
        chunker: ChunkerSpec | None,
        compression: str | None,
        known_empty: bool = False,
    ) -> Marker | None:
        where = f"{self.root.uri} ({self.objects.endpoint})"
        key = self.root.marker_key()
        opening = f"opening the store {self.root.uri}"
        if known_empty and create:
            return self._create_marker(gc_grace, chunker, compression, where)
        try:
            found = self.objects.run(opening, lambda: self.objects.get(key))
        except StoreOfflineError:
            cached = self.cache.mirror.get_marker(self.location)
            if cached is None or create:
                raise
            return self._accept(Marker.decode(cached, where), cached)
        if found is not None:
            return self._accept(Marker.decode(found[0], where), found[0])
        occupant = self._first_object()
        if occupant is not None:
            # Either another writer created the store since our GET, or the prefix is foreign.
            found = self.objects.run(opening, lambda: self.objects.get(key))
            if found is not None:
                return self._accept(Marker.decode(found[0], where), found[0])
            raise IncompatibleStoreError(
                f"s3://{self.root.bucket}/{self.root.key()} holds objects but no cas_store format "
                f"marker (e.g. {occupant!r}), so it is not a cas_store store: point the root (or the "
                "path) at a store root, or at an empty prefix to create one"
            )
        self._empty_at = time.monotonic()
        if not create:
            return None
        return self._create_marker(gc_grace, chunker, compression, where)

    def _create_marker(
        self, gc_grace: float, chunker: ChunkerSpec | None, compression: str | None, where: str
    ) -> Marker:
        key = self.root.marker_key()
        opening = f"opening the store {self.root.uri}"
        if chunker is None:
            chunker = configured_chunker(self.config.chunker, self.config.chunk_size).spec()
        else:
            self._check_chunker(chunker, "is to cut")
        marker = Marker.new(
            self.config.hash_algorithm or DEFAULT_ALGORITHM,
            chunker,
            gc_grace,
            f"cas_store {__version__}",
            parse_compression(compression or self.config.compression or "zstd"),
        )
        body = marker.encode()
        self.objects.run(
            f"creating the store {self.root.uri}",
            lambda: self.objects.put(key, body, if_absent=True, content_type="application/json"),
        )
        # Read back: on servers that ignore If-None-Match the last concurrent creator wins,
        # and everyone must then use what is really there.
        found = self.objects.run(opening, lambda: self.objects.get(key))
        if found is None:
            raise IncompatibleStoreError(f"the marker of {where} vanished right after it was written")
        accepted = self._accept(Marker.decode(found[0], where), found[0])
        self.created = accepted.store_id == marker.store_id
        self._created_at = time.monotonic()
        return accepted

    @property
    def is_new(self) -> bool:
        """This object created the store less than :data:`NEW_STORE_WINDOW` ago.

        A blob can then be in the bucket only if this process or a concurrent writer put it
        there: a writer skips the HEAD that asks, and the conditional PUT settles the rare
        concurrent case (a redundant upload at worst, never a wrong entry). Bounded in time,
        so that a long-lived creator does not re-upload what other writers stored later.
        """
        return self.created and time.monotonic() - self._created_at < NEW_STORE_WINDOW

    def _accept(self, marker: Marker, raw: bytes) -> Marker:
        wanted = self.config.hash_algorithm
        if wanted is not None and wanted != marker.hash_algorithm:
            raise IncompatibleStoreError(
                f"the store {self.root.uri} hashes with {marker.hash_algorithm!r} but the "
                f"configuration asks for {wanted!r}: drop hash_algorithm from the configuration "
                "or use a new root for the other algorithm"
            )
        self._check_chunker(marker.chunker_spec, "cuts")
        self._check_compression(marker)
        with self._best_effort("mirror the store's marker"):
            self.cache.mirror.put_marker(self.location, raw)
        return marker

    def _check_compression(self, marker: Marker) -> None:
        """Refuse a configured ``compression`` that is not the store's (the marker's)."""
        if self.config.compression is None:
            return
        wanted = parse_compression(self.config.compression)
        if wanted != marker.compression:
            have = "no compression" if marker.compression is None else marker.compression.describe()
            raise IncompatibleStoreError(
                f"the store {self.root.uri} stores its chunks with {have} (bucket format version "
                f"{marker.version}) but the configuration asks for compression "
                f"{self.config.compression!r}: compression is chosen when a store is created; drop "
                "compression from the configuration or use a new root"
            )

    @property
    def compression(self) -> Compression | None:
        """How writers of this store encode chunks (the marker's; None: every blob raw)."""
        marker = self.marker(create=True)
        assert marker is not None
        return marker.compression

    def _check_chunker(self, spec: ChunkerSpec, verb: str) -> None:
        """Refuse a store chunker that the configuration's ``chunker``/``chunk_size`` contradict."""
        wanted_size = self.config.chunk_size
        wanted_chunker = self.config.chunker or ("fixed" if wanted_size is not None else None)
        if wanted_chunker is not None and wanted_chunker != spec.name:
            raise IncompatibleStoreError(
                f"the store {self.root.uri} {verb} files with the chunker {spec.name!r} "
                f"({dict(spec.params)}) but the configuration asks for {wanted_chunker!r}"
                f"{f' chunks of {wanted_size} bytes' if wanted_size is not None else ''}: drop "
                "chunker and chunk_size from the configuration (identical files would otherwise "
                "stop deduplicating) or use a new root"
            )
        declared = spec.params.get("size") if spec.name == "fixed" else None
        if wanted_size is not None and wanted_size != declared:
            raise IncompatibleStoreError(
                f"the store {self.root.uri} {verb} files into chunks of {declared} bytes but "
                f"the configuration asks for {wanted_size}: drop chunk_size from the configuration "
                "(identical files would otherwise stop deduplicating) or use a new root"
            )

    def _first_object(self) -> str | None:
        """The key of some object under the root, or None if the prefix is empty."""
        prefix = self.root.key() + "/" if self.root.prefix else ""
        page = self.objects.run(
            f"checking what s3://{self.root.bucket}/{prefix} holds",
            lambda: self.objects.list_page(prefix, max_keys=1),
        )
        return page.objects[0].key if page.objects else None

    # -- the memo of blobs known to be in the bucket (gc-protocol.md, W1 and W2) -----------

    def blob_proof(self, key: str) -> float | None:
        """When the blob at ``key`` was proven present, if that proof is still trusted.

        Rule W2: a memo row proves the blob while ``0 <= now - proof < min(blob_memo_ttl, V)``.
        """
        memo = self.blob_memo(key)
        return None if memo is None else memo[0]

    def blob_memo(self, key: str) -> tuple[float, int | None] | None:
        """:meth:`blob_proof`, with the blob's length when the memo knows it."""
        try:
            memo = self.cache.mirror.blob_memo(self.id, key)
        except CacheError as exc:
            log.warning("could not read the blob memo in the local cache: %s", exc)
            return None
        trusted = self.config.blob_memo_ttl
        gc = self.gc
        if gc is not None:
            trusted = min(trusted, gc.validity)
        if memo is None or not 0 <= self.clock() - memo[0] < trusted:
            return None
        return memo

    def remember_blob(self, key: str, proven_at: float, stored: int | None = None) -> None:
        """Record a proof: ``proven_at`` is when the request that proved the blob was sent;
        ``stored``, if known, the length of its object."""
        with self._best_effort("remember a stored blob"):
            self.cache.mirror.remember_blob(self.id, key, proven_at, stored)

    def forget_blob(self, key: str) -> None:
        with self._best_effort("forget a missing blob"):
            self.cache.mirror.forget_blob(self.id, key)

    def has_cached(self, algorithm: str, digest: str) -> bool:
        """Whether the local cache holds the blob (a cache fault answers False)."""
        try:
            return self.cache.has_blob(algorithm, digest)
        except CacheError:
            return False

    def keep_in_cache(self, algorithm: str, digest: str, data: memoryview) -> None:
        """Cache a chunk being written, if the cache can take it (a fault never fails a write)."""
        with self._best_effort("cache a written chunk"):
            self.cache.put_blob(algorithm, digest, data)

    @contextlib.contextmanager
    def _best_effort(self, action: str) -> Iterator[None]:
        """Local bookkeeping that must not fail an operation the bucket already carried out."""
        try:
            yield
        except CacheError as exc:
            log.warning("could not %s in the local cache: %s", action, exc)

    # -- resolving paths -------------------------------------------------------------------

    def resolve(self, rel: str) -> Record | None:
        """The current entry of ``rel``: from the bucket when reachable, else from the mirror.

        Raises :class:`StoreOfflineError` when the bucket is unreachable and the mirror has
        no answer (the path may exist; this machine just has not seen it). With
        ``entry_ttl``, an entry the bucket confirmed that recently is answered from the mirror.
        """
        if self.config.entry_ttl > 0:
            fresh = self.mirrored(rel, max_age=self.config.entry_ttl)
            if fresh is not None:
                return fresh
        try:
            self.marker()
            slow = self._slow_answer
            if slow is not None and not slow.done():
                # An earlier request has waited past MIRROR_PATIENCE and is still unanswered.
                mirrored = self.mirrored(rel)
                if mirrored is not None:
                    return mirrored
            answer = self.manifest.get_soon(rel)
            try:
                record = answer.result(timeout=MIRROR_PATIENCE)
            except concurrent.futures.TimeoutError:
                self._slow_answer = answer
                mirrored = self.mirrored(rel)
                if mirrored is not None:
                    log.info("S3 is slow to answer for %s: serving the entry mirrored here", rel)
                    return mirrored
                record = answer.result()
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

    def stat(self, rel: str) -> Record | None:
        """The entry of file ``rel``, or None if ``rel`` is a directory (the root is one).

        Raises ``FileNotFoundError`` if it is neither. Offline, a directory is one the
        mirror holds paths below.
        """
        if not rel:
            self.marker()  # surfaces a missing bucket or an incompatible store
            return None
        ttl = self.config.entry_ttl
        if ttl > 0:
            fresh = self.mirrored(rel, max_age=ttl)
            if fresh is not None:
                return fresh
            if self._fresh_dir(rel, ttl):
                return None  # a directory: paths below it were confirmed within entry_ttl
        try:
            record = self.resolve(rel)
        except StoreOfflineError:
            if self.cache.mirror.paths_under(self.id, rel, limit=1):
                return None
            raise
        if record is not None:
            return record
        if self.manifest.dir_exists(rel):
            return None
        raise FileNotFoundError(f"no such file or directory: {self.where(rel)}")

    def _fresh_dir(self, rel: str, ttl: float) -> bool:
        try:
            return self.cache.mirror.fresh_under(self.id, rel, ttl)
        except CacheError as exc:
            log.debug("could not read the mirror: %s", exc)
            return False

    def is_dir(self, rel: str) -> bool:
        """True if files lie below ``rel`` (asks the bucket)."""
        return self.manifest.dir_exists(rel)

    def mirrored(self, rel: str, max_age: float | None = None) -> Record | None:
        row = self.cache.mirror.get_entry(self.id, rel, max_age)
        if row is None:
            return None
        data, etag, modified = row
        return Record(rel, Entry.decode(data, self.where(rel)), etag, _from_timestamp(modified))

    def remember(self, record: Record) -> None:
        """Mirror an entry the bucket confirmed (best-effort: the mirror serves offline reads)."""
        with self._best_effort("mirror an entry"):
            self.cache.mirror.put_entry(
                self.id, record.rel, record.entry.encode(), record.etag, record.modified.timestamp()
            )

    def records(self, listed: list[Listed]) -> list[Record]:
        """Entries of listed manifest objects: from the mirror where its ETag is current."""
        found: dict[str, Record] = {}
        missing = []
        for item in listed:
            row = self.cache.mirror.get_entry(self.id, item.rel)
            if row is not None and item.etag and row[1] == item.etag:
                found[item.rel] = Record(item.rel, Entry.decode(row[0], item.rel), item.etag, item.modified)
            else:
                missing.append(item.rel)
        rows = []
        for rel, record in self.manifest.get_many(missing).items():
            if record is not None:  # deleted between the listing and the GET: skip it
                found[rel] = record
                rows.append((rel, record.entry.encode(), record.etag, record.modified.timestamp()))
        self.cache.mirror.put_entries(self.id, rows)
        return [found[i.rel] for i in listed if i.rel in found]

    # -- listing ---------------------------------------------------------------------------

    def list_dir(self, rel: str) -> Listing:
        """The files directly in directory ``rel`` (with entries) and its subdirectories, in
        path order. Empty if there is no such directory.

        Offline, answers from the mirror (what this machine has seen). Online, forgets
        mirrored files the bucket no longer lists.
        """
        listed = self._list_dir_online(rel)
        if listed is None:
            return self._list_dir_offline(rel)
        return Listing(self.records(listed[0]), listed[1])

    def list_names(self, rel: str) -> tuple[list[str], list[str]]:
        """As :meth:`list_dir`, paths only: no entry is read (the listing alone answers)."""
        listed = self._list_dir_online(rel)
        if listed is None:
            offline = self._list_dir_offline(rel)
            return [r.rel for r in offline.files], offline.dirs
        return [i.rel for i in listed[0]], listed[1]

    def _list_dir_online(self, rel: str) -> tuple[list[Listed], list[str]] | None:
        self.marker()
        try:
            listed, dirs = self.manifest.list_dir(rel)
        except StoreOfflineError:
            return None
        start = len(rel) + 1 if rel else 0
        present = {item.rel for item in listed}
        gone = [
            r
            for r in self.cache.mirror.paths_under(self.id, rel)
            if "/" not in r[start:] and r not in present
        ]
        with self._best_effort("prune the mirror"):
            self.cache.mirror.delete_entries(self.id, gone)
        return listed, dirs

    def _list_dir_offline(self, rel: str) -> Listing:
        start = len(rel) + 1 if rel else 0
        files: list[Record] = []
        dirs: set[str] = set()
        for child, data, etag, modified in self.cache.mirror.entries_under(self.id, rel):
            tail = child[start:]
            if "/" in tail:
                dirs.add((rel + "/" if rel else "") + tail.split("/", 1)[0])
            else:
                files.append(Record(child, Entry.decode(data, child), etag, _from_timestamp(modified)))
        return Listing(files, sorted(dirs))

    def list_tree(
        self, rel: str, detail: Callable[[str], bool] = lambda _: False
    ) -> list[tuple[str, Record | None]]:
        """Every file below directory ``rel`` (or ``rel`` itself if it is a file), in path order.

        Records are fetched for the paths ``detail`` selects (None for the others). Offline,
        answers from the mirror, with records; raises :class:`StoreOfflineError` if the
        mirror knows nothing below ``rel``.
        """
        self.marker()
        try:
            listed = self.manifest.list_tree(rel)
        except StoreOfflineError as exc:
            rows = self.cache.mirror.entries_under(self.id, rel)
            items: list[tuple[str, Record | None]] = [
                (r, Record(r, Entry.decode(d, r), e, _from_timestamp(m))) for r, d, e, m in rows
            ]
            if not items and rel:
                record = self.mirrored(rel)
                if record is None:
                    raise self.objects.offline_error(
                        f"listing {self.where(rel)} (not in the local mirror)"
                    ) from exc
                items = [(rel, record)]
            return items
        if not listed:
            record = self.resolve(rel) if rel else None  # a file lists as itself
            return [(rel, record)] if record is not None else []
        fetched = {r.rel: r for r in self.records([i for i in listed if detail(i.rel)])}
        return [(i.rel, fetched.get(i.rel)) for i in listed if not detail(i.rel) or i.rel in fetched]

    # -- writing ---------------------------------------------------------------------------

    def open_write(
        self,
        rel: str,
        display_path: str,
        *,
        exclusive: bool = False,
        on_written: writer.WriteObserver | None = None,
    ) -> WriteFile:
        """A file that publishes ``rel`` when closed (see :mod:`cas_store.writer`), then
        hands ``on_written`` a :class:`~cas_store.writer.WriteReport`.

        With ``exclusive``, ``rel`` must not exist: checked now, and again by a conditional
        PUT of the entry at close (race-free where the server honours ``If-None-Match``).
        """
        if exclusive and self.resolve(rel) is not None:
            raise FileExistsError(f"{self.where(rel)} exists")
        return writer.open_write(self, rel, display_path, exclusive=exclusive, on_written=on_written)

    def publish(self, rel: str, entry: Entry, *, exclusive: bool = False) -> Record:
        """Make ``rel`` hold ``entry``. The caller guarantees its blobs are durable and, on a
        version 2 store, follows rule W: :func:`cas_store.writer.publish` does both."""
        record = self.manifest.put(rel, entry, exclusive=exclusive)
        self.remember(record)
        return record

    def copy(self, src: str, dst: str) -> None:
        """Make ``dst`` hold what ``src`` holds, in this store: no bytes move."""
        record = self.resolve(src) if src else None
        if record is None:
            raise FileNotFoundError(f"no such file: {self.where(src)}")
        self.root.manifest_key(dst)
        self.marker(create=True)
        writer.publish(self, dst, record.entry, {})  # rule W: a copy is an entry PUT too

    def remove(self, rels: list[str]) -> None:
        """Delete the entries of ``rels`` (missing ones are fine). Blobs stay for the collector."""
        for rel in rels:
            self.root.manifest_key(rel)
        self.manifest.delete(rels)
        self.cache.mirror.delete_entries(self.id, rels)

    # -- reading ---------------------------------------------------------------------------

    def open_read(
        self, record: Record, display_path: str, read_ahead: str | None = None
    ) -> io.BufferedIOBase:
        """A verified reader of ``record``'s content (see :mod:`cas_store.reader`); opening
        fetches nothing, reads fetch what they cover and, by ``read_ahead``, more."""
        return reader.open_read(self, record, display_path, read_ahead)

    @property
    def downloads(self) -> reader.Downloads:
        """The store's download pipeline, bounded by bytes in flight (created on first use)."""
        if self._downloads is None:
            with self._marker_lock:
                if self._downloads is None:
                    # As many bytes in flight as max_concurrency fixed 8 MiB chunks: more, smaller
                    # chunks (content-defined chunking) download more at a time in the same memory.
                    budget = self.config.max_concurrency * reader.DOWNLOAD_PART
                    self._downloads = reader.Downloads(self, budget)
        return self._downloads


def _from_timestamp(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)
