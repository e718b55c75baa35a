"""In-process :class:`~cas_store.backend.base.ObjectStore` wrappers: record calls, inject faults.

:class:`HookedObjectStore` delegates every call to the store it wraps and first calls
``hook(method, key)`` (awaited on the backend's event loop), which may record the call,
raise (a crash point) or wait on an event (a deterministic interleaving).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cas_store.backend.base import ListPage, ObjectInfo, ObjectStore, PutResult, Sink

T = TypeVar("T")
Hook = Callable[[str, str], Awaitable[None] | None]


class HookedObjectStore:
    """An ObjectStore that calls ``hook(method, key)`` before each request it forwards."""

    def __init__(self, inner: ObjectStore, hook: Hook | None = None) -> None:
        self.inner = inner
        self.hook = hook
        self.calls: list[tuple[str, str]] = []
        self.bucket = inner.bucket
        self.endpoint = inner.endpoint

    @property
    def capabilities(self) -> Any:
        return self.inner.capabilities

    async def _before(self, method: str, key: str) -> None:
        self.calls.append((method, key))
        if self.hook is not None:
            result = self.hook(method, key)
            if result is not None:
                await result

    def count(self, method: str, prefix: str = "") -> int:
        return sum(1 for m, k in self.calls if m == method and k.startswith(prefix))

    async def head(self, key: str) -> ObjectInfo | None:
        await self._before("head", key)
        return await self.inner.head(key)

    async def get(self, key: str) -> tuple[bytes, ObjectInfo] | None:
        await self._before("get", key)
        return await self.inner.get(key)

    async def get_range(self, key: str, start: int, end: int, sink: Sink) -> None:
        await self._before("get_range", key)
        await self.inner.get_range(key, start, end, sink)

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> PutResult:
        await self._before("put", key)
        return await self.inner.put(
            key, data, if_absent=if_absent, if_match=if_match, content_type=content_type
        )

    async def copy(self, source: str, dest: str, *, if_absent: bool = False) -> bool:
        await self._before("copy", dest)
        return await self.inner.copy(source, dest, if_absent=if_absent)

    async def list_page(self, prefix: str, **kwargs: Any) -> ListPage:
        await self._before("list", prefix)
        return await self.inner.list_page(prefix, **kwargs)

    async def delete_many(self, keys: list[str]) -> None:
        for key in keys:
            await self._before("delete", key)
        await self.inner.delete_many(keys)

    def run(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        return self.inner.run(what, fn)

    def submit(self, what: str, fn: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        return self.inner.submit(what, fn)

    def is_offline(self) -> bool:
        return self.inner.is_offline()

    def offline_error(self, what: str) -> Any:
        return self.inner.offline_error(what)

    def close(self) -> None:
        self.inner.close()
