"""Faults on the wire, injected by a WSGI middleware in front of moto.

:class:`FaultInjector` sits outermost in :class:`~tests.support.moto.MotoServer`'s chain
(it plays the network and a quirky server; the request log behind it records what moto
actually saw). It is inactive until configured, so tests that do not use it are unaffected.

Fault kinds (:data:`FAULT_KINDS`), as the client sees them:

``500``
    ``500 InternalError`` with an S3 XML body; ``applied`` decides whether moto first
    carried out the request (a server that failed after acting) or never saw it.
``503``
    ``503 SlowDown`` with an S3 XML body; moto never sees the request.
``reset``
    moto answers, the client gets the status line and headers with the full
    ``Content-Length`` and part of the body (for an empty body: part of the headers), then
    a TCP reset.
``drop``
    The connection is closed without any answer (before or after moto acted, per ``applied``).
``delay``
    Sleep ``delay`` seconds, then pass the request through.
``strip-conditional``
    ``If-None-Match`` / ``If-Match`` are removed before moto sees them: the server ignores them.
``reject-conditional``
    ``501 NotImplemented`` for any request carrying them, as some S3-compatible servers answer.

Faults come from a seeded share of all requests (:meth:`FaultInjector.configure`) and from
explicit rules matched by method, key pattern and query parameter (:meth:`FaultInjector.add_rule`;
``times=None`` keeps a rule forever). :meth:`FaultInjector.blackhole` holds every request
unanswered until :meth:`FaultInjector.release`, which drops them. Every injected fault is
recorded (:attr:`FaultInjector.records`, :meth:`FaultInjector.counts`).

moto's state is process-global and the ``moto`` fixture is session-scoped: a test that turns
faults on must turn them off again (:meth:`FaultInjector.active` does).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fnmatch
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, NoReturn

from tests.support.requests import INTERNAL_ENVIRON_KEY, WSGIApp

__all__ = ["FAULT_KINDS", "FaultInjector", "FaultKind", "FaultRecord", "Rule", "aborting"]

FaultKind = Literal["500", "503", "reset", "drop", "delay", "strip-conditional", "reject-conditional"]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "500",
    "503",
    "reset",
    "drop",
    "delay",
    "strip-conditional",
    "reject-conditional",
)
_CONDITIONAL_KINDS = ("strip-conditional", "reject-conditional")
_CONDITIONAL_ENVIRON = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MATCH")
#: The longest a blackholed request is held if nobody releases it (a forgotten switch must
#: not hang the server's threads forever).
_BLACKHOLE_LIMIT = 120.0


@dataclasses.dataclass
class Rule:
    """Fault the requests matching every given criterion, ``times`` times (``None``: always).

    ``key`` is an :mod:`fnmatch` pattern on ``bucket/key`` (percent-decoded); ``query`` a
    query parameter that must be present (``"uploads"``, ``"list-type"``). A conditional kind
    only matches requests that carry a conditional header. ``applied`` (``500``, ``drop``):
    whether moto carries out the request first; ``None`` picks at random.
    """

    kind: FaultKind
    method: str | None = None
    key: str | None = None
    query: str | None = None
    times: int | None = 1
    applied: bool | None = None

    def matches(self, method: str, target: str, query: str, conditional: bool) -> bool:
        if self.kind in _CONDITIONAL_KINDS and not conditional:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        if self.key is not None and not fnmatch.fnmatchcase(target, self.key):
            return False
        return self.query is None or self.query in _query_names(query)


@dataclasses.dataclass(frozen=True)
class FaultRecord:
    """One injected fault: what kind, to which request, whether moto acted on it, when."""

    kind: str  # a FaultKind, or "blackhole" for a request held and then dropped
    method: str
    target: str  # bucket/key, percent-decoded
    query: str
    applied: bool
    at: float  # time.monotonic()


def _query_names(query: str) -> set[str]:
    return {part.partition("=")[0] for part in query.split("&") if part}


def _s3_error(code: str, message: str, status: str) -> tuple[str, list[tuple[str, str]], bytes]:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>faultinjector</RequestId><HostId>faultinjector</HostId></Error>"
    ).encode()
    headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
    return status, headers, body


def _reset(sock: socket.socket) -> None:
    """Abort the connection: the client sees a TCP reset, not an orderly close.

    SO_LINGER 0 makes close() send RST; the server must then close without the usual
    shutdown(SHUT_WR), which would send FIN first (:func:`aborting`). Shutting down the
    reading side sends nothing to the client and ends werkzeug's wait for a next request.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)


def aborting(sock: socket.socket) -> bool:
    """True if :func:`_reset` marked the connection for an abortive close."""
    try:
        on, linger = struct.unpack("ii", sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))
    except OSError:
        return False
    return bool(on) and linger == 0


def _close(sock: socket.socket) -> None:
    """End the connection in order (FIN) without an answer."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Cut(ConnectionResetError):
    """Raised into werkzeug after a cut: it takes a ConnectionError for a dropped client and
    stays silent (no 500 page, no traceback in the log)."""


class FaultInjector:
    """WSGI middleware that breaks requests on purpose; thread-safe, reconfigurable at runtime.

    Inactive (a pass-through) until :meth:`configure`, :meth:`add_rule` or :meth:`blackhole`.
    Requests marked internal (warm-up) and ``/moto-api/`` calls are never faulted.
    """

    def __init__(self, app: WSGIApp, *, seed: int = 0) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._share = 0.0
        self._kinds: tuple[FaultKind, ...] = ()
        self._rules: list[Rule] = []
        self._records: list[FaultRecord] = []
        self.delay = 0.5
        self._released = threading.Event()
        self._released.set()
        self._held = 0

    # -- configuration ---------------------------------------------------------------------

    def configure(self, share: float, kinds: Iterable[FaultKind], *, seed: int | None = None) -> None:
        """Break ``share`` (0..1) of all requests, each with a kind drawn from ``kinds``
        (only those that apply to it: a conditional kind only to conditional requests)."""
        chosen = tuple(kinds)
        unknown = set(chosen) - set(FAULT_KINDS)
        if unknown or not 0.0 <= share <= 1.0:
            raise ValueError(f"bad fault configuration: share={share}, unknown kinds {sorted(unknown)}")
        with self._lock:
            self._share = share
            self._kinds = chosen
            if seed is not None:
                self._rng.seed(seed)

    def add_rule(self, rule: Rule) -> Rule:
        if rule.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {rule.kind!r}")
        with self._lock:
            self._rules.append(rule)
        return rule

    def blackhole(self) -> None:
        """Hold every request from now on unanswered, until :meth:`release`."""
        self._released.clear()

    def release(self) -> None:
        """End the blackhole: the requests held are dropped (never reach moto)."""
        self._released.set()

    def off(self) -> None:
        """No more faults: share 0, no rules, blackhole released. The records stay."""
        with self._lock:
            self._share = 0.0
            self._kinds = ()
            self._rules.clear()
        self.release()

    @contextlib.contextmanager
    def active(
        self, share: float = 0.0, kinds: Iterable[FaultKind] = (), *, seed: int | None = None
    ) -> Iterator[FaultInjector]:
        """Configure for the ``with`` block; :meth:`off` afterwards, whatever happens."""
        try:
            self.configure(share, kinds, seed=seed)
            yield self
        finally:
            self.off()

    # -- what happened ---------------------------------------------------------------------

    @property
    def records(self) -> list[FaultRecord]:
        with self._lock:
            return list(self._records)

    def counts(self) -> collections.Counter[str]:
        """Injected faults per kind."""
        return collections.Counter(r.kind for r in self.records)

    def clear_records(self) -> None:
        with self._lock:
            self._records.clear()

    @property
    def held(self) -> int:
        """Requests held by the blackhole right now."""
        with self._lock:
            return self._held

    # -- the middleware --------------------------------------------------------------------

    def _choose(
        self, method: str, target: str, query: str, conditional: bool
    ) -> tuple[FaultKind, bool] | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, target, query, conditional):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self._rules.remove(rule)
                    applied = rule.applied if rule.applied is not None else self._rng.random() < 0.5
                    return rule.kind, applied
            if not self._share:
                return None
            # Draw the same numbers whatever the request, so a seed fixes the sequence.
            hit, pick, coin = self._rng.random(), self._rng.random(), self._rng.random()
            kinds = [k for k in self._kinds if conditional or k not in _CONDITIONAL_KINDS]
            if hit >= self._share or not kinds:
                return None
            return kinds[int(pick * len(kinds))], coin < 0.5

    def _record(self, kind: str, method: str, target: str, query: str, applied: bool) -> None:
        with self._lock:
            self._records.append(FaultRecord(kind, method, target, query, applied, time.monotonic()))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if INTERNAL_ENVIRON_KEY in environ or path.startswith("/moto-api"):
            return self._app(environ, start_response)
        method = str(environ.get("REQUEST_METHOD", "")).upper()
        target = path.lstrip("/").encode("latin-1").decode("utf-8", "replace")
        query = str(environ.get("QUERY_STRING", ""))
        if not self._released.is_set():
            return self._hold(environ, method, target, query)
        conditional = any(name in environ for name in _CONDITIONAL_ENVIRON)
        choice = self._choose(method, target, query, conditional)
        if choice is None:
            return self._app(environ, start_response)
        kind, applied = choice
        if kind == "503":
            applied = False
        elif kind in ("reset", "delay", "strip-conditional"):
            applied = True
        elif kind == "reject-conditional":
            applied = False
        self._record(kind, method, target, query, applied)
        sock: socket.socket = environ["werkzeug.socket"]
        if kind == "delay":
            time.sleep(self.delay)
            return self._app(environ, start_response)
        if kind == "strip-conditional":
            for name in _CONDITIONAL_ENVIRON:
                environ.pop(name, None)
            return self._app(environ, start_response)
        if kind == "reject-conditional":
            status, headers, body = _s3_error(
                "NotImplemented",
                "A header you provided implies functionality that is not implemented",
                "501 Not Implemented",
            )
            start_response(status, headers)
            return [body]
        if kind == "503":
            status, headers, body = _s3_error("SlowDown", "Please reduce your request rate.", "503 Slow Down")
            start_response(status, headers)
            return [body]
        if kind == "500":
            if applied:
                self._run_app(environ)
            status, headers, body = _s3_error(
                "InternalError",
                "We encountered an internal error. Please try again.",
                "500 Internal Server Error",
            )
            start_response(status, headers)
            return [body]
        if kind == "drop":
            if applied:
                self._run_app(environ)
            _close(sock)
            raise _Cut("fault injector: connection dropped")
        assert kind == "reset"
        status, headers, body = self._run_app(environ)
        return self._cut_short(sock, method, status, headers, body)

    def _run_app(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        """Let moto answer in full, into memory: (status, headers, body)."""
        answer: dict[str, Any] = {}

        def capture(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            answer["status"], answer["headers"] = status, list(headers)
            return lambda data: None

        result = self._app(environ, capture)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return answer["status"], answer["headers"], body

    def _cut_short(
        self, sock: socket.socket, method: str, status: str, headers: list[tuple[str, str]], body: bytes
    ) -> NoReturn:
        """Send the answer with its full Content-Length but only part of it, then reset.

        Written to the socket directly: werkzeug has not sent anything yet, and would
        otherwise send chunked or complete answers only.
        """
        names = {name.lower() for name, _ in headers}
        lines = [f"HTTP/1.1 {status}"] + [f"{name}: {value}" for name, value in headers]
        if "content-length" not in names and method != "HEAD":
            lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        sent = head + body[: len(body) // 2] if len(body) >= 2 else head[: len(head) // 2]
        with contextlib.suppress(OSError):
            sock.sendall(sent)
        _reset(sock)
        raise _Cut("fault injector: connection reset mid-answer")

    def _hold(self, environ: dict[str, Any], method: str, target: str, query: str) -> NoReturn:
        with self._lock:
            self._held += 1
        try:
            self._released.wait(_BLACKHOLE_LIMIT)
        finally:
            with self._lock:
                self._held -= 1
        self._record("blackhole", method, target, query, False)
        _close(environ["werkzeug.socket"])
        raise _Cut("fault injector: blackholed request dropped")
