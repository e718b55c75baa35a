"""What a second version of a file adds to a store with the default chunker (issue 9, goals S2,
S2b and S3): the bytes of the new blobs in the bucket, as a share of the file's size.

Full sizes, through the in-memory backend: a 1 GiB file (S2, S2b) and a 256 MiB CSV (S3).
bench/chunking.py measures the same workloads for the other candidate chunkers.
"""

from __future__ import annotations

import pytest

from cas_store.backend import MemoryObjectStore
from cas_store.config import GiB, MiB
from cas_store.store import Store
from tests.support import workloads
from tests.support.workloads import Pieces
from tests.unit.conftest import StoreFactory

WRITE = 1 * MiB


def write(store: Store, rel: str, pieces: Pieces) -> int:
    """Write ``pieces`` in order, each in writes of at most 1 MiB; return the file's size."""
    with store.open_write(rel, rel) as f:
        return workloads.write_pieces(f, pieces, WRITE)


def added(store: Store, memory: MemoryObjectStore, rel: str, pieces: Pieces) -> float:
    """Write a version; the bytes of the blobs it added to the bucket, over its size."""
    before = set(memory.keys("root/blobs/"))
    size = write(store, rel, pieces)
    new = [k for k in memory.keys("root/blobs/") if k not in before]
    return sum(len(memory.data(k)) for k in new) / size


@pytest.fixture(scope="module")
def gib() -> bytes:
    return workloads.random_bytes(1 * GiB, 1)


@pytest.fixture
def store(make_store: StoreFactory) -> Store:
    # Deduplication alone: the CSV would compress too (tests/unit/test_compression.py).
    return make_store(chunk_size=None, compression="none")  # a new store: the default chunker


def test_s2_scattered_edits_of_a_gib_file_add_at_most_5_percent(
    store: Store, memory: MemoryObjectStore, gib: bytes
) -> None:
    assert store.chunker().name == "fastcdc2020"
    write(store, "v1", [gib])
    share = added(store, memory, "copy/v2", workloads.scattered_overwrites(gib, count=10, size=4096))
    assert share <= 0.05, f"10 x 4 KiB edits of 1 GiB added {share:.2%}"
    # Measured 2.42% (about 10 chunks of ~2.3 MiB); fixed 8 MiB chunks add 7.8%.
    assert share < 0.035


def test_s2b_100_bytes_inserted_near_the_start_add_at_most_5_percent(
    store: Store, memory: MemoryObjectStore, gib: bytes
) -> None:
    write(store, "v1", [gib])
    share = added(store, memory, "v2", workloads.inserted_near_start(gib, at=1000, size=100))
    assert share <= 0.05, f"100 bytes inserted at 1000 added {share:.2%}"
    # Measured 0.21%: one chunk; fixed chunks add 100% (every offset moves).
    assert share < 0.01


def test_s3_a_csv_with_10_percent_more_rows_adds_at_most_12_percent(
    store: Store, memory: MemoryObjectStore
) -> None:
    first, second = workloads.csv_versions(256 * MiB, grow=0.10)
    assert len(first) >= 256 * MiB
    write(store, "table.csv", [first])
    share = added(store, memory, "table-v2.csv", [second])
    ideal = (len(second) - len(first)) / len(second)
    assert share <= 0.12, f"10% more rows added {share:.2%} (ideal {ideal:.2%})"
    # The appended rows and the old last chunk, cut anew: measured 9.56% for an ideal 9.12%.
    assert ideal <= share < ideal + 0.02
