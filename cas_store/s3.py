"""S3 access: building the s3fs client from a :class:`StoreConfig`, translating
failures into cas_store's exceptions, and remembering that S3 is unreachable.

Everything that talks to S3 goes through :class:`S3`, so error handling and the
offline fast path live in one place.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar, cast
from urllib.parse import urlsplit

import aiohttp
import botocore.exceptions
from fsspec.asyn import sync
from fsspec.exceptions import FSTimeoutError
from s3fs import S3FileSystem

from cas_store.config import StoreConfig
from cas_store.errors import (
    BucketNotFoundError,
    CASStoreError,
    CredentialsError,
    StoreOfflineError,
)
from cas_store.format import DEFAULT_CHUNK_SIZE

log = logging.getLogger(__name__)
T = TypeVar("T")

# Failures that mean "S3 cannot be reached", as opposed to "S3 said no".
OFFLINE_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ...
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
    aiohttp.ClientConnectionError,
    ConnectionError,
    asyncio.TimeoutError,
    FSTimeoutError,
)


def error_code(exc: BaseException) -> str | None:
    """The S3 error code behind an exception (s3fs keeps botocore's error as ``__cause__``)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status:
                return str(status)
        current = current.__cause__
        seen += 1
    return None


def is_precondition_failed(exc: BaseException) -> bool:
    """True for a 412 answer to a conditional request, whatever exception s3fs made of it."""
    return isinstance(exc, FileExistsError) or error_code(exc) in ("PreconditionFailed", "412")


def is_not_implemented(exc: BaseException) -> bool:
    """True if the server rejected a request feature it does not implement (e.g. If-None-Match)."""
    return error_code(exc) in ("NotImplemented", "501")


def _safe_endpoint(config: StoreConfig) -> str:
    url = config.client_kwargs.get("endpoint_url")
    if not url:
        return "AWS S3"
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"  # drops any user:password@ in the URL


class S3:
    """One s3fs client plus error translation and the offline circuit breaker.

    Thread-safe: s3fs runs its calls on its own event-loop thread; the breaker
    state is guarded by a lock.
    """

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.endpoint = _safe_endpoint(config)
        config_kwargs: dict[str, Any] = {
            "connect_timeout": config.connect_timeout,
            "read_timeout": config.read_timeout,
            "retries": {"max_attempts": config.max_attempts, "mode": "standard"},
        }
        config_kwargs.update(config.config_kwargs)
        self.fs = S3FileSystem(
            key=config.aws_access_key_id,
            secret=config.aws_secret_access_key,
            token=config.aws_session_token,
            profile=config.profile,
            client_kwargs=dict(config.client_kwargs),
            config_kwargs=config_kwargs,
            s3_additional_kwargs=dict(config.s3_additional_kwargs),
            skip_instance_cache=True,
            use_listings_cache=False,
            cache_regions=False,
            max_concurrency=config.max_concurrency,
            default_block_size=config.chunk_size or DEFAULT_CHUNK_SIZE,
        )
        # botocore retries every failure (config_kwargs["retries"]); s3fs's loop adds backoff for
        # throttling and dropped connections. Its default of 5 would multiply botocore's attempts.
        self.fs.retries = 2
        self._lock = threading.Lock()
        self._offline_until = 0.0

    def close(self) -> None:
        """Close the client session; the next call opens a new one.

        Requests in flight on other threads fail, as with ZenML's own S3 flavor's close.
        """
        creator = getattr(self.fs, "_s3creator", None)
        if creator is None:
            return

        async def aexit() -> None:
            with contextlib.suppress(AssertionError):  # "Session was never entered": closed already
                await creator.__aexit__(None, None, None)

        try:
            sync(self.fs.loop, aexit, timeout=10)
        except Exception as exc:
            log.debug("closing the S3 session (%s) failed: %r", self.endpoint, exc)
        self.fs._s3creator = None
        self.fs._s3 = None

    # -- the offline circuit breaker -------------------------------------------------------

    def is_offline(self) -> bool:
        """True while S3 recently failed to answer (no request is attempted then)."""
        with self._lock:
            return time.monotonic() < self._offline_until

    def _mark_offline(self) -> None:
        with self._lock:
            self._offline_until = time.monotonic() + self.config.offline_retry_after

    def offline_error(self, what: str) -> StoreOfflineError:
        return StoreOfflineError(
            f"S3 ({self.endpoint}) is unreachable, and {what} needs it. Files already in the "
            f"local cache stay readable; retry once the network is back "
            f"(cas_store retries S3 {self.config.offline_retry_after:g} s after a failure)."
        )

    # -- running calls ---------------------------------------------------------------------

    def run(self, what: str, coro_fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``coro_fn()`` on s3fs's loop, translating failures. ``what`` names the operation."""
        if self.is_offline():
            raise self.offline_error(what)
        try:
            return cast(T, sync(self.fs.loop, _await, coro_fn))
        except CASStoreError:
            raise
        except Exception as exc:
            self.raise_translated(exc, what)

    def submit(self, what: str, coro_fn: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        """Start ``coro_fn()`` on s3fs's loop without waiting; the future raises translated errors."""
        if self.is_offline():
            raise self.offline_error(what)

        async def guarded() -> T:
            try:
                return await coro_fn()
            except CASStoreError:
                raise
            except Exception as exc:
                self.raise_translated(exc, what)

        return asyncio.run_coroutine_threadsafe(guarded(), self.fs.loop)

    def call(self, what: str, method: str, **kwargs: Any) -> Any:
        """One botocore call (``method`` is the client method name, e.g. ``head_object``)."""
        return self.run(what, lambda: self.fs._call_s3(method, **kwargs))

    def raise_translated(self, exc: BaseException, what: str) -> NoReturn:
        if isinstance(exc, OFFLINE_ERRORS) or isinstance(exc.__cause__, OFFLINE_ERRORS):
            self._mark_offline()
            log.warning("S3 (%s) unreachable during %s: %s", self.endpoint, what, type(exc).__name__)
            raise self.offline_error(what) from exc
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            raise CredentialsError(
                f"no AWS credentials found for {what}: set aws_access_key_id and "
                "aws_secret_access_key, a profile, or the AWS_* environment variables"
            ) from exc
        code = error_code(exc)
        if code == "NoSuchBucket":
            raise BucketNotFoundError(
                f"the bucket of {what} does not exist at {self.endpoint}; create it or fix the path"
            ) from exc
        if isinstance(exc, PermissionError):
            raise CredentialsError(
                f"S3 ({self.endpoint}) refused {what} ({code or 'access denied'}): check the "
                "credentials, their permissions on the bucket, and the clock"
            ) from exc
        raise exc


async def _await(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return await coro_fn()


def gather_limited(limit: int, coros: list[Coroutine[Any, Any, T]]) -> Coroutine[Any, Any, list[T]]:
    """``asyncio.gather`` with at most ``limit`` coroutines running at once."""

    async def runner() -> list[T]:
        semaphore = asyncio.Semaphore(limit)

        async def one(coro: Coroutine[Any, Any, T]) -> T:
            async with semaphore:
                return await coro

        return await asyncio.gather(*(one(c) for c in coros))

    return runner()
