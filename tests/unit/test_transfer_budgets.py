"""Cold transfers are bounded by bytes in flight, not by a count of requests (issue 9): per
file written, ``max_concurrency`` times the average chunk size, at least 4 MiB; per store
read, ``max_concurrency`` x 8 MiB. Small chunks get more requests at a time than large ones."""

from __future__ import annotations

import asyncio
import random

import pytest

from cas_store.config import MiB
from tests.support.wrappers import HookedObjectStore
from tests.unit.conftest import StoreFactory


class _Gauge:
    """The most requests of one kind at a time (each held briefly, so that they overlap)."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.now = 0
        self.most = 0

    async def __call__(self, method: str, key: str) -> None:
        if method != self.method or "/blobs/" not in key:
            return
        self.now += 1  # on the backend's one event loop: no lock needed
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(0.25)
        finally:
            self.now -= 1


def _data(size: int) -> bytes:
    return random.Random(size).randbytes(size)


@pytest.mark.parametrize(("chunk", "expected"), [(MiB, 8), (2 * MiB, 4), (4 * MiB, 2), (16 * MiB, 2)])
def test_uploads_in_flight_fill_the_byte_budget(make_store: StoreFactory, chunk: int, expected: int) -> None:
    gauge = _Gauge("put")
    hooked = HookedObjectStore(make_store().objects, gauge)
    store = make_store(hooked, chunk_size=chunk, max_concurrency=2)  # 2 x max(chunk, 4 MiB) in flight
    with store.open_write("f", "f") as f:
        f.write(_data(48 * MiB))
    assert gauge.most == expected


@pytest.mark.parametrize(("chunk", "expected"), [(MiB, 16), (8 * MiB, 2)])
def test_downloads_in_flight_fill_the_byte_budget(
    make_store: StoreFactory, chunk: int, expected: int
) -> None:
    data = _data(48 * MiB)
    writer = make_store(chunk_size=chunk)
    with writer.open_write("f", "f") as f:
        f.write(data)
    gauge = _Gauge("get_range")
    reader = make_store(
        HookedObjectStore(writer.objects, gauge), cache="cold", chunk_size=chunk, max_concurrency=2
    )
    record = reader.resolve("f")
    with reader.open_read(record, "f") as f:  # type: ignore[arg-type]
        assert f.read() == data  # a whole read queues every chunk at once
    assert gauge.most == expected
