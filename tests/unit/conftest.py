"""Unit-test fixtures: stores over the in-memory backend (no server, no network)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cas_store.backend import MemoryObjectStore, ObjectStore
from cas_store.cache import LocalCache
from cas_store.config import MiB, StoreConfig
from cas_store.layout import Root
from cas_store.store import Store

StoreFactory = Callable[..., Store]


@pytest.fixture
def memory() -> MemoryObjectStore:
    return MemoryObjectStore("bkt")


@pytest.fixture
def make_store(memory: MemoryObjectStore, tmp_path: Path) -> StoreFactory:
    """A Store at ``s3cas://bkt/root`` over ``memory`` (or ``objects``), 1 MiB chunks by default."""

    def factory(
        objects: ObjectStore | None = None,
        cache: str = "cache",
        clock: Callable[[], float] | None = None,
        **config: Any,
    ) -> Store:
        config.setdefault("chunk_size", 1 * MiB)
        settings = StoreConfig(cache_dir=str(tmp_path / cache), **config)
        local = LocalCache(settings.resolved_cache_dir, settings.cache_size, settings.cache_eviction_policy)
        kwargs = {"clock": clock} if clock is not None else {}
        return Store(Root("bkt", "root"), settings, objects or memory, local, **kwargs)

    return factory
