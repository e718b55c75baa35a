"""Bring files into the local cache, so that they read at disk speed and with S3 away.

Every chunk of the given files (directories: every file below them) that the cache lacks
is downloaded through the read path (verified against its digest before it enters the
cache, docs/design.md C1), ``max_concurrency`` at a time. Resolving the files mirrors
their entries, which offline reads need too (O5).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from cas_store import reader
from cas_store.errors import BlobError
from cas_store.format import Chunk
from cas_store.maintenance._common import Progress
from cas_store.store import Store

if TYPE_CHECKING:
    from cas_store.filesystem import CASFileSystem


@dataclass
class PrefetchReport:
    """What :func:`prefetch` did. Sizes are in bytes; chunks are counted once each."""

    files: int = 0
    #: Files held inside their entry (nothing to download; the mirror keeps them).
    inline_files: int = 0
    chunks: int = 0
    #: Chunks the cache already held, and those downloaded now.
    cached_chunks: int = 0
    cached_bytes: int = 0
    downloaded_chunks: int = 0
    downloaded_bytes: int = 0
    #: Chunks the cache does not hold afterwards though they were fetched (the cache is too
    #: small for everything, or cannot be written): those files will need S3 again.
    uncached_chunks: int = 0
    #: Files whose blobs are missing from the bucket or corrupt there: path -> message.
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.uncached_chunks

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["ok"] = self.ok
        return doc


@dataclass
class _Wanted:
    store: Store
    algorithm: str
    chunk: Chunk
    paths: list[str]


def _locate(target: CASFileSystem | Store, path: str) -> tuple[Store, str]:
    if isinstance(target, Store):
        return target, path
    return target.locate(path)


def prefetch(
    target: CASFileSystem | Store,
    paths: Iterable[str],
    progress: Progress | None = None,
) -> PrefetchReport:
    """Cache every chunk of ``paths``: ``s3cas://`` URLs with a file system, paths relative to
    the root with a :class:`Store`. The store root (``""``) means every file.

    Raises ``FileNotFoundError`` for a path with nothing at or below it, and the store's
    errors (offline, credentials, ...) as soon as they happen; a file whose blob is missing
    or corrupt in the bucket goes into :attr:`PrefetchReport.failed` and the rest go on.
    """
    report = PrefetchReport()
    wanted: dict[tuple[str, str], _Wanted] = {}
    for path in paths:
        store, rel = _locate(target, path)
        items = store.list_tree(rel, detail=lambda _: True)  # mirrors every entry it reads
        if not items and rel:
            raise FileNotFoundError(f"no such file or directory: {store.where(rel)}")
        for item_rel, record in items:
            if record is None:
                continue
            report.files += 1
            entry = record.entry
            if entry.inline is not None:
                report.inline_files += 1
            where = store.where(item_rel)
            for chunk in entry.chunks:
                known = wanted.get((entry.algorithm, chunk.digest))
                if known is None:
                    wanted[(entry.algorithm, chunk.digest)] = _Wanted(store, entry.algorithm, chunk, [where])
                elif where not in known.paths:
                    known.paths.append(where)
    report.chunks = len(wanted)

    missing: list[_Wanted] = []
    for w in wanted.values():
        if w.store.cache.has_blob(w.algorithm, w.chunk.digest):
            report.cached_chunks += 1
            report.cached_bytes += w.chunk.size
        else:
            missing.append(w)
    total = sum(w.chunk.size for w in missing)
    lock = threading.Lock()
    failed: set[tuple[str, str]] = set()

    def fetch(w: _Wanted) -> None:
        try:
            reader.fetch(w.store, w.algorithm, w.chunk).close()
        except BlobError as exc:
            with lock:
                failed.add((w.algorithm, w.chunk.digest))
                for path in w.paths:
                    report.failed.setdefault(path, str(exc))
            return
        with lock:
            report.downloaded_chunks += 1
            report.downloaded_bytes += w.chunk.size
            if progress is not None:
                progress("downloading blobs", report.downloaded_bytes, total)

    if missing:
        concurrency = max(w.store.config.max_concurrency for w in missing)
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            futures = [pool.submit(fetch, w) for w in missing]
            for future in concurrent.futures.as_completed(futures):
                if future.exception() is not None:
                    for other in futures:
                        other.cancel()
        for future in futures:
            if not future.cancelled():
                future.result()  # the first failure (offline, S3 error) raises
    report.uncached_chunks = sum(
        1
        for key, w in wanted.items()
        if key not in failed and not w.store.cache.has_blob(w.algorithm, w.chunk.digest)
    )
    return report
