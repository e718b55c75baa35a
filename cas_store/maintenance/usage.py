"""How much a store holds, and how much of it is shared, unreferenced or cached.

:func:`usage` reads every entry (from the local mirror where a listing's ETag says it is
current, else from the bucket) and lists ``blobs/`` once; :func:`usage_of` reads the
entries below one path only and asks the local cache about their chunks (no blob
listing, so it also answers offline from the mirror).

Memory: a set of the blob keys the entries name (one string per distinct chunk) and the
list of entry paths a listing returns; entries themselves are processed a batch at a time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cas_store.errors import CASStoreError
from cas_store.format import Chunk
from cas_store.maintenance._common import (
    Progress,
    iter_blob_objects,
    iter_quarantine,
    iter_records,
    require_store,
)
from cas_store.store import Store


@dataclass
class Usage:
    """What one store holds. Sizes are in bytes.

    ``stored_bytes`` is what the bucket holds for content: every object under ``blobs/``
    (referenced or not) plus the inline content of entries (each inline entry counts its
    own copy: inline files are not deduplicated). It leaves out the manifest entries' own
    JSON and the marker. Three sizes tell the savings apart: ``logical_bytes`` (what the
    files hold), ``deduplicated_bytes`` (their distinct content: each shared chunk once)
    and the bucket's bytes for it, compressed where that paid (``referenced_bytes`` plus
    ``inline_bytes``).
    """

    root: str
    #: Files (manifest entries) and the sum of their sizes.
    entries: int = 0
    logical_bytes: int = 0
    #: Files small enough to live inside their entry, and their bytes.
    inline_entries: int = 0
    inline_bytes: int = 0
    #: The distinct content the files hold, uncompressed: each chunk that entries name (and
    #: the bucket holds) counted once, plus the inline bytes.
    deduplicated_bytes: int = 0
    #: Objects under ``blobs/`` and the sum of their sizes.
    blobs: int = 0
    blob_bytes: int = 0
    #: Blobs named by some entry (each counted once however many entries name it).
    referenced_blobs: int = 0
    referenced_bytes: int = 0
    #: Blobs no entry names: left by removals, overwrites and failed writes (B5); what a
    #: collector could reclaim.
    unreferenced_blobs: int = 0
    unreferenced_bytes: int = 0
    #: Distinct blobs that entries name but that are not in the bucket, neither at their key
    #: nor in the collector's quarantine (run ``verify``).
    missing_blobs: int = 0
    #: Copies the collector holds in quarantine (``gc/q/``): freed by a later collection
    #: unless a file written meanwhile names them. Not part of ``stored_bytes``.
    quarantine_blobs: int = 0
    quarantine_bytes: int = 0
    #: Entries that could not be decoded (path -> message); not counted above.
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def stored_bytes(self) -> int:
        return self.blob_bytes + self.inline_bytes

    @property
    def dedup_ratio(self) -> float:
        """``logical_bytes / deduplicated_bytes``: 2.0 means each distinct byte serves two
        files' bytes. 1.0 when nothing is stored."""
        return self.logical_bytes / self.deduplicated_bytes if self.deduplicated_bytes else 1.0

    @property
    def compression_ratio(self) -> float:
        """``deduplicated_bytes`` over what the bucket holds for them (the referenced blobs and
        the inline bytes): 3.0 means compression stored them in a third. 1.0 when nothing is
        stored, or nothing compressed."""
        held = self.referenced_bytes + self.inline_bytes
        return self.deduplicated_bytes / held if held else 1.0

    @property
    def space_ratio(self) -> float:
        """``logical_bytes / stored_bytes``: both savings together, 2.0 meaning each byte in
        the bucket serves two of the files'. Unreferenced blobs lower it until collected."""
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else 1.0

    @property
    def reclaimable_bytes(self) -> int:
        """What collections would free: the unreferenced blobs' bytes (moved to quarantine by
        the next ``cas-store gc --yes`` if older than the grace period, freed by a later one)."""
        return self.unreferenced_bytes

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.update(
            stored_bytes=self.stored_bytes,
            dedup_ratio=round(self.dedup_ratio, 4),
            compression_ratio=round(self.compression_ratio, 4),
            space_ratio=round(self.space_ratio, 4),
            reclaimable_bytes=self.reclaimable_bytes,
        )
        return doc


def usage(store: Store, progress: Progress | None = None) -> Usage:
    """Count the store's entries and blobs (one listing of each; entry GETs only for
    entries the mirror does not hold at the listed ETag).

    Raises :class:`~cas_store.maintenance.StoreNotFoundError` if the root holds no store,
    and the store's usual errors (offline, credentials, ...): the blob listing needs S3.
    """
    require_store(store)
    result = Usage(store.root.uri)
    referenced: dict[str, int] = {}  # blob key -> the chunk's size

    def unreadable(rel: str, exc: CASStoreError) -> None:
        result.unreadable[rel] = str(exc)

    listed = store.manifest.list_tree("")
    for record in iter_records(store, listed, unreadable, progress):
        entry = record.entry
        result.entries += 1
        result.logical_bytes += entry.size
        if entry.inline is not None:
            result.inline_entries += 1
            result.inline_bytes += entry.size
        for chunk in entry.chunks:
            referenced[store.blobs.key(entry.algorithm, chunk.digest)] = chunk.size
    del listed
    found: set[str] = set()
    for obj in iter_blob_objects(store, progress):
        result.blobs += 1
        result.blob_bytes += obj.size
        if obj.key in referenced:
            found.add(obj.key)
            result.referenced_blobs += 1
            result.referenced_bytes += obj.size
            result.deduplicated_bytes += referenced[obj.key]
    result.unreferenced_blobs = result.blobs - result.referenced_blobs
    result.unreferenced_bytes = result.blob_bytes - result.referenced_bytes
    quarantined: set[str] = set()
    for obj, blob_key in iter_quarantine(store, progress):
        result.quarantine_blobs += 1
        result.quarantine_bytes += obj.size
        quarantined.add(blob_key)
    result.missing_blobs = len(referenced.keys() - found - quarantined)
    result.deduplicated_bytes += result.inline_bytes
    return result


@dataclass
class PathUsage:
    """What the files at or below one path hold (``du``). Sizes are in bytes."""

    path: str
    files: int = 0
    logical_bytes: int = 0
    inline_files: int = 0
    #: Distinct chunks the files name. ``deduplicated_bytes``: their bytes plus the files'
    #: inline bytes, each shared chunk once. ``stored_bytes``: the same as the bucket holds
    #: them, compressed where that paid (the lengths their entries record). Not what removing
    #: the files would free: other paths may name the same blobs.
    chunks: int = 0
    deduplicated_bytes: int = 0
    stored_bytes: int = 0
    #: Of those chunks, how many (and how many bytes) the local cache holds. Inline files
    #: live in the mirror and count as neither.
    cached_chunks: int = 0
    cached_bytes: int = 0

    @property
    def dedup_ratio(self) -> float:
        """``logical_bytes / deduplicated_bytes`` (1.0 for no bytes)."""
        return self.logical_bytes / self.deduplicated_bytes if self.deduplicated_bytes else 1.0

    @property
    def compression_ratio(self) -> float:
        """``deduplicated_bytes / stored_bytes`` (1.0 for no bytes, or nothing compressed)."""
        return self.deduplicated_bytes / self.stored_bytes if self.stored_bytes else 1.0

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["dedup_ratio"] = round(self.dedup_ratio, 4)
        doc["compression_ratio"] = round(self.compression_ratio, 4)
        return doc


def usage_of(store: Store, rel: str) -> PathUsage:
    """:class:`PathUsage` of file ``rel``, or of every file below directory ``rel`` (the
    store root if empty).

    Offline, answers from the mirror (the entries this machine has seen). Raises
    ``FileNotFoundError`` if nothing is at or below ``rel``.
    """
    items = store.list_tree(rel, detail=lambda _: True)
    if not items and rel:
        raise FileNotFoundError(f"no such file or directory: {store.where(rel)}")
    result = PathUsage(store.where(rel))
    chunks: dict[tuple[str, str], Chunk] = {}
    for _, record in items:
        if record is None:  # deleted between listing and reading
            continue
        entry = record.entry
        result.files += 1
        result.logical_bytes += entry.size
        if entry.inline is not None:
            result.inline_files += 1
            result.stored_bytes += entry.size
            result.deduplicated_bytes += entry.size
        for chunk in entry.chunks:
            chunks[(entry.algorithm, chunk.digest)] = chunk
    result.chunks = len(chunks)
    result.deduplicated_bytes += sum(c.size for c in chunks.values())
    result.stored_bytes += sum(c.stored_size for c in chunks.values())
    for (algorithm, digest), chunk in chunks.items():
        if store.cache.has_blob(algorithm, digest):
            result.cached_chunks += 1
            result.cached_bytes += chunk.size
    return result
