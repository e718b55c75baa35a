"""Maintenance of stores and of the local cache: the library behind the ``cas-store`` CLI.

* :func:`usage` / :func:`usage_of` -- what a store (or a path in it) holds: entries,
  logical and stored bytes, deduplication, unreferenced blobs, what is cached.
* :func:`verify` -- every blob an entry names is in the bucket with its size; ``deep``:
  with its content.
* :func:`prefetch` -- bring files into the local cache, for fast and offline reads.
* :func:`cache_info`, :func:`prune_cache`, :func:`clear_cache` -- the local blob cache.

Each returns a dataclass with a ``to_dict()`` (JSON-ready). They read; none of them
deletes anything in the bucket (only the collector will, docs/design.md O3).
"""

from cas_store.errors import StoreNotFoundError
from cas_store.maintenance._common import Progress
from cas_store.maintenance.cache import CacheInfo, PruneResult, cache_info, clear_cache, prune_cache
from cas_store.maintenance.prefetch import PrefetchReport, prefetch
from cas_store.maintenance.usage import PathUsage, Usage, usage, usage_of
from cas_store.maintenance.verify import CorruptBlob, VerifyReport, select_sample, verify

__all__ = [
    "CacheInfo",
    "CorruptBlob",
    "PathUsage",
    "PrefetchReport",
    "Progress",
    "PruneResult",
    "StoreNotFoundError",
    "Usage",
    "VerifyReport",
    "cache_info",
    "clear_cache",
    "prefetch",
    "prune_cache",
    "select_sample",
    "usage",
    "usage_of",
    "verify",
]
