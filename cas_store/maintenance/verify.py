"""Check a store against its invariants: every blob an entry names is at its key or in the
collector's quarantine (B2), with the right size and, with ``deep``, the right content (B1);
inline content matches its digest.

The check costs one listing of ``blobs/`` (not a HEAD per chunk), one listing of the
manifest and the GETs of the entries the local mirror does not hold at their listed
ETag. ``deep`` downloads blobs from the bucket and hashes them, ``max_concurrency`` at a
time, without the local cache: cached copies are neither used nor added, so a verify
never evicts what the cache holds and always looks at the bucket's bytes. In a store
with compression a blob may be shorter than its chunk (a zstd frame): one whose length
is not the one its entry records is downloaded and decoded even without ``deep``.

A blob found missing is forgotten by the local memo of proofs (as a 404 on a read does,
docs/design.md C2), so that writing its content again from this machine uploads it.
"""

from __future__ import annotations

import concurrent.futures
import math
import random
import threading
from dataclasses import dataclass, field
from typing import Any

from cas_store.compression import DecodeError, decode_into
from cas_store.errors import CASStoreError, IntegrityError, ObjectNotFoundError
from cas_store.hashing import hash_bytes, new_hasher
from cas_store.maintenance._common import (
    Progress,
    iter_blob_objects,
    iter_quarantine,
    iter_records,
    require_store,
)
from cas_store.manifest import Listed
from cas_store.store import Store


@dataclass
class CorruptBlob:
    """A blob at its key whose bytes are not what its key says (B1 broken)."""

    digest: str
    key: str
    #: What was found: a wrong size (from the listing) or a wrong hash (``deep``).
    reason: str
    #: The paths whose content includes this blob.
    paths: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    """What :func:`verify` found. ``ok`` when it found nothing wrong."""

    root: str
    deep: bool
    #: Entries read, chunk references checked, distinct blobs found at their key.
    entries: int = 0
    chunks: int = 0
    blobs: int = 0
    #: Blobs downloaded and hashed (``deep``; a sample of them with ``sample``), and bytes.
    blobs_hashed: int = 0
    bytes_hashed: int = 0
    #: Distinct blobs entries name that are in the collector's quarantine, not at their key:
    #: readers find them there (rule R, docs/gc.md) and the collection restores them.
    quarantined: int = 0
    #: Dangling paths: path -> digests of its chunks that are not in the bucket.
    missing: dict[str, list[str]] = field(default_factory=dict)
    #: digest -> the corrupt blob and the paths that use it.
    corrupt: dict[str, CorruptBlob] = field(default_factory=dict)
    #: Paths whose inline content does not hash to the entry's digest.
    bad_inline: list[str] = field(default_factory=list)
    #: Paths whose entry cannot be decoded: path -> message.
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.bad_inline or self.unreadable)

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "ok": self.ok,
            "deep": self.deep,
            "entries": self.entries,
            "chunks": self.chunks,
            "blobs": self.blobs,
            "quarantined": self.quarantined,
            "blobs_hashed": self.blobs_hashed,
            "bytes_hashed": self.bytes_hashed,
            "missing": self.missing,
            "corrupt": {
                d: {"key": c.key, "reason": c.reason, "paths": c.paths} for d, c in self.corrupt.items()
            },
            "bad_inline": self.bad_inline,
            "unreadable": self.unreadable,
        }


class _HashingSink:
    """Hashes a blob's bytes as one ranged GET delivers them, in order.

    A retried GET delivers the same offsets again from the start of the range: bytes
    already hashed are skipped (blobs are immutable, so they are the same bytes).
    """

    def __init__(self, algorithm: str) -> None:
        self.hasher = new_hasher(algorithm)
        self.size = 0

    def __call__(self, offset: int, data: bytes) -> None:
        if offset > self.size:
            raise IntegrityError(f"a download skipped bytes {self.size} to {offset}")
        skip = self.size - offset
        if skip < len(data):
            self.hasher.update(memoryview(data)[skip:])
            self.size += len(data) - skip


def _hash_blob(store: Store, algorithm: str, digest: str, size: int, stored: int) -> tuple[str, int]:
    """Download the blob (``stored`` bytes in the bucket) and return (the digest, the size)
    of the chunk it holds: one ranged GET of a raw blob, a GET and a decode of a compressed one.

    Raises :class:`DecodeError` for a compressed blob that does not decode to ``size`` bytes.
    """
    if stored == size:
        sink = _HashingSink(algorithm)
        store.blobs.download(algorithm, digest, size, max(size, 1), sink)
        return sink.hasher.hexdigest(), sink.size
    key = store.blobs.key(algorithm, digest)
    found = store.objects.run(f"downloading blob {digest}", lambda: store.objects.get(key))
    if found is None:
        raise ObjectNotFoundError(f"s3://{store.root.bucket}/{key} does not exist", key=key)
    sink = _HashingSink(algorithm)
    decode_into(found[0], size, sink)  # in pieces: the decoded chunk is never held whole
    return sink.hasher.hexdigest(), sink.size


def select_sample(candidates: list[str], percent: float, seed: int) -> list[str]:
    """A deterministic ``percent`` of ``candidates`` (at least one if any), in sorted order:
    the same candidates, percent and seed always select the same blobs."""
    if not 0 < percent <= 100:
        raise ValueError(f"sample must be a percentage in (0, 100], not {percent!r}")
    ordered = sorted(candidates)
    k = min(len(ordered), max(1, math.ceil(len(ordered) * percent / 100))) if ordered else 0
    return sorted(random.Random(seed).sample(ordered, k))


def verify(
    store: Store,
    deep: bool = False,
    sample: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check every entry of the store; see the module's docstring for what and how.

    ``sample`` (a percentage, with ``deep`` only) downloads that share of the distinct
    referenced blobs, chosen by :func:`select_sample` from ``seed``. Problems go into the
    report; the store's own errors (offline, credentials, no store at the root) raise.
    """
    if sample is not None and not deep:
        raise ValueError("sample selects the blobs a deep verify downloads: give deep=True too")
    require_store(store)
    report = VerifyReport(store.root.uri, deep)
    present = {obj.key: obj.size for obj in iter_blob_objects(store, progress)}
    in_quarantine = {blob_key for _, blob_key in iter_quarantine(store, progress)}
    quarantined: set[str] = set()
    report_lock = threading.Lock()
    # Blobs present with a possible length: key -> (algorithm, digest, size, stored), for
    # ``deep``. In a store with compression a blob shorter than its chunk is a zstd frame.
    sound: dict[str, tuple[str, str, int, int]] = {}
    marker = store.marker()
    compressed = marker is not None and marker.compression is not None
    suspect: set[str] = set()

    def unreadable(rel: str, exc: CASStoreError) -> None:
        report.unreadable[rel] = str(exc)

    listed = store.manifest.list_tree("")
    for record in iter_records(store, listed, unreadable, progress):
        entry = record.entry
        report.entries += 1
        if entry.inline is not None and hash_bytes(entry.algorithm, entry.inline) != entry.digest:
            report.bad_inline.append(record.rel)
        for chunk in entry.chunks:
            report.chunks += 1
            key = store.blobs.key(entry.algorithm, chunk.digest)
            found = present.get(key)
            if found is None and key in in_quarantine:
                quarantined.add(key)
            elif found is None:
                _add(report.missing.setdefault(record.rel, []), chunk.digest)
                store.forget_blob(key)  # so that writing the content again uploads it
            elif found > chunk.size or (found < chunk.size and not compressed) or found == 0:
                expected = f"at most {chunk.size}" if compressed else f"{chunk.size}"
                bad = report.corrupt.setdefault(
                    chunk.digest,
                    CorruptBlob(chunk.digest, key, f"{found} bytes in the bucket, {expected} expected"),
                )
                _add(bad.paths, record.rel)
            else:
                sound[key] = (entry.algorithm, chunk.digest, chunk.size, found)
                if found != chunk.stored_size:
                    # Not the length its writer recorded: a blob another writer stored compressed
                    # otherwise, or a damaged one. Only decoding it tells: it is downloaded.
                    suspect.add(key)
    report.blobs = len(sound) + len(report.corrupt)
    report.quarantined = len(quarantined)
    del present
    if not deep and not suspect:
        return report

    if not deep:
        keys = sorted(suspect)
    elif sample is None:
        keys = list(sound)
    else:
        keys = sorted(set(select_sample(list(sound), sample, seed)) | suspect)
    total = sum(sound[k][2] for k in keys)  # the bytes verified: the chunks' own
    vanished: set[str] = set()  # digests deleted between the listing and the download
    hashed_wrong: dict[str, CorruptBlob] = {}

    def check(key: str) -> None:
        algorithm, digest, size, stored = sound[key]
        try:
            got, got_size = _hash_blob(store, algorithm, digest, size, stored)
        except ObjectNotFoundError:
            store.forget_blob(key)
            with report_lock:
                vanished.add(digest)
            return
        except DecodeError as exc:
            with report_lock:
                report.blobs_hashed += 1
                hashed_wrong[digest] = CorruptBlob(digest, key, f"its {stored} bytes do not decode: {exc}")
            return
        with report_lock:
            report.blobs_hashed += 1
            report.bytes_hashed += size
            if got != digest or got_size != size:
                hashed_wrong[digest] = CorruptBlob(digest, key, f"its {got_size} bytes hash to {got}")
            if progress is not None:
                progress("downloading blobs", report.bytes_hashed, total)

    with concurrent.futures.ThreadPoolExecutor(store.config.max_concurrency) as pool:
        futures = [pool.submit(check, k) for k in keys]
    for future in futures:
        future.result()  # the first failure (offline, S3 error) raises

    if vanished or hashed_wrong:
        _attach_paths(store, listed, vanished, hashed_wrong, report)
    return report


def _attach_paths(
    store: Store,
    listed: list[Listed],
    vanished: set[str],
    hashed_wrong: dict[str, CorruptBlob],
    report: VerifyReport,
) -> None:
    """Find the paths of blobs found bad by downloading: a second pass over the entries,
    answered by the mirror (the first pass stored them at their listed ETags)."""
    report.corrupt.update(hashed_wrong)
    for record in iter_records(store, listed, lambda _rel, _exc: None):
        for chunk in record.entry.chunks:
            if chunk.digest in vanished:
                _add(report.missing.setdefault(record.rel, []), chunk.digest)
            bad = hashed_wrong.get(chunk.digest)
            if bad is not None:
                _add(bad.paths, record.rel)


def _add(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)
