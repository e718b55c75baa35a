"""The local cache: what it holds, pruning it to a size, emptying it.

The cache is shared by every store (blobs are keyed by algorithm and digest), so these
take a :class:`~cas_store.cache.LocalCache`, not a store. Only the blob cache is pruned or
cleared; the mirror (the entries this machine has seen, which offline reads and listings
need, and the memo of blobs known to be in the bucket) is kept: it is small. Removing the
whole cache directory while nothing uses it is safe too (docs/design.md, C4).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

from cas_store.cache import LocalCache


@dataclass(frozen=True)
class CacheInfo:
    """The blob cache of one cache directory. Sizes are in bytes."""

    directory: str
    #: Blobs cached, and the sum of their files' sizes.
    blobs: int
    blob_bytes: int
    #: What diskcache bounds by ``size_limit``: the blob files plus its database.
    size_bytes: int
    size_limit: int
    eviction_policy: str
    #: The mirror database (entries seen, blob memo), which pruning and clearing keep.
    mirror_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PruneResult:
    removed_blobs: int
    size_before: int
    size_after: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mirror_bytes(cache: LocalCache) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        path = cache.directory / f"mirror.sqlite3{suffix}"
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


def cache_info(cache: LocalCache) -> CacheInfo:
    """Size and settings of the blob cache. ``size_limit`` and ``eviction_policy`` are those
    the cache was opened with (each process applies its own ``cache_size`` and policy)."""
    blobs, blob_bytes, size_bytes = cache.stats()
    return CacheInfo(
        directory=str(cache.directory),
        blobs=blobs,
        blob_bytes=blob_bytes,
        size_bytes=size_bytes,
        size_limit=int(cache.blobs.size_limit),
        eviction_policy=str(cache.blobs.eviction_policy),
        mirror_bytes=_mirror_bytes(cache),
    )


def prune_cache(cache: LocalCache, to: int) -> PruneResult:
    """Evict blobs until the cache's size is at most ``to`` bytes (:meth:`LocalCache.prune`).

    The cache keeps its ``size_limit``.
    """
    return PruneResult(*cache.prune(to))


def clear_cache(cache: LocalCache) -> int:
    """Remove every cached blob; returns how many. The mirror is kept."""
    return cache.clear()
