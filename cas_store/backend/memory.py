""":class:`~cas_store.backend.base.ObjectStore` in memory: unit tests, fault wrappers, dry runs.

It keeps the protocol's guarantees exactly (strong consistency, atomic PUTs, sorted
listings, conditional create) and can imitate the server quirks the protocol lets an
implementation have: ``honour_if_none_match=False`` (a server that ignores the
condition), ``copy_supported=False`` (reported in ``capabilities``; like the s3fs backend
falling back from a 501, copies still work). ``offline = True`` makes every call fail as an
unreachable server does. ``clock`` (seconds since the epoch) stamps ``LastModified``.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import datetime as dt
import hashlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from cas_store.backend.base import Capabilities, ListPage, ObjectInfo, PutResult, Sink
from cas_store.errors import ObjectNotFoundError, ShortObjectError, StoreOfflineError

T = TypeVar("T")

_loops: list[asyncio.AbstractEventLoop] = []
_loop_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    """One event loop on a daemon thread for every in-memory store of the process."""
    with _loop_lock:
        if not _loops:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="cas_store-memory", daemon=True).start()
            _loops.append(loop)
        return _loops[0]


class MemoryObjectStore:
    """A bucket held in a dict. Thread-safe; all calls run on one background event loop."""

    def __init__(
        self,
        bucket: str = "memory",
        *,
        honour_if_none_match: bool = True,
        copy_supported: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bucket = bucket
        self.endpoint = "memory"
        self.capabilities = Capabilities(
            conditional_create=honour_if_none_match,
            conditional_replace=honour_if_none_match,
            copy=copy_supported,
        )
        self.honour_if_none_match = honour_if_none_match
        self.clock = clock
        self.offline = False
        self.objects: dict[str, tuple[bytes, ObjectInfo]] = {}
        self._keys: list[str] = []  # sorted, for listings
        self._lock = threading.Lock()

    # -- helpers for tests -----------------------------------------------------------------

    def keys(self, prefix: str = "") -> list[str]:
        with self._lock:
            return [k for k in self._keys if k.startswith(prefix)]

    def data(self, key: str) -> bytes:
        with self._lock:
            return self.objects[key][0]

    def _check_online(self) -> None:
        if self.offline:
            raise ConnectionError("the in-memory store is set offline")

    def _store(self, key: str, data: bytes) -> ObjectInfo:
        info = ObjectInfo(
            key,
            len(data),
            f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"',
            dt.datetime.fromtimestamp(self.clock(), dt.UTC),
        )
        if key not in self.objects:
            bisect.insort(self._keys, key)
        self.objects[key] = (bytes(data), info)
        return info

    # -- the protocol ----------------------------------------------------------------------

    async def head(self, key: str) -> ObjectInfo | None:
        self._check_online()
        with self._lock:
            found = self.objects.get(key)
        return None if found is None else found[1]

    async def get(self, key: str) -> tuple[bytes, ObjectInfo] | None:
        self._check_online()
        with self._lock:
            return self.objects.get(key)

    async def get_range(self, key: str, start: int, end: int, sink: Sink) -> None:
        self._check_online()
        with self._lock:
            found = self.objects.get(key)
        if found is None:
            raise ObjectNotFoundError(f"memory://{self.bucket}/{key} does not exist", key=key)
        data = found[0]
        if end > len(data) and 0 <= start <= end:
            raise ShortObjectError(
                f"memory://{self.bucket}/{key} holds {len(data)} bytes, fewer than the {end} asked for",
                key=key,
                size=len(data),
            )
        if end > len(data) or start < 0 or start > end:
            raise ValueError(f"range [{start}, {end}) is outside the {len(data)} bytes of {key}")
        sink(start, data[start:end])

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> PutResult:
        self._check_online()
        with self._lock:
            if if_absent and self.honour_if_none_match and key in self.objects:
                return PutResult(False, "")
            if if_match is not None and self.honour_if_none_match:
                current = self.objects.get(key)
                if current is None or current[1].etag.strip('"') != if_match.strip('"'):
                    return PutResult(False, "")
            info = self._store(key, data)
        return PutResult(True, info.etag)

    async def copy(self, source: str, dest: str, *, if_absent: bool = False) -> bool:
        self._check_online()
        with self._lock:
            found = self.objects.get(source)
            if found is None:
                return False
            if not (if_absent and dest in self.objects):
                self._store(dest, found[0])
        return True

    async def list_page(
        self,
        prefix: str,
        *,
        delimiter: str | None = None,
        start_after: str | None = None,
        token: str | None = None,
        max_keys: int = 1000,
    ) -> ListPage:
        self._check_online()
        after = max(filter(None, (start_after, token)), default="")
        with self._lock:
            i = bisect.bisect_right(self._keys, after) if after else bisect.bisect_left(self._keys, prefix)
            objects: list[ObjectInfo] = []
            prefixes: list[str] = []
            last = ""
            while i < len(self._keys) and len(objects) + len(prefixes) < max_keys:
                key = self._keys[i]
                if not key.startswith(prefix):
                    break
                rest = key[len(prefix) :]
                if delimiter and delimiter in rest:
                    common = prefix + rest.split(delimiter, 1)[0] + delimiter
                    prefixes.append(common)
                    # Skip every key under this common prefix.
                    i = bisect.bisect_left(self._keys, common[:-1] + chr(ord(delimiter[-1]) + 1))
                    last = self._keys[i - 1]
                    continue
                objects.append(self.objects[key][1])
                last = key
                i += 1
            more = i < len(self._keys) and self._keys[i].startswith(prefix)
        return ListPage(tuple(objects), tuple(prefixes), last if more else None)

    async def delete_many(self, keys: list[str]) -> None:
        self._check_online()
        with self._lock:
            for key in keys:
                if self.objects.pop(key, None) is not None:
                    del self._keys[bisect.bisect_left(self._keys, key)]

    def run(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        return self.submit(what, fn).result()

    def submit(self, what: str, fn: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        if self.offline:
            raise self.offline_error(what)

        async def guarded() -> T:
            try:
                return await fn()
            except ConnectionError as exc:
                raise self.offline_error(what) from exc

        return asyncio.run_coroutine_threadsafe(guarded(), _background_loop())

    def is_offline(self) -> bool:
        return self.offline

    def offline_error(self, what: str) -> StoreOfflineError:
        return StoreOfflineError(f"the in-memory store is offline, and {what} needs it")

    def close(self) -> None:
        pass
