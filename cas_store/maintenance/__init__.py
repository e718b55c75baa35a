"""Maintenance of stores and of the local cache: the library behind the ``cas-store`` CLI.

* :func:`usage` / :func:`usage_of` -- what a store (or a path in it) holds: entries,
  logical and stored bytes, deduplication, unreferenced blobs, what is cached.
* :func:`verify` -- every blob an entry names is in the bucket with its size; ``deep``:
  with its content.
* :func:`prefetch` -- bring files into the local cache, for fast and offline reads.
* :func:`cache_info`, :func:`prune_cache`, :func:`clear_cache` -- the local blob cache.
* :func:`collect` -- the collector (docs/gc.md): the only code that deletes blobs.
* :func:`init_store`, :func:`upgrade_store` -- create a store with chosen settings; convert
  a format 1 store to format 2.
* :func:`zenml_artifact_store`, :func:`zenml_run`, :func:`zenml_artifact`,
  :func:`run_usage` -- ZenML's artifact stores, runs and artifacts, and what a run added
  (:mod:`cas_store.maintenance.zenml_runs`; imports zenml only when called).

Each returns a dataclass with a ``to_dict()`` (JSON-ready). Only :func:`collect` deletes
anything in the bucket (docs/design.md O3); the others read, or write a marker.
"""

from cas_store.errors import StoreNotFoundError
from cas_store.maintenance._common import Progress
from cas_store.maintenance.cache import CacheInfo, PruneResult, cache_info, clear_cache, prune_cache
from cas_store.maintenance.gc import GCReport, RunStatus, collect
from cas_store.maintenance.lifecycle import StoreInfo, init_store, upgrade_store
from cas_store.maintenance.prefetch import PrefetchReport, prefetch
from cas_store.maintenance.usage import PathUsage, Usage, usage, usage_of
from cas_store.maintenance.verify import CorruptBlob, VerifyReport, select_sample, verify
from cas_store.maintenance.zenml_runs import (
    ArtifactUsage,
    RunUsage,
    ZenMLArtifact,
    ZenMLArtifactStore,
    ZenMLLookupError,
    ZenMLRun,
    artifact_store_of,
    run_usage,
    split_by_store,
    zenml_artifact,
    zenml_artifact_store,
    zenml_run,
)

__all__ = [
    "ArtifactUsage",
    "CacheInfo",
    "CorruptBlob",
    "GCReport",
    "PathUsage",
    "PrefetchReport",
    "Progress",
    "PruneResult",
    "RunStatus",
    "RunUsage",
    "StoreInfo",
    "StoreNotFoundError",
    "Usage",
    "VerifyReport",
    "ZenMLArtifact",
    "ZenMLArtifactStore",
    "ZenMLLookupError",
    "ZenMLRun",
    "artifact_store_of",
    "cache_info",
    "clear_cache",
    "collect",
    "init_store",
    "prefetch",
    "prune_cache",
    "run_usage",
    "select_sample",
    "split_by_store",
    "upgrade_store",
    "usage",
    "usage_of",
    "verify",
    "zenml_artifact",
    "zenml_artifact_store",
    "zenml_run",
]
