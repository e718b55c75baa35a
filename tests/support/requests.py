"""Server-side request recording: what reached the S3 server, as a WSGI middleware logs it.

:class:`~tests.support.moto.MotoServer` puts :class:`RecordingMiddleware` in front of
moto, so tests can assert on what actually reached the server ("the second read was
served from the cache") without trusting the client.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

__all__ = [
    "INTERNAL_HEADER",
    "RecordedRequest",
    "Recorders",
    "RecordingMiddleware",
    "RequestLog",
    "WSGIApp",
]

#: Marks our own plumbing requests (warm-up) so request logs leave them out.
INTERNAL_HEADER = "X-Test-Support-Internal"
INTERNAL_ENVIRON_KEY = "HTTP_" + INTERNAL_HEADER.upper().replace("-", "_")  # as WSGI names it


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the server saw it.

    ``path`` is percent-decoded. With path-style addressing (always the case for an IP
    endpoint) the bucket is the first path segment: ``bucket`` is ``None`` for
    service-level calls (ListBuckets) and ``key`` is ``None`` for bucket-level calls
    (ListObjectsV2, CreateBucket, DeleteObjects). ``headers`` has lower-case names.
    ``status`` is the response status, ``None`` if the app crashed before answering.
    """

    method: str
    path: str
    query_string: str
    bucket: str | None
    key: str | None
    headers: Mapping[str, str]
    status: int | None
    started: float  # time.monotonic() when the request reached the app

    @property
    def query(self) -> dict[str, list[str]]:
        """Parsed query string; flag parameters such as ``?uploads`` map to ``[""]``."""
        return urllib.parse.parse_qs(self.query_string, keep_blank_values=True)

    @property
    def range(self) -> str | None:
        return self.headers.get("range")

    @property
    def if_none_match(self) -> str | None:
        return self.headers.get("if-none-match")

    @property
    def if_match(self) -> str | None:
        return self.headers.get("if-match")

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value else None


class RequestLog:
    """Thread-safe list of :class:`RecordedRequest`, filled while a recording is active.

    Entries are appended when the response status is known (just before the response is
    sent), so everything a client has received an answer for is already in the log.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []

    def _append(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot copy, in the order the responses were produced."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._requests)

    def __iter__(self) -> Iterator[RecordedRequest]:
        return iter(self.requests)

    def filter(
        self,
        method: str | None = None,
        *,
        bucket: str | None = None,
        key: str | None = None,
        key_prefix: str | None = None,
        query_param: str | None = None,
        status: int | None = None,
        where: Callable[[RecordedRequest], bool] | None = None,
    ) -> list[RecordedRequest]:
        """Requests matching every given criterion.

        ``key_prefix`` only matches object-level requests; ``query_param`` matches when
        the parameter is present (e.g. ``"uploads"``, ``"partNumber"``, ``"list-type"``).
        """
        wanted_method = method.upper() if method is not None else None
        result: list[RecordedRequest] = []
        for req in self.requests:
            if wanted_method is not None and req.method != wanted_method:
                continue
            if bucket is not None and req.bucket != bucket:
                continue
            if key is not None and req.key != key:
                continue
            if key_prefix is not None and (req.key is None or not req.key.startswith(key_prefix)):
                continue
            if query_param is not None and query_param not in req.query:
                continue
            if status is not None and req.status != status:
                continue
            if where is not None and not where(req):
                continue
            result.append(req)
        return result

    def count(
        self,
        method: str | None = None,
        *,
        bucket: str | None = None,
        key: str | None = None,
        key_prefix: str | None = None,
        query_param: str | None = None,
        status: int | None = None,
        where: Callable[[RecordedRequest], bool] | None = None,
    ) -> int:
        """Number of requests matching; same criteria as :meth:`filter`."""
        return len(
            self.filter(
                method,
                bucket=bucket,
                key=key,
                key_prefix=key_prefix,
                query_param=query_param,
                status=status,
                where=where,
            )
        )

    def summary(self) -> list[str]:
        """``"GET bucket/key?query -> 200"`` lines, for assertion messages."""
        lines = []
        for req in self.requests:
            target = req.path.lstrip("/") + (f"?{req.query_string}" if req.query_string else "")
            lines.append(f"{req.method} {target} -> {req.status}")
        return lines


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _wsgi_str(value: str) -> str:
    """Undo PEP 3333's latin-1 transport encoding of environ strings (UTF-8 keys)."""
    return value.encode("latin-1").decode("utf-8", "replace")


def _request_from_environ(environ: Mapping[str, Any], status: int | None, started: float) -> RecordedRequest:
    path = _wsgi_str(environ.get("PATH_INFO", ""))
    headers: dict[str, str] = {}
    for name, value in environ.items():
        if name.startswith("HTTP_"):
            headers[name[5:].replace("_", "-").lower()] = str(value)
        elif name in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers[name.replace("_", "-").lower()] = str(value)
    bucket, sep, key = path.lstrip("/").partition("/")
    return RecordedRequest(
        method=str(environ.get("REQUEST_METHOD", "")).upper(),
        path=path,
        query_string=_wsgi_str(environ.get("QUERY_STRING", "")),
        bucket=bucket or None,
        key=key if sep and key else None,
        headers=headers,
        status=status,
        started=started,
    )


class Recorders:
    """The set of active :class:`RequestLog` objects of one server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logs: list[RequestLog] = []

    def add(self, log: RequestLog) -> None:
        with self._lock:
            self._logs.append(log)

    def remove(self, log: RequestLog) -> None:
        with self._lock:
            self._logs.remove(log)

    def active(self) -> list[RequestLog]:
        with self._lock:
            return list(self._logs)


class RecordingMiddleware:
    """WSGI middleware in front of moto's dispatcher; costs nothing when not recording.

    Requests to ``/moto-api/`` (reset, dashboard) and our own warm-up request are test
    plumbing and never recorded.
    """

    def __init__(self, app: WSGIApp, recorders: Recorders) -> None:
        self._app = app
        self._recorders = recorders

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        logs = self._recorders.active()
        if (
            not logs
            or INTERNAL_ENVIRON_KEY in environ
            or str(environ.get("PATH_INFO", "")).startswith("/moto-api")
        ):
            return self._app(environ, start_response)
        started = time.monotonic()
        done = False

        def emit(status: int | None) -> None:
            nonlocal done
            if done:
                return
            done = True
            record = _request_from_environ(environ, status, started)
            for log in logs:
                log._append(record)

        def recording_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            emit(int(status.split(" ", 1)[0]))
            return start_response(status, headers, exc_info)

        try:
            return self._app(environ, recording_start_response)
        finally:
            emit(None)  # no-op unless the app failed before start_response
