"""Wire faults the s3fs backend must absorb or translate, on a loopback server that cuts bodies short.

A response body cut short (connection reset mid-body) surfaces from aiohttp as
``ClientPayloadError``, which botocore does not retry: the backend must retry it like a
connection error and translate it when retries run out (s3-field-notes.md).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from cas_store.backend.s3 import S3Connection
from cas_store.config import StoreConfig
from cas_store.errors import S3Error

BODY = bytes(range(256)) * 4096  # 1 MiB


class _CuttingHandler(http.server.BaseHTTPRequestHandler):
    """GET of any key: the first ``cuts`` answers promise the whole body but send half of it."""

    protocol_version = "HTTP/1.1"
    state: dict[str, int]

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        start, end = 0, len(BODY) - 1
        header = self.headers.get("Range")
        if header:
            first, last = header.removeprefix("bytes=").split("-")
            start, end = int(first), int(last)
        body = BODY[start : end + 1]
        self.send_response(206 if header else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", '"x"')
        if header:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(BODY)}")
        self.end_headers()
        self.state["gets"] += 1
        if self.state["gets"] <= self.state["cuts"]:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # reset mid-body
            return
        self.wfile.write(body)


@pytest.fixture
def cutting_server() -> Iterator[tuple[str, dict[str, int]]]:
    state = {"gets": 0, "cuts": 0}
    handler = type("Handler", (_CuttingHandler,), {"state": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", state
    finally:
        server.shutdown()
        server.server_close()


def _objects(endpoint: str):  # type: ignore[no-untyped-def]
    config = StoreConfig(
        aws_access_key_id="k", aws_secret_access_key="s", client_kwargs={"endpoint_url": endpoint}
    )
    return S3Connection(config).bucket("b")


def _read(objects, size: int = len(BODY)) -> bytes:  # type: ignore[no-untyped-def]
    got = bytearray(size)

    def sink(offset: int, data: bytes) -> None:
        got[offset : offset + len(data)] = data

    objects.run("reading k", lambda: objects.get_range("k", 0, size, sink))
    return bytes(got)


def test_a_body_cut_short_is_retried(cutting_server: tuple[str, dict[str, int]]) -> None:
    endpoint, state = cutting_server
    state["cuts"] = 1
    assert _read(_objects(endpoint)) == BODY
    assert state["gets"] == 2


def test_small_gets_are_retried_too(cutting_server: tuple[str, dict[str, int]]) -> None:
    endpoint, state = cutting_server
    state["cuts"] = 1
    objects = _objects(endpoint)
    found = objects.run("reading k", lambda: objects.get("k"))
    assert found is not None and found[0] == BODY


def test_bodies_cut_short_every_time_raise_a_translated_error(
    cutting_server: tuple[str, dict[str, int]],
) -> None:
    endpoint, state = cutting_server
    state["cuts"] = 1000
    with pytest.raises(S3Error, match="cut short") as info:
        _read(_objects(endpoint))
    assert info.value.code == "IncompleteBody"
