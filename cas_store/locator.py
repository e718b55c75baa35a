"""From a logical path to its :class:`Store`: the store roots of one connection and cache.

With a configured root, every path must lie below it. Without one, a path finds its
store by itself, as an ``s3://`` URL does: its root is the deepest ancestor prefix that
holds a format marker (probed concurrently, once: the answer is remembered per process
and in the local mirror); a path under no marker belongs to a store at the bucket root.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from cas_store.backend.base import ObjectStore, gather_limited
from cas_store.cache import LocalCache
from cas_store.config import StoreConfig
from cas_store.errors import InvalidPathError, StoreOfflineError
from cas_store.layout import MARKER_NAME, Root, split_path
from cas_store.store import Store

_MAX_REMEMBERED = 10_000


class StoreLocator:
    """Finds and keeps the :class:`Store` of each root. Thread-safe."""

    def __init__(
        self,
        config: StoreConfig,
        bucket: Callable[[str], ObjectStore],
        cache: LocalCache,
        root: Root | None = None,
    ) -> None:
        self.config = config
        self._bucket = bucket
        self.cache = cache
        self.root = root
        self._stores: dict[Root, Store] = {}
        self._found: dict[tuple[str, ...], Root] = {}  # parent segments -> discovered root
        self._lock = threading.Lock()

    def store(self, root: Root) -> Store:
        with self._lock:
            store = self._stores.get(root)
            if store is None:
                store = self._stores[root] = Store(root, self.config, self._bucket(root.bucket), self.cache)
            return store

    def locate(self, path: str) -> tuple[Store, str]:
        """The store of ``path`` (``bucket/prefix/rel``, no scheme) and the path relative to it."""
        if self.root is not None:
            return self.store(self.root), self.root.relative(path)
        segments = split_path(path)
        if not segments:
            raise InvalidPathError(f"{path!r} names no bucket; use s3cas://<bucket>/<path>")
        root = self._discover(segments)
        return self.store(root), root.relative(path)

    def _discover(self, segments: list[str]) -> Root:
        # Every ancestor of the path may be a root, the path itself too (a directory).
        parents = tuple(segments)
        with self._lock:
            known = self._found.get(parents) or self._found.get(parents[:-1])
        if known is not None:
            return known
        bucket = segments[0]
        candidates = ["/".join(segments[1:i]) for i in range(1, len(segments) + 1)]
        endpoint = self._bucket(bucket).endpoint
        remembered = set(self.cache.mirror.marker_roots(f"{endpoint}|{bucket}"))
        found = next((c for c in reversed(candidates) if Root(bucket, c).path in remembered), None)
        if found is None:
            found = self._probe(bucket, candidates)
        root = Root(bucket, found)
        # The answer holds for the path's whole directory, unless the path itself is the root.
        key = parents if found == candidates[-1] or len(parents) == 1 else parents[:-1]
        with self._lock:
            if len(self._found) > _MAX_REMEMBERED:
                self._found.clear()
            self._found[key] = root
        return root

    def _probe(self, bucket: str, candidates: list[str]) -> str:
        """The deepest candidate prefix holding a marker ('' if none: the bucket root)."""
        objects = self._bucket(bucket)
        keys = [f"{c}/{MARKER_NAME}" if c else MARKER_NAME for c in candidates]
        try:
            heads = objects.run(
                f"finding the store of s3cas://{bucket}/{candidates[-1]}",
                lambda: gather_limited(8, [objects.head(k) for k in keys]),
            )
        except StoreOfflineError:
            return ""  # the bucket-root store answers from the mirror, or raises the offline error
        return next(
            (c for c, h in zip(reversed(candidates), reversed(heads), strict=True) if h is not None), ""
        )
