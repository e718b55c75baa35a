"""Free TCP ports on the loopback address."""

from __future__ import annotations

import socket

from tests.support.env import LOOPBACK

__all__ = ["free_ports"]


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
