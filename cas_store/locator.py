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
from cas_store.errors import StoreOfflineError
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
            # As s3fs: a path without a bucket names nothing that could exist.
            raise FileNotFoundError(f"{path!r} names no bucket; use s3cas://<bucket>/<path>")
        root = self._discover(segments)
        return self.store(root), root.relative(path)

    def _discover(self, segments: list[str]) -> Root:
        """The root of the path ``segments``: the deepest ancestor (or the path itself,
        a directory) holding a marker. Each directory's answer is remembered, so another
        path in a known directory costs one HEAD at most (is that path itself a root?)."""
        path = tuple(segments)
        bucket, prefixes = segments[0], ["/".join(segments[1:i]) for i in range(1, len(segments) + 1)]
        with self._lock:
            exact = self._found.get(path)
            parent = self._found.get(path[:-1]) if len(path) > 1 else None
        if exact is not None:
            return exact
        remembered = set(self.cache.mirror.marker_roots(f"{self._bucket(bucket).endpoint}|{bucket}"))
        unknown = prefixes[-1:] if parent is not None else prefixes
        marked = {p for p in unknown if Root(bucket, p).path in remembered} or self._probe(bucket, unknown)
        if parent is None:
            parent = Root(bucket, max((p for p in marked if p != prefixes[-1]), key=len, default=""))
        root = Root(bucket, prefixes[-1]) if prefixes[-1] in marked else parent
        with self._lock:
            if len(self._found) > _MAX_REMEMBERED:
                self._found.clear()
            self._found[path] = root
            if len(path) > 1:
                self._found[path[:-1]] = parent
        return root

    def _probe(self, bucket: str, prefixes: list[str]) -> set[str]:
        """Those of ``prefixes`` that hold a marker (concurrent HEADs). Offline: none, so the
        bucket-root store answers from the mirror, or raises the offline error."""
        objects = self._bucket(bucket)
        keys = [f"{p}/{MARKER_NAME}" if p else MARKER_NAME for p in prefixes]
        try:
            heads = objects.run(
                f"finding the store of s3cas://{bucket}/{prefixes[-1]}",
                lambda: gather_limited(8, [objects.head(k) for k in keys]),
            )
        except StoreOfflineError:
            return set()
        return {p for p, head in zip(prefixes, heads, strict=True) if head is not None}
