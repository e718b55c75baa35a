"""File objects: whole reads fill one buffer; seek/tell/readinto behave like a local file."""

from __future__ import annotations

import io
import random
import tracemalloc

import pytest

from cas_store.config import MiB
from cas_store.fileobj import wait_background
from tests.unit.conftest import StoreFactory
from tests.unit.test_store import read, write


@pytest.mark.parametrize("cached_as", ["chunks", "one file"])
def test_whole_read_of_a_chunked_file_allocates_it_once(make_store: StoreFactory, cached_as: str) -> None:
    store = make_store()
    data = random.Random(7).randbytes(16 * MiB + 3)
    write(store, "big", data)
    assert read(store, "big") == data  # warm: every chunk in the cache now
    wait_background()  # and the whole-file copy assembled (its buffer is not this read's)
    record = store.resolve("big")
    assert record is not None
    if cached_as == "chunks":
        store.cache.discard(record.entry.algorithm, record.entry.digest)
    else:
        assert store.cache.has_blob(record.entry.algorithm, record.entry.digest)
    with store.open_read(record, "big") as f:
        tracemalloc.start()
        try:
            got = f.read()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert got == data and type(got) is bytes
    # Joining per-chunk reads would hold the parts and the result at once: about 2x.
    assert peak < 1.25 * len(data), f"peak {peak / MiB:.1f} MiB for a {len(data) / MiB:.1f} MiB read"


def test_reads_seeks_and_readinto_match_a_local_file(make_store: StoreFactory) -> None:
    store = make_store()
    data = random.Random(8).randbytes(3 * MiB + 17)
    write(store, "f", data)
    record = store.resolve("f")
    assert record is not None
    local = io.BytesIO(data)
    rng = random.Random(9)
    with store.open_read(record, "f") as f:
        for _ in range(200):
            op = rng.choice(["read", "seek", "readinto", "tell"])
            if op == "read":
                n = rng.choice([-1, 0, 1, 100, MiB, 2 * MiB + 5])
                assert f.read(n) == local.read(n)
            elif op == "seek":
                whence = rng.choice([io.SEEK_SET, io.SEEK_CUR, io.SEEK_END])
                offset = rng.randrange(0, len(data)) if whence == io.SEEK_SET else rng.randrange(-1000, 1000)
                if whence != io.SEEK_SET and local.tell() + offset < 0:
                    continue
                if whence == io.SEEK_END and offset > 0:
                    offset = -offset
                assert f.seek(offset, whence) == local.seek(offset, whence)
            elif op == "readinto":
                a, b = bytearray(rng.randrange(1, 70_000)), None
                b = bytearray(len(a))
                assert f.readinto(a) == local.readinto(b)
                assert a == b
            assert f.tell() == local.tell()
