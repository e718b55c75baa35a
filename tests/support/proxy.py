"""A loopback TCP proxy in front of any S3 server, that can blackhole it.

A stopped server refuses connections (the client knows at once); a *blackholed* one is the
harder failure of a network that stops answering: a firewall dropping packets, a laptop
whose Wi-Fi went away, a VPN down. :class:`BlackholeProxy` forwards bytes both ways
between clients and ``upstream`` until :meth:`~BlackholeProxy.blackhole` is called; from
then on

- connections open at that moment stay open and carry nothing, either way (a request in
  flight waits for an answer that never comes);
- with ``accept=True`` (the default) new connections are accepted (the TCP handshake
  succeeds) and then never answered: the client's request waits for its answer;
- with ``accept=False`` new connections are not accepted: the listening socket stays open
  with a backlog of one, so once it is full the kernel drops further connection attempts
  and clients wait for their connect timeout.

:meth:`~BlackholeProxy.release` ends the blackhole and cuts the connections it held (as a
network coming back finds its old TCP connections dead). Works for moto and SeaweedFS
alike, since it only moves bytes.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from types import TracebackType
from typing import Self

from tests.support.env import LOOPBACK

__all__ = ["BlackholeProxy"]

_BLOCK = 64 * 1024


class BlackholeProxy:
    """Forward ``127.0.0.1:port`` to ``upstream`` (``http://127.0.0.1:PORT``), or stop answering."""

    def __init__(self, upstream: str) -> None:
        host_port = upstream.removeprefix("http://").rstrip("/")
        host, _, port = host_port.rpartition(":")
        self._upstream = (host, int(port))
        self._listener = socket.create_server((LOOPBACK, 0), backlog=1)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._holding = threading.Event()  # set while blackholed
        self._accepting = threading.Event()
        self._accepting.set()
        self._closed = False
        self._pairs: list[tuple[socket.socket, socket.socket | None]] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name="blackhole-proxy", daemon=True)
        self._acceptor.start()

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def blackholed(self) -> bool:
        return self._holding.is_set()

    def blackhole(self, *, accept: bool = True) -> None:
        """Stop answering (see the module docstring for what clients see)."""
        with self._lock:
            self._holding.set()
            if not accept:
                self._accepting.clear()

    def release(self) -> None:
        """Answer again; connections held during the blackhole are cut."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            self._holding.clear()
            self._accepting.set()
        for client, upstream in pairs:
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self.release()
        self._accepting.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._acceptor.join(timeout=5)

    # -- plumbing ----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.1)
        while not self._closed:
            if not self._accepting.wait(timeout=0.1):
                continue  # not accepting: the backlog fills, the kernel drops new SYNs
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        with self._lock:
            held = self._holding.is_set()
            self._pairs.append((client, None))
        if not held:
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                client.close()
                return
            with self._lock:
                self._pairs = [(c, upstream if c is client else u) for c, u in self._pairs]
        try:
            self._pump(client, upstream)
        finally:
            with self._lock:
                self._pairs = [(c, u) for c, u in self._pairs if c is not client]
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()

    def _pump(self, client: socket.socket, upstream: socket.socket | None) -> None:
        """Move bytes both ways until either side closes; hold everything while blackholed."""
        with selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ, upstream)
            if upstream is not None:
                selector.register(upstream, selectors.EVENT_READ, client)
            else:
                self._holding.wait()  # accepted during a blackhole: never answered
            while True:
                if self._holding.is_set():
                    # Nothing moves; release() shuts both sockets down, which ends the wait.
                    with contextlib.suppress(OSError):
                        while client.recv(_BLOCK):
                            pass
                    return
                for key, _ in selector.select(timeout=0.05):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    target: socket.socket | None = key.data
                    if self._holding.is_set():
                        break  # the blackhole began: drop what just arrived
                    try:
                        data = source.recv(_BLOCK)
                    except OSError:
                        return
                    if not data or target is None:
                        return
                    try:
                        target.sendall(data)
                    except OSError:
                        return

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
