""":class:`~cas_store.backend.base.ObjectStore` over s3fs: the only module that speaks S3.

:class:`S3Connection` owns one s3fs client (its aiobotocore session and event-loop
thread), the translation of failures into cas_store's exceptions, and the offline
circuit breaker; :class:`S3ObjectStore` is one bucket on it. Retries are botocore's
(``StoreConfig.max_attempts``, standard mode) and s3fs's (throttling, resets, response
bodies cut short): this module adds no retry loop of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar, cast
from urllib.parse import urlsplit

import aiohttp
import botocore.exceptions
from fsspec.asyn import sync
from fsspec.exceptions import FSTimeoutError
from s3fs import S3FileSystem
from s3fs.core import _error_wrapper

from cas_store.backend.base import Capabilities, ListPage, ObjectInfo, PutResult, Sink
from cas_store.config import StoreConfig
from cas_store.errors import (
    BucketNotFoundError,
    CASStoreError,
    CredentialsError,
    ObjectNotFoundError,
    S3Error,
    ShortObjectError,
    StoreOfflineError,
)
from cas_store.format import DEFAULT_CHUNK_SIZE

log = logging.getLogger(__name__)
T = TypeVar("T")

_STREAM_READ = 1 * 2**20
_DELETE_BATCH = 1000
#: An upload's deadline grows by one second per this many bytes of body: a slow uplink
#: shared by ``max_concurrency`` uploads is not an outage.
_UPLOAD_FLOOR = 128 * 2**10


class NoAnswerError(Exception):
    """The server did not answer a request within ``StoreConfig.offline_timeout``."""


# Failures that mean "S3 cannot be reached", as opposed to "S3 said no".
OFFLINE_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ...
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
    aiohttp.ClientConnectionError,
    ConnectionError,
    asyncio.TimeoutError,
    FSTimeoutError,
    NoAnswerError,
)


def _chain(exc: BaseException, depth: int = 8) -> list[BaseException]:
    """``exc`` and the exceptions behind it (cause, else context)."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(out) < depth:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def _response(exc: BaseException) -> tuple[str | None, int | None]:
    """(S3 error code, HTTP status) of the first botocore response behind an exception."""
    for current in _chain(exc):
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code or status:
                return (str(code) if code else None), (int(status) if status else None)
    return None, None


def error_code(exc: BaseException) -> str | None:
    """The S3 error code behind an exception (s3fs keeps botocore's error as ``__cause__``),
    else its HTTP status as a string (HEAD answers carry no code)."""
    code, status = _response(exc)
    return code or (str(status) if status else None)


def http_status(exc: BaseException) -> int | None:
    return _response(exc)[1]


def is_precondition_failed(exc: BaseException) -> bool:
    """True for a 412 answer to a conditional request, whatever exception s3fs made of it.

    s3fs maps 412 to ``FileExistsError`` only when the body carries ``<Condition>``;
    SeaweedFS and Ceph omit it (s3-field-notes.md), so the code or status decides.
    """
    return isinstance(exc, FileExistsError) or error_code(exc) in ("PreconditionFailed", "412")


def is_not_implemented(exc: BaseException) -> bool:
    """True if the server rejected a request feature it does not implement (e.g. If-None-Match)."""
    return error_code(exc) in ("NotImplemented", "501")


def _is_missing(exc: BaseException) -> bool:
    return isinstance(exc, FileNotFoundError) and error_code(exc) != "NoSuchBucket"


def _refused(exc: BaseException) -> bool:
    """True if nothing listens at the endpoint (as opposed to a network that does not answer)."""
    for current in _chain(exc):
        if isinstance(current, ConnectionRefusedError):
            return True
        if isinstance(getattr(current, "os_error", None), ConnectionRefusedError):
            return True
    return False


def safe_endpoint(config: StoreConfig) -> str:
    """The endpoint botocore will use, for messages and store ids (never with credentials)."""
    url = (
        config.client_kwargs.get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    if not url:
        return "AWS S3"
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"  # drops any user:password@ in the URL


def _info(key: str, meta: dict[str, Any], size_field: str = "ContentLength") -> ObjectInfo:
    modified = meta.get("LastModified") or dt.datetime.now(dt.UTC)
    return ObjectInfo(key, int(meta.get(size_field) or 0), str(meta.get("ETag", "")), modified)


class S3Connection:
    """One s3fs client plus error translation and the offline circuit breaker.

    Thread-safe: s3fs runs its calls on its own event-loop thread; the breaker
    state is guarded by a lock. One connection serves any number of buckets.
    """

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.endpoint = safe_endpoint(config)
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
        # throttling, dropped connections and bodies cut short. Its default of 5 would multiply
        # botocore's attempts.
        self.fs.retries = 2
        self._lock = threading.Lock()
        self._offline_until = 0.0
        self._offline_reason = ""
        self._buckets: dict[str, S3ObjectStore] = {}

    def bucket(self, name: str) -> S3ObjectStore:
        """The :class:`ObjectStore` of one bucket on this connection (one per name)."""
        with self._lock:
            store = self._buckets.get(name)
            if store is None:
                store = self._buckets[name] = S3ObjectStore(self, name)
            return store

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
        with self._lock:
            return time.monotonic() < self._offline_until

    def _mark_offline(self, reason: str) -> None:
        with self._lock:
            self._offline_until = time.monotonic() + self.config.offline_retry_after
            self._offline_reason = reason

    def offline_error(self, what: str) -> StoreOfflineError:
        with self._lock:
            reason = self._offline_reason
        return StoreOfflineError(
            f"S3 ({self.endpoint}) {reason or 'is unreachable'}, and {what} needs it. Files already "
            f"in the local cache stay readable; retry once the server is back "
            f"(cas_store retries S3 {self.config.offline_retry_after:g} s after a failure)."
        )

    # -- running calls ---------------------------------------------------------------------

    def run(self, what: str, bucket: str, fn: Callable[[], Awaitable[T]]) -> T:
        if self.is_offline():
            raise self.offline_error(what)
        try:
            return cast(T, sync(self.fs.loop, _await, fn))
        except CASStoreError:
            raise
        except Exception as exc:
            self.raise_translated(exc, what, bucket)

    def submit(self, what: str, bucket: str, fn: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        if self.is_offline():
            raise self.offline_error(what)

        async def guarded() -> T:
            try:
                return await fn()
            except CASStoreError:
                raise
            except Exception as exc:
                self.raise_translated(exc, what, bucket)

        return asyncio.run_coroutine_threadsafe(guarded(), self.fs.loop)

    def raise_translated(self, exc: BaseException, what: str, bucket: str) -> NoReturn:
        """Raise the cas_store exception for a failure of ``what`` in ``bucket``."""
        if isinstance(exc, OFFLINE_ERRORS) or isinstance(exc.__cause__, OFFLINE_ERRORS):
            if _refused(exc):
                self._mark_offline(
                    "is unreachable: it refused the connection (nothing listens there; check endpoint_url)"
                )
            else:
                self._mark_offline("is unreachable")
            log.warning("S3 (%s) unreachable during %s: %s", self.endpoint, what, type(exc).__name__)
            raise self.offline_error(what) from exc
        if isinstance(exc, botocore.exceptions.ProfileNotFound):
            raise CredentialsError(
                f"the AWS profile {self.config.profile!r} is not defined (looked in ~/.aws/config and "
                "~/.aws/credentials, or AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE): create it with "
                "`aws configure --profile <name>` or set another profile"
            ) from exc
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            raise CredentialsError(
                f"no AWS credentials found for {what}: set aws_access_key_id and "
                "aws_secret_access_key, a profile, or the AWS_* environment variables"
            ) from exc
        code = error_code(exc)
        if code == "NoSuchBucket":
            raise BucketNotFoundError(
                f"the bucket {bucket!r} does not exist at {self.endpoint} ({what}): create it "
                f"(e.g. `aws s3 mb s3://{bucket}`) or fix the bucket name in the path"
            ) from exc
        if isinstance(exc, PermissionError) or code in ("AccessDenied", "InvalidAccessKeyId", "403"):
            raise CredentialsError(
                f"S3 ({self.endpoint}) refused {what} in bucket {bucket!r} ({code or 'access denied'}): "
                "check the credentials, their permissions on the bucket, and the clock"
            ) from exc
        if isinstance(exc, aiohttp.ClientPayloadError):
            raise S3Error(
                f"S3 ({self.endpoint}) broke off its answer during {what} repeatedly (response body "
                "cut short); retry, and check the network or the server if it persists",
                code="IncompleteBody",
            ) from exc
        raise S3Error(
            f"S3 ({self.endpoint}) failed {what} in bucket {bucket!r}: {exc} "
            f"({code or type(exc).__name__}); retry, and check the server if it persists",
            code=code,
            status=http_status(exc),
        ) from exc


async def _await(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


def _total_size(content_range: str | None) -> int | None:
    """The object's length from a ``Content-Range: bytes a-b/total`` header, if given."""
    if not content_range or "/" not in content_range:
        return None
    total = content_range.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _nothing() -> None:
    pass


class S3ObjectStore:
    """One bucket over an :class:`S3Connection`. See :class:`~cas_store.backend.base.ObjectStore`."""

    def __init__(self, connection: S3Connection, bucket: str) -> None:
        self.connection = connection
        self.bucket = bucket
        self.endpoint = connection.endpoint
        self.capabilities = Capabilities()
        self._fs = connection.fs

    async def _call(self, method: str, **kwargs: Any) -> Any:
        return await self._fs._call_s3(method, Bucket=self.bucket, **kwargs)

    async def _within(self, what: str, call: Awaitable[T], *, body: int = 0) -> T:
        """``await call`` within the deadline of :meth:`_answered` (the answer is its result)."""

        async def work(_: Callable[[], None]) -> T:
            return await call

        return await self._answered(what, work, body=body)

    async def _answered(
        self, what: str, work: Callable[[Callable[[], None]], Awaitable[T]], *, body: int = 0
    ) -> T:
        """``await work(answered)``, which calls ``answered()`` once the server's answer began
        (by default: when ``work`` returns); raise :class:`NoAnswerError` if that takes longer
        than ``offline_timeout`` (plus a second per ``_UPLOAD_FLOOR`` bytes of ``body``).

        botocore's and s3fs's retries run inside the deadline. It bounds what per-attempt
        timeouts leave open: attempts that each time out add up, and an upload into a
        connection nobody reads has no timeout at all. Its error is not retried, and opens the
        circuit breaker.
        """
        timeout = self.connection.config.offline_timeout + body / _UPLOAD_FLOOR
        answer = asyncio.Event()
        task = asyncio.ensure_future(work(answer.set))
        began = asyncio.ensure_future(answer.wait())
        try:
            await asyncio.wait({task, began}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if task.done() or answer.is_set():
                return await task
            task.cancel()
            raise NoAnswerError(
                f"no answer from S3 ({self.endpoint}) to {what} within {timeout:g} s (offline_timeout)"
            )
        finally:
            began.cancel()
            if not task.done():
                task.cancel()

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            meta = await self._within(f"HEAD {key}", self._call("head_object", Key=key))
        except FileNotFoundError:
            return None  # a HEAD of a missing bucket is a bare 404 too: the next write names it
        return _info(key, meta)

    async def get(self, key: str) -> tuple[bytes, ObjectInfo] | None:
        answered = _nothing

        async def call_and_read() -> tuple[bytes, ObjectInfo]:
            resp = await self._call("get_object", Key=key)
            answered()
            try:
                data = bytes(await resp["Body"].read())
            finally:
                resp["Body"].close()
            return data, _info(key, resp)

        try:
            # As s3fs's own cat_file: the call and the body read are retried together.
            async def work(began: Callable[[], None]) -> tuple[bytes, ObjectInfo]:
                nonlocal answered
                answered = began
                return cast(
                    tuple[bytes, ObjectInfo], await _error_wrapper(call_and_read, retries=self._fs.retries)
                )

            return await self._answered(f"GET {key}", work)
        except FileNotFoundError as exc:
            if _is_missing(exc):
                return None
            raise

    async def get_range(self, key: str, start: int, end: int, sink: Sink) -> None:
        answered = _nothing

        async def call_and_read() -> None:
            extra = {"Range": f"bytes={start}-{end - 1}"} if end > start else {}
            resp = await self._call("get_object", Key=key, **extra)
            answered()
            body = resp["Body"]
            total = _total_size(resp.get("ContentRange"))
            if total is not None and total < end:
                body.close()
                raise ShortObjectError(
                    f"s3://{self.bucket}/{key} holds {total} bytes, fewer than the {end} asked for",
                    key=key,
                    size=total,
                )
            offset = start
            try:
                while True:
                    data = await body.read(_STREAM_READ)
                    if not data:
                        break
                    sink(offset, data)
                    offset += len(data)
            finally:
                body.close()
            if offset != end:
                # Treated as a body cut short: retried, then reported as IncompleteBody.
                raise aiohttp.ClientPayloadError(
                    f"got {offset - start} of {end - start} bytes of s3://{self.bucket}/{key}"
                )

        async def work(began: Callable[[], None]) -> None:
            nonlocal answered
            answered = began
            await _error_wrapper(call_and_read, retries=self._fs.retries)

        try:
            await self._answered(f"GET {key}", work)
        except FileNotFoundError as exc:
            if _is_missing(exc):
                raise ObjectNotFoundError(f"s3://{self.bucket}/{key} does not exist", key=key) from exc
            raise
        except OSError as exc:
            if error_code(exc) == "InvalidRange":  # 416: the range starts past the object's end
                raise ShortObjectError(
                    f"s3://{self.bucket}/{key} is shorter than byte {start}", key=key, size=None
                ) from exc
            raise

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> PutResult:
        condition: dict[str, str] = {}
        if if_absent and self.capabilities.conditional_create:
            condition["IfNoneMatch"] = "*"
        if if_match is not None and self.capabilities.conditional_replace:
            condition["IfMatch"] = if_match
        try:
            resp = await self._within(
                f"PUT {key}",
                self._call("put_object", Key=key, Body=data, ContentType=content_type, **condition),
                body=len(data),
            )
        except Exception as exc:
            if condition and is_precondition_failed(exc):
                return PutResult(False, "")
            if condition and is_not_implemented(exc):
                name = "If-None-Match" if "IfNoneMatch" in condition else "If-Match"
                log.info("S3 (%s) does not implement %s: writing unconditionally", self.endpoint, name)
                if "IfNoneMatch" in condition:
                    self.capabilities.conditional_create = False
                else:
                    self.capabilities.conditional_replace = False
                return await self.put(key, data, content_type=content_type)
            raise
        return PutResult(True, str(resp.get("ETag", "")))

    async def copy(self, source: str, dest: str, *, if_absent: bool = False) -> bool:
        if if_absent and await self.head(dest) is not None:
            return True
        if self.capabilities.copy:
            try:
                await self._within(
                    f"COPY {source} to {dest}",
                    self._call("copy_object", Key=dest, CopySource={"Bucket": self.bucket, "Key": source}),
                )
                return True
            except Exception as exc:
                if _is_missing(exc) or error_code(exc) == "NoSuchKey":
                    return False
                if not is_not_implemented(exc):
                    raise
                log.info("S3 (%s) does not implement CopyObject: copying through the client", self.endpoint)
                self.capabilities.copy = False
        got = await self.get(source)
        if got is None:
            return False
        await self.put(dest, got[0])
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
        extra: dict[str, Any] = {"MaxKeys": max_keys}
        if delimiter:
            extra["Delimiter"] = delimiter
        if start_after:
            extra["StartAfter"] = start_after
        if token:
            extra["ContinuationToken"] = token
        resp = await self._within(f"LIST {prefix}", self._call("list_objects_v2", Prefix=prefix, **extra))
        objects = tuple(_info(o["Key"], o, "Size") for o in resp.get("Contents") or [])
        prefixes = tuple(str(p["Prefix"]) for p in resp.get("CommonPrefixes") or [])
        more = resp.get("IsTruncated") and resp.get("NextContinuationToken")
        return ListPage(objects, prefixes, str(resp["NextContinuationToken"]) if more else None)

    async def delete_many(self, keys: list[str]) -> None:
        for i in range(0, len(keys), _DELETE_BATCH):
            batch = keys[i : i + _DELETE_BATCH]
            delete = {"Objects": [{"Key": k} for k in batch], "Quiet": True}
            resp = await self._within(
                f"DELETE of {len(batch)} objects",
                self._call("delete_objects", Delete=delete),
            )
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise S3Error(
                    f"S3 ({self.endpoint}) did not delete {len(errors)} of {len(batch)} objects, e.g. "
                    f"{first.get('Key')!r}: {first.get('Message') or first.get('Code')}",
                    code=first.get("Code"),
                    key=first.get("Key"),
                )

    def run(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        return self.connection.run(what, self.bucket, fn)

    def submit(self, what: str, fn: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        return self.connection.submit(what, self.bucket, fn)

    def is_offline(self) -> bool:
        return self.connection.is_offline()

    def offline_error(self, what: str) -> StoreOfflineError:
        return self.connection.offline_error(what)

    def close(self) -> None:
        self.connection.close()
