"""Write reports: what each published write added to the bucket (the ZenML flavor logs them)."""

from __future__ import annotations

import os

from cas_store.backend import MemoryObjectStore
from cas_store.config import MiB
from cas_store.store import Store
from cas_store.writer import WriteReport
from tests.unit.conftest import StoreFactory


def _write(store: Store, rel: str, data: bytes) -> list[WriteReport]:
    reports: list[WriteReport] = []
    with store.open_write(rel, f"s3cas://bkt/root/{rel}", on_written=reports.append) as f:
        f.write(data)
    return reports


def _blob_bytes(memory: MemoryObjectStore) -> int:
    return sum(len(data) for key, (data, _) in memory.objects.items() if "/blobs/" in key)


def test_a_new_file_adds_its_chunks_and_a_rewrite_adds_nothing(
    make_store: StoreFactory, memory: MemoryObjectStore
) -> None:
    store = make_store()
    data = os.urandom(3 * MiB + 12345)
    first = _write(store, "run1/model.bin", data)
    assert first == [WriteReport("s3cas://bkt/root/run1/model.bin", len(data), len(data))]
    assert _blob_bytes(memory) == len(data)  # the report says what the bucket gained
    assert _write(store, "run2/model.bin", data)[0].added == 0


def test_a_file_sharing_chunks_reports_only_the_new_ones(make_store: StoreFactory) -> None:
    store = make_store()  # fixed 1 MiB chunks
    head, tail = os.urandom(2 * MiB), os.urandom(1 * MiB)
    _write(store, "a", head)
    assert _write(store, "b", head + tail)[0].added == len(tail)


def test_a_repeated_chunk_within_a_file_is_counted_once(make_store: StoreFactory) -> None:
    store = make_store()
    block = os.urandom(1 * MiB)
    report = _write(store, "a", block * 4)[0]
    assert (report.size, report.added) == (4 * MiB, MiB)


def test_a_small_file_kept_in_its_entry_adds_its_bytes(make_store: StoreFactory) -> None:
    store = make_store()
    for _ in range(2):  # stored again with each entry
        assert _write(store, "small.json", b'{"a": 1}') == [
            WriteReport("s3cas://bkt/root/small.json", 8, 8, inline=True)
        ]


def test_a_failing_observer_does_not_fail_the_published_write(make_store: StoreFactory) -> None:
    store = make_store()

    def broken(report: WriteReport) -> None:
        raise RuntimeError("observer bug")

    with store.open_write("a", "a", on_written=broken) as f:
        f.write(os.urandom(2 * MiB))
    assert store.resolve("a") is not None


def test_a_failed_write_reports_nothing(make_store: StoreFactory) -> None:
    store = make_store()
    reports: list[WriteReport] = []
    f = store.open_write("a", "a", on_written=reports.append)
    f.write(os.urandom(2 * MiB))
    f.discard()  # as leaving a with block by an exception: nothing is published
    assert reports == []
    assert store.resolve("a") is None
