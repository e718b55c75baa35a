"""Range reads (issue 9): opening fetches nothing, a read fetches the chunks it covers, reading
ahead grows while access is sequential, a whole read fetches everything at once, close cancels
what is queued. Counted at the backend seam, on the in-memory backend."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from cas_store.config import MiB
from cas_store.store import Store
from tests.support.wrappers import HookedObjectStore
from tests.unit.conftest import StoreFactory

CHUNK = 8 * MiB


def _stores(make_store: StoreFactory, size: int, **config: object) -> tuple[bytes, Store, HookedObjectStore]:
    """A file of ``size`` bytes in fixed 8 MiB chunks, and a reader with an empty cache."""
    rng = random.Random(size)
    data = b"".join(rng.randbytes(min(MiB, size - at)) for at in range(0, size, MiB))
    writer = make_store(chunk_size=CHUNK)
    with writer.open_write("big", "big") as f:
        f.write(data)
    hooked = HookedObjectStore(writer.objects)
    reader = make_store(hooked, cache="cold", chunk_size=CHUNK, **config)
    return data, reader, hooked


def _blob_gets(hooked: HookedObjectStore) -> list[str]:
    return [k for m, k in hooked.calls if m == "get_range" and "/blobs/" in k]


def _settled(reader: Store) -> None:
    """Wait until every queued download has finished (read-ahead runs in the background)."""
    assert reader.downloads.wait_idle(30)


def test_open_fetches_nothing_beyond_the_entry(make_store: StoreFactory) -> None:
    _, reader, hooked = _stores(make_store, 40 * MiB)
    record = reader.resolve("big")
    hooked.calls.clear()
    with reader.open_read(record, "big"):  # type: ignore[arg-type]
        pass
    assert _blob_gets(hooked) == []


def test_s4_a_read_at_an_offset_fetches_the_covering_chunks_and_little_more(make_store: StoreFactory) -> None:
    """S4: 1 MiB at an offset of a large uncached file: <= 32 MiB in <= 4 blob GETs."""
    data, reader, hooked = _stores(make_store, 256 * MiB)
    record = reader.resolve("big")
    assert record is not None
    hooked.calls.clear()
    offset = 13 * CHUNK - 1000  # spans the boundary of chunks 12 and 13
    with reader.open_read(record, "big") as f:
        f.seek(offset)
        assert f.read(MiB) == data[offset : offset + MiB]
        _settled(reader)  # let the read-ahead run before close() could cancel it
    gets = _blob_gets(hooked)
    # The two chunks the read covers and a window of one ahead: one read call is one access,
    # however many chunks it spans (the window does not grow inside it).
    assert len(gets) == len(set(gets)) == 3, gets
    assert len(gets) * CHUNK <= 32 * MiB


def test_a_ranged_cat_fetches_only_the_covering_chunks(make_store: StoreFactory) -> None:
    data, reader, hooked = _stores(make_store, 64 * MiB, read_ahead="none")
    record = reader.resolve("big")
    hooked.calls.clear()
    with reader.open_read(record, "big") as f:  # type: ignore[arg-type]
        f.seek(20 * MiB)
        assert f.read(10) == data[20 * MiB : 20 * MiB + 10]
    _settled(reader)
    assert len(_blob_gets(hooked)) == 1


def test_sequential_reads_read_ahead_more_and_more(make_store: StoreFactory) -> None:
    data, reader, hooked = _stores(make_store, 160 * MiB)
    record = reader.resolve("big")
    hooked.calls.clear()
    fetched_by_chunk = []
    with reader.open_read(record, "big") as f:  # type: ignore[arg-type]
        for index in range(6):
            assert f.read(CHUNK) == data[index * CHUNK : (index + 1) * CHUNK]
            _settled(reader)
            fetched_by_chunk.append(len(set(_blob_gets(hooked))))
    # Reading chunk i queues a window of 1, 2, 4, 8, 8, ... chunks ahead of it.
    assert fetched_by_chunk == [2, 4, 7, 12, 13, 14], fetched_by_chunk


def test_a_seek_resets_the_read_ahead_window(make_store: StoreFactory) -> None:
    data, reader, hooked = _stores(make_store, 160 * MiB)
    record = reader.resolve("big")
    hooked.calls.clear()
    with reader.open_read(record, "big") as f:  # type: ignore[arg-type]
        for _ in range(3):
            f.read(CHUNK)  # window 1, 2, 4: chunks 0-6 fetched
        _settled(reader)
        f.seek(15 * CHUNK)
        assert f.read(10) == data[15 * CHUNK : 15 * CHUNK + 10]
        _settled(reader)
    assert len(set(_blob_gets(hooked))) == 7 + 2  # chunk 15 and a window of 1 again


def test_a_whole_read_fetches_every_chunk_once(make_store: StoreFactory) -> None:
    data, reader, hooked = _stores(make_store, 80 * MiB + 3)
    record = reader.resolve("big")
    hooked.calls.clear()
    with reader.open_read(record, "big") as f:  # type: ignore[arg-type]
        assert f.read() == data
    gets = _blob_gets(hooked)
    assert len(gets) == len(set(gets)) == 11


def test_close_cancels_read_ahead_that_has_not_started(make_store: StoreFactory) -> None:
    _, reader, hooked = _stores(make_store, 64 * MiB, max_concurrency=1)  # one chunk in flight
    record = reader.resolve("big")
    release = threading.Event()
    first: list[str] = []

    async def hold_the_first(method: str, key: str) -> None:
        if method == "get_range" and "/blobs/" in key and not first:
            first.append(key)
            await asyncio.get_running_loop().run_in_executor(None, release.wait)

    hooked.calls.clear()
    hooked.hook = hold_the_first
    with reader.open_read(record, "big") as f:  # type: ignore[arg-type]
        outcome: list[object] = []

        def read_some() -> None:
            try:
                outcome.append(f.read(10))
            except (ValueError, OSError) as exc:  # closed under it, as this test does on purpose
                outcome.append(exc)

        reading = threading.Thread(target=read_some)
        reading.start()  # chunk 0 downloads (held); chunk 1 is queued behind the byte budget
        for _ in range(500):
            if first:
                break
            threading.Event().wait(0.01)
        f.close()  # before chunk 1 could start
        release.set()
        reading.join(10)
    _settled(reader)
    assert len(_blob_gets(hooked)) == 1


@pytest.mark.parametrize("policy", ["auto", "none", "all"])
def test_every_policy_reads_the_same_bytes(make_store: StoreFactory, policy: str) -> None:
    data, reader, _ = _stores(make_store, 30 * MiB + 77, read_ahead=policy)
    record = reader.resolve("big")
    rng = random.Random(5)
    with reader.open_read(record, "big") as f:  # type: ignore[arg-type]
        for _ in range(20):
            at, n = rng.randrange(len(data)), rng.randrange(3 * MiB)
            f.seek(at)
            assert f.read(n) == data[at : at + n]
        f.seek(0)
        assert f.read() == data


def test_unknown_policy_is_refused(make_store: StoreFactory) -> None:
    with pytest.raises(ValueError, match="read_ahead"):
        make_store(read_ahead="sometimes")
