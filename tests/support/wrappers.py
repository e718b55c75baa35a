"""In-process :class:`~cas_store.backend.base.ObjectStore` wrappers: record calls, inject faults.

:class:`HookedObjectStore` delegates every call to the store it wraps and first calls
``hook(method, key)`` (awaited on the backend's event loop), which may record the call,
raise (a crash point) or wait on an event (a deterministic interleaving).
:class:`FaultyObjectStore` is one with a ready-made hook: it raises, or stalls until an
event is set, at the n-th call of one method below one key prefix.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cas_store.backend.base import ListPage, ObjectInfo, ObjectStore, PutResult, Sink
from cas_store.errors import S3Error

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


class InjectedFault(S3Error):
    """What :class:`FaultyObjectStore` raises by default: an S3 error, as a backend raises
    once its retries have run out (code ``InjectedFault``, status 500)."""


class FaultyObjectStore(HookedObjectStore):
    """An ObjectStore that fails once, deterministically: at the ``nth`` (1-based) call of
    ``method`` (``head``, ``get``, ``get_range``, ``put``, ``copy`` (keyed by its
    destination), ``list``, ``delete`` (once per key)) whose key starts with ``prefix``.

    There it raises ``error`` (an :class:`InjectedFault` by default) before the request is
    sent, so the backend never sees it; or, given ``stall``, it waits (off the event loop:
    other requests go on) until ``stall`` is set, then sends the request. ``reached`` is
    set when the fault point is reached. Every other call is forwarded unchanged; each
    call is recorded in ``calls`` as in :class:`HookedObjectStore`.
    """

    #: A stall longer than this is a hung test: it raises instead.
    STALL_LIMIT = 120.0

    def __init__(
        self,
        inner: ObjectStore,
        method: str,
        prefix: str = "",
        nth: int = 1,
        *,
        error: BaseException | None = None,
        stall: threading.Event | None = None,
    ) -> None:
        if nth < 1:
            raise ValueError(f"nth counts from 1, not {nth}")
        if error is not None and stall is not None:
            raise ValueError("a fault raises or stalls, not both")
        super().__init__(inner, self._fault)
        self.method = method
        self.prefix = prefix
        self.nth = nth
        self.error = error
        self.stall = stall
        self.matched = 0
        self.reached = threading.Event()

    async def _fault(self, method: str, key: str) -> None:
        if method != self.method or not key.startswith(self.prefix):
            return
        self.matched += 1
        if self.matched != self.nth:
            return
        self.reached.set()
        if self.stall is not None:
            released = await asyncio.to_thread(self.stall.wait, self.STALL_LIMIT)
            if not released:
                raise TimeoutError(f"stalled {method} {key} was never released")
            return
        if self.error is not None:
            raise self.error
        raise InjectedFault(
            f"injected fault: {method} {key} (call {self.nth} of {method} {self.prefix!r}*)",
            code="InjectedFault",
            status=500,
            key=key,
        )
