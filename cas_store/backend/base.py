"""The backend seam: :class:`ObjectStore`, the only interface through which cas_store
touches a bucket, and the values it returns.

Everything above this module (manifest, blobs, store, collector, CLI) is written
against the protocol; :mod:`cas_store.backend.s3` implements it over s3fs and
:mod:`cas_store.backend.memory` in memory, for unit tests, fault wrappers and dry runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cas_store.errors import StoreOfflineError

T = TypeVar("T")

#: Receives the bytes of a ranged read as they arrive: ``sink(offset, data)``, where
#: ``offset`` is the position of ``data`` in the object. A retried read may deliver the
#: same offsets again, so a sink must be idempotent per offset (``os.pwrite`` is).
Sink = Callable[[int, bytes], object]


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD, GET or listing says about one object."""

    key: str
    size: int
    etag: str
    #: The server's LastModified: set by the server's clock when the object was written.
    modified: dt.datetime


@dataclass(frozen=True)
class ListPage:
    """One page of a listing, in key order (as S3 returns it)."""

    objects: tuple[ObjectInfo, ...]
    #: Common prefixes (each ending in the delimiter) when a delimiter was given. Some
    #: servers (SeaweedFS) keep reporting a prefix after its last object is gone, so a
    #: prefix alone does not prove that an object exists below it.
    prefixes: tuple[str, ...]
    #: Pass to the next :meth:`ObjectStore.list_page` call; None on the last page.
    next_token: str | None


@dataclass(frozen=True)
class PutResult:
    """The answer to a PUT."""

    #: False when ``if_absent`` was given and the key already existed (a 412 answer):
    #: nothing was written. Servers that ignore the condition always report True.
    created: bool
    etag: str


@dataclass
class Capabilities:
    """What the server was found to honour. Updated as the backend learns (e.g. a 501).

    Correctness never rests on these: cas_store reads back what it cannot create
    conditionally, and overwriting a blob with identical bytes is harmless.
    """

    #: ``If-None-Match: *`` on PUT is honoured (False after a 501 answer).
    conditional_create: bool = True
    #: ``If-Match: <etag>`` on PUT is honoured.
    conditional_replace: bool = True
    #: CopyObject between keys of the bucket works.
    copy: bool = True


class ObjectStore(Protocol):
    """One bucket of an S3-compatible server: the semantics the rest of cas_store relies on.

    Keys are full object keys within :attr:`bucket`. An implementation must guarantee:

    * **Strong read-after-write consistency per key**, as AWS S3 gives: once :meth:`put`
      returned, every :meth:`head`, :meth:`get` and listing sees the new object, and once
      :meth:`delete_many` returned, none sees the deleted keys.
    * **Atomic PUTs**: an object is either absent or complete; a failed or interrupted
      :meth:`put` leaves the previous state (absent, or the old object) intact.
    * **Listings** return every key under the prefix that existed for the whole listing,
      in ascending key order (UTF-8 binary order), in pages.
    * **Missing is not an error** for :meth:`head` and :meth:`get` (they return None);
      :meth:`get_range` of a missing key raises
      :class:`~cas_store.errors.ObjectNotFoundError`.
    * **Conditional create**: ``put(..., if_absent=True)`` writes only if the key is
      absent and reports ``created=False`` otherwise; on servers that ignore the
      condition (see :attr:`capabilities`) it overwrites and reports ``created=True``.
      ``put(..., if_match=etag)`` likewise replaces only that version of the object.
    * **Retries** of transient failures (5xx, throttling, resets, bodies cut short) are
      done inside the implementation, from its configuration; callers never loop.

    The methods are coroutines, composable with ``asyncio.gather``. They are driven
    by :meth:`run` (wait) and :meth:`submit` (background), which own the event loop and
    translate every failure into a :class:`~cas_store.errors.CASStoreError`:
    :class:`~cas_store.errors.StoreOfflineError` (unreachable; a circuit breaker then
    fails fast for a while), :class:`~cas_store.errors.BucketNotFoundError`,
    :class:`~cas_store.errors.CredentialsError`, :class:`~cas_store.errors.S3Error`
    (anything else, with code and status). ``what`` names the operation for messages.
    """

    #: The bucket this store reads and writes.
    bucket: str
    #: Where the server is, for messages (never with credentials).
    endpoint: str
    capabilities: Capabilities

    async def head(self, key: str) -> ObjectInfo | None:
        """The object's metadata, or None if there is no such key."""
        ...

    async def get(self, key: str) -> tuple[bytes, ObjectInfo] | None:
        """The whole object and its metadata, or None if there is no such key (small objects)."""
        ...

    async def get_range(self, key: str, start: int, end: int, sink: Sink) -> None:
        """Stream bytes ``[start, end)`` of the object to ``sink``; all of them, or raise.

        An object shorter than ``end`` raises :class:`~cas_store.errors.ShortObjectError`
        before any byte reaches ``sink``, without retrying (a compressed blob read as raw).
        """
        ...

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> PutResult:
        """Create or replace the object (or, with ``if_absent``, create only).

        With ``if_match``, replace only the object whose ETag that is; ``created=False`` if it
        is not (412). Where the server does not honour ``If-Match`` (see :attr:`capabilities`)
        the PUT is unconditional: callers read back what they wrote.
        """
        ...

    async def copy(self, source: str, dest: str, *, if_absent: bool = False) -> bool:
        """Copy ``source`` to ``dest`` server-side; False if ``source`` does not exist.

        With ``if_absent``, an existing ``dest`` is left as it is (and True returned).
        """
        ...

    async def list_page(
        self,
        prefix: str,
        *,
        delimiter: str | None = None,
        start_after: str | None = None,
        token: str | None = None,
        max_keys: int = 1000,
    ) -> ListPage:
        """One page of the keys under ``prefix``."""
        ...

    async def delete_many(self, keys: list[str]) -> None:
        """Delete the keys (missing ones are fine), in batches of at most 1,000."""
        ...

    def run(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` to completion and return its result; failures are translated."""
        ...

    def submit(self, what: str, fn: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        """Start ``fn()`` in the background; the future raises translated failures."""
        ...

    def is_offline(self) -> bool:
        """True while the server recently failed to answer (calls fail fast meanwhile)."""
        ...

    def offline_error(self, what: str) -> StoreOfflineError:
        """The error :meth:`run` raises when the server is unreachable and ``what`` needs it."""
        ...

    def close(self) -> None:
        """Release connections; the next call opens new ones."""
        ...


async def list_all(store: ObjectStore, prefix: str, **kwargs: Any) -> list[ListPage]:
    """Every page of a listing (``kwargs`` as for :meth:`ObjectStore.list_page`)."""
    pages = []
    token: str | None = None
    while True:
        page = await store.list_page(prefix, token=token, **kwargs)
        pages.append(page)
        if page.next_token is None:
            return pages
        token = page.next_token


def gather_limited(limit: int, coros: list[Coroutine[Any, Any, T]]) -> Coroutine[Any, Any, list[T]]:
    """``asyncio.gather`` with at most ``limit`` coroutines running at once."""

    async def runner() -> list[T]:
        semaphore = asyncio.Semaphore(limit)

        async def one(coro: Coroutine[Any, Any, T]) -> T:
            async with semaphore:
                return await coro

        return await asyncio.gather(*(one(c) for c in coros))

    return runner()
