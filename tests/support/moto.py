"""moto's S3 in a thread of the test process, on 127.0.0.1.

Fast, resettable, and it records every HTTP request it receives
(:meth:`MotoServer.record`, see :mod:`tests.support.requests`), so tests can assert on
what actually reached the server ("the second read was served from the cache") without
trusting the client. It can be stopped and restarted on the same port to simulate S3
going away mid-session.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Self

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from werkzeug.serving import ThreadedWSGIServer

from tests.support.env import DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY, LOOPBACK, REGION
from tests.support.faults import FaultInjector, aborting
from tests.support.requests import INTERNAL_HEADER, Recorders, RecordingMiddleware, RequestLog, WSGIApp

__all__ = ["MotoServer"]

_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method: str, url: str, timeout: float = 5.0) -> int:
    """Plain HTTP call to a loopback server, never through a proxy; returns the status."""
    request = urllib.request.Request(
        url,
        method=method,
        data=b"" if method == "POST" else None,
        headers={INTERNAL_HEADER: "1"},
    )
    with _NO_PROXY_OPENER.open(request, timeout=timeout) as response:
        response.read()
        status: int = response.status
        return status


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

    def __init__(self, host: str, port: int, app: WSGIApp) -> None:
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
        if aborting(request):  # a fault's reset: shutting down first would send FIN, not RST
            self.close_request(request)
        else:
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

    access_key = DUMMY_ACCESS_KEY
    secret_key = DUMMY_SECRET_KEY
    region = REGION

    def __init__(self, port: int = 0, *, warm_up: bool = True) -> None:
        """``port=0`` picks a free port at the first :meth:`start`; it is then kept.

        ``warm_up`` sends one request at start so the first test does not pay for moto
        building its S3 backend app (0.1-0.3 s measured).
        """
        super().__init__(ip_address=LOOPBACK, port=port, verbose=False)
        self._warm_up = warm_up
        self._recorders = Recorders()
        #: Faults on the wire (tests/support/faults.py); inactive unless a test configures it.
        self.faults = FaultInjector(self._app_for_faults)
        self._app: WSGIApp | None = None
        self._httpd: _ClosingWSGIServer | None = None
        self._start_error: BaseException | None = None

    # ThreadedMotoServer runs this in its thread; same as upstream plus the recording
    # middleware, the closable server and error propagation (upstream would hang
    # forever in start() if the port cannot be bound).
    def _server_entry(self) -> None:
        try:
            self._app = RecordingMiddleware(DomainDispatcherApplication(create_backend_app), self._recorders)
            httpd = _ClosingWSGIServer(self._ip_address, self._port, self.faults)
        except BaseException as exc:  # handed to the thread calling start()
            self._start_error = exc
            self._server_ready_event.set()
            return
        self._httpd = httpd
        self._server = httpd
        self._server_ready_event.set()
        httpd.serve_forever(poll_interval=0.05)

    def _app_for_faults(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """What the fault injector passes requests on to: recording, then moto."""
        assert self._app is not None, "the server is not running"
        return self._app(environ, start_response)

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
        self.faults.release()  # blackholed requests would keep their threads
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
