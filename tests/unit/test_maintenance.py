"""cas_store.maintenance over the in-memory backend: usage, verify, prefetch, the cache."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest

from cas_store.backend import MemoryObjectStore
from cas_store.config import MiB
from cas_store.errors import StoreOfflineError
from cas_store.format import Entry
from cas_store.hashing import hash_bytes
from cas_store.maintenance import (
    StoreNotFoundError,
    cache_info,
    clear_cache,
    prefetch,
    prune_cache,
    select_sample,
    usage,
    usage_of,
    verify,
)
from cas_store.store import Store
from tests.support.wrappers import HookedObjectStore
from tests.unit.conftest import StoreFactory

C = 1 * MiB  # the stores' chunk size
ALG = "xxh128"


def write(store: Store, rel: str, data: bytes) -> None:
    with store.open_write(rel, rel) as f:
        f.write(data)


def read(store: Store, rel: str) -> bytes:
    record = store.resolve(rel)
    assert record is not None
    with store.open_read(record, rel) as f:
        return f.read()


def digest(data: bytes) -> str:
    return hash_bytes(ALG, data)


@dataclass
class Fixture:
    """A store with duplicates, shared chunks, inline files, a removed and an overwritten path."""

    store: Store
    memory: MemoryObjectStore
    a: bytes  # a.bin and copy/a.bin: chunks a0 a1 a2
    half: bytes  # half.bin: a0 and h1
    old: bytes  # over.bin before the overwrite: o1 (unreferenced now)
    new: bytes  # over.bin now: o2
    gone: bytes  # gone.bin, removed: g0 g1 (unreferenced)

    def key(self, data: bytes) -> str:
        return self.store.blobs.key(ALG, digest(data))

    def put(self, key: str, data: bytes) -> None:
        self.memory.run("test", lambda: self.memory.put(key, data))

    def delete(self, key: str) -> None:
        self.memory.run("test", lambda: self.memory.delete_many([key]))


@pytest.fixture
def fx(make_store: StoreFactory, memory: MemoryObjectStore) -> Fixture:
    rng = random.Random(7)
    store = make_store()
    a = rng.randbytes(2 * C + 10)
    half = a[:C] + rng.randbytes(100)
    old, new = rng.randbytes(C // 2 + 20_000), rng.randbytes(30_000)
    gone = rng.randbytes(C + 1)
    write(store, "a.bin", a)
    write(store, "copy/a.bin", a)
    write(store, "half.bin", half)
    write(store, "tiny.txt", b"hello")
    write(store, "tiny2.txt", b"hello")
    write(store, "gone.bin", gone)
    store.remove(["gone.bin"])
    write(store, "over.bin", old)
    write(store, "over.bin", new)
    return Fixture(store, memory, a, half, old, new, gone)


# -- usage -------------------------------------------------------------------------------


def test_usage_counts_entries_blobs_and_what_is_unreferenced(fx: Fixture) -> None:
    u = usage(fx.store)
    assert u.entries == 6
    assert u.logical_bytes == 2 * len(fx.a) + len(fx.half) + 5 + 5 + len(fx.new)
    assert (u.inline_entries, u.inline_bytes) == (2, 10)
    assert u.blobs == 8  # a0 a1 a2 h1 g0 g1 o1 o2
    assert u.blob_bytes == len(fx.a) + 100 + len(fx.gone) + len(fx.old) + len(fx.new)
    assert (u.referenced_blobs, u.referenced_bytes) == (5, len(fx.a) + 100 + len(fx.new))
    assert (u.unreferenced_blobs, u.unreferenced_bytes) == (3, len(fx.gone) + len(fx.old))
    assert u.reclaimable_bytes == u.unreferenced_bytes
    assert u.stored_bytes == u.blob_bytes + 10
    assert u.deduplicated_bytes == u.referenced_bytes + 10  # random bytes: stored raw
    assert u.dedup_ratio == pytest.approx(u.logical_bytes / u.deduplicated_bytes)
    assert u.compression_ratio == 1.0
    assert u.space_ratio == pytest.approx(u.logical_bytes / u.stored_bytes)
    assert u.missing_blobs == 0 and u.unreadable == {}
    doc = u.to_dict()
    names = ("entries", "logical_bytes", "blobs", "deduplicated_bytes", "stored_bytes", "dedup_ratio")
    for name in (*names, "compression_ratio", "space_ratio", "reclaimable_bytes"):
        assert name in doc


def test_usage_of_an_empty_store_and_of_no_store(make_store: StoreFactory) -> None:
    with pytest.raises(StoreNotFoundError, match="no cas_store store at s3cas://bkt/root"):
        usage(make_store())
    store = make_store()
    store.marker(create=True)
    u = usage(store)
    assert (u.entries, u.blobs, u.stored_bytes, u.dedup_ratio) == (0, 0, 0, 1.0)


def test_usage_of_a_path_counts_distinct_chunks_and_what_is_cached(
    fx: Fixture, make_store: StoreFactory
) -> None:
    whole = usage_of(fx.store, "")
    assert (whole.files, whole.inline_files, whole.chunks) == (6, 2, 5)
    assert whole.logical_bytes == usage(fx.store).logical_bytes
    assert whole.stored_bytes == len(fx.a) + 100 + len(fx.new) + 10
    assert (whole.cached_chunks, whole.cached_bytes) == (5, whole.stored_bytes - 10)  # the writer's cache

    laptop = make_store(cache="laptop")
    copy = usage_of(laptop, "copy")
    assert (copy.path, copy.files, copy.chunks, copy.logical_bytes, copy.stored_bytes) == (
        "s3cas://bkt/root/copy",
        1,
        3,
        len(fx.a),
        len(fx.a),
    )
    assert (copy.cached_chunks, copy.cached_bytes) == (0, 0)
    laptop.cache.put_blob(ALG, digest(fx.a[:C]), fx.a[:C])
    file = usage_of(laptop, "half.bin")  # a file: itself
    assert (file.files, file.chunks, file.cached_chunks, file.cached_bytes) == (1, 2, 1, C)
    with pytest.raises(FileNotFoundError, match="s3cas://bkt/root/nothing"):
        usage_of(laptop, "nothing")


# -- verify ------------------------------------------------------------------------------


def test_verify_of_a_sound_store(fx: Fixture) -> None:
    events: list[tuple[str, int, int | None]] = []
    report = verify(fx.store, deep=True, progress=lambda *e: events.append(e))
    assert report.ok, report
    assert (report.entries, report.chunks, report.blobs) == (6, 9, 5)
    hashed = len(fx.a) + 100 + len(fx.new)
    assert (report.blobs_hashed, report.bytes_hashed) == (5, hashed)
    assert ("listing blobs", 8, None) in events and ("reading entries", 6, 6) in events
    assert events[-1] == ("downloading blobs", hashed, hashed)


def test_verify_finds_a_deleted_blob_and_the_paths_it_leaves_dangling(fx: Fixture) -> None:
    fx.delete(fx.key(fx.a[C : 2 * C]))
    report = verify(fx.store)
    assert not report.ok
    a1 = digest(fx.a[C : 2 * C])
    assert report.missing == {"a.bin": [a1], "copy/a.bin": [a1]}
    assert report.corrupt == {} and report.bad_inline == []
    assert report.to_dict()["missing"] == {"a.bin": [a1], "copy/a.bin": [a1]}
    # The memo of the blob is forgotten: writing the content again uploads it.
    assert fx.store.blob_proof(fx.key(fx.a[C : 2 * C])) is None
    write(fx.store, "again.bin", fx.a)
    assert verify(fx.store).ok


def test_deep_verify_finds_an_overwritten_blob_and_every_path_using_it(fx: Fixture) -> None:
    a0 = fx.a[:C]
    fx.put(fx.key(a0), random.Random(9).randbytes(C))  # same size: only hashing tells
    assert verify(fx.store).ok
    report = verify(fx.store, deep=True)
    assert not report.ok
    assert list(report.corrupt) == [digest(a0)]
    bad = report.corrupt[digest(a0)]
    assert bad.key == fx.key(a0) and "hash to" in bad.reason
    assert sorted(bad.paths) == ["a.bin", "copy/a.bin", "half.bin"]
    assert report.missing == {}


def test_verify_finds_a_blob_of_the_wrong_size_without_downloading(fx: Fixture) -> None:
    h1 = fx.half[C:]
    fx.put(fx.key(h1), h1[:50])
    report = verify(fx.store)
    assert report.corrupt[digest(h1)].paths == ["half.bin"]
    # The store compresses: a blob shorter than its chunk may be a zstd frame, so this one,
    # not the length its entry records, is downloaded; it does not decode.
    assert "its 50 bytes do not decode" in report.corrupt[digest(h1)].reason
    assert report.blobs_hashed == 1


def test_verify_without_compression_finds_a_short_blob_from_the_listing(
    make_store: StoreFactory, memory: MemoryObjectStore
) -> None:
    store = make_store(compression="none")
    data = random.Random(3).randbytes(C + 100)
    with store.open_write("f.bin", "f.bin") as f:
        f.write(data)
    tail = data[C:]
    memory.run("test", lambda: memory.put(store.blobs.key(ALG, digest(tail)), tail[:50]))
    report = verify(store)
    assert report.blobs_hashed == 0
    assert "50 bytes in the bucket, 100 expected" in report.corrupt[digest(tail)].reason


def test_verify_reports_bad_inline_content_and_unreadable_entries(fx: Fixture) -> None:
    fx.store.publish("bad.txt", Entry(5, ALG, digest(b"other"), inline=b"hello"))
    fx.put("root/manifest/broken.json", b"not an entry")
    report = verify(fx.store)
    assert report.bad_inline == ["bad.txt"]
    assert list(report.unreadable) == ["broken.json"]
    assert "not valid JSON" in report.unreadable["broken.json"]
    assert report.entries == 7 and not report.ok
    assert list(usage(fx.store).unreadable) == ["broken.json"]  # usage skips it too


def test_deep_verify_neither_reads_nor_fills_the_cache(fx: Fixture, make_store: StoreFactory) -> None:
    fresh = make_store(cache="fresh")
    assert verify(fresh, deep=True).ok
    assert cache_info(fresh.cache).blobs == 0
    fx.put(fx.key(fx.new), b"x" * len(fx.new))  # the writer's cache still holds the good bytes
    assert not verify(fx.store, deep=True).ok


def test_sample_selects_a_deterministic_subset(fx: Fixture, make_store: StoreFactory) -> None:
    keys = [f"k{i}" for i in range(40)]
    assert select_sample(keys, 25, seed=3) == select_sample(list(reversed(keys)), 25, seed=3)
    assert len(select_sample(keys, 25, seed=3)) == 10
    assert len(select_sample(keys, 0.1, seed=3)) == 1
    assert select_sample(keys, 100, seed=3) == sorted(keys)
    assert {tuple(select_sample(keys, 25, seed=s)) for s in range(5)} != {tuple(select_sample(keys, 25, 3))}
    with pytest.raises(ValueError, match="percentage"):
        select_sample(keys, 0, seed=1)

    def downloaded(seed: int) -> list[str]:
        hooked = HookedObjectStore(fx.memory)
        report = verify(make_store(hooked, cache=f"s{seed}"), deep=True, sample=50, seed=seed)
        assert report.ok and report.blobs_hashed == math.ceil(5 * 0.5)
        return sorted(k for m, k in hooked.calls if m == "get_range")

    first = downloaded(1)
    assert len(first) == 3 and downloaded(1) == first
    referenced = [fx.key(d) for d in (fx.a[:C], fx.a[C : 2 * C], fx.a[2 * C :], fx.half[C:], fx.new)]
    assert first == select_sample(referenced, 50, seed=1)
    with pytest.raises(ValueError, match="deep"):
        verify(fx.store, sample=50)


# -- prefetch ----------------------------------------------------------------------------


def test_prefetched_files_read_offline(fx: Fixture, make_store: StoreFactory) -> None:
    laptop = make_store(cache="laptop")
    report = prefetch(laptop, ["copy", "tiny.txt"])
    assert (report.files, report.inline_files, report.chunks) == (2, 1, 3)
    assert (report.downloaded_chunks, report.downloaded_bytes) == (3, len(fx.a))
    assert (report.cached_chunks, report.uncached_chunks, report.failed) == (0, 0, {})
    assert report.ok

    fx.memory.offline = True
    assert read(laptop, "copy/a.bin") == fx.a
    assert read(laptop, "tiny.txt") == b"hello"
    assert [r for r, _ in laptop.list_tree("copy")] == ["copy/a.bin"]
    with pytest.raises(StoreOfflineError):
        read(laptop, "half.bin")  # never prefetched
    fx.memory.offline = False

    again = prefetch(laptop, ["copy/a.bin", "half.bin"])  # a0 is shared: cached already
    assert (again.files, again.chunks, again.cached_chunks, again.downloaded_chunks) == (2, 4, 3, 1)
    assert (again.cached_bytes, again.downloaded_bytes) == (len(fx.a), 100)


def test_prefetch_reports_files_whose_blobs_are_missing(fx: Fixture, make_store: StoreFactory) -> None:
    fx.delete(fx.key(fx.half[C:]))
    laptop = make_store(cache="laptop")
    report = prefetch(laptop, [""])  # the whole store
    assert list(report.failed) == ["s3cas://bkt/root/half.bin"]
    assert "missing" in report.failed["s3cas://bkt/root/half.bin"]
    assert report.downloaded_chunks == 4 and not report.ok
    with pytest.raises(FileNotFoundError, match="no such file"):
        prefetch(laptop, ["nothing/here"])


def test_prefetch_offline_fails_fast_for_what_is_not_cached(fx: Fixture, make_store: StoreFactory) -> None:
    laptop = make_store(cache="laptop")
    prefetch(laptop, ["tiny.txt"])
    fx.memory.offline = True
    assert prefetch(laptop, ["tiny.txt"]).files == 1  # nothing to download: fine offline
    with pytest.raises(StoreOfflineError):
        prefetch(laptop, ["a.bin"])


# -- the local cache ---------------------------------------------------------------------


def test_cache_info_prune_and_clear(fx: Fixture) -> None:
    cache = fx.store.cache
    info = cache_info(cache)
    chunks = [fx.a[:C], fx.a[C : 2 * C], fx.a[2 * C :], fx.half[C:], fx.gone[:C], fx.gone[C:], fx.old, fx.new]
    assert info.blobs == 8 and info.blob_bytes == sum(len(c) for c in chunks)
    assert info.size_bytes > info.blob_bytes  # plus the database
    assert (info.size_limit, info.eviction_policy) == (fx.store.config.cache_size, "least-recently-stored")
    assert info.directory == str(cache.directory) and info.mirror_bytes > 0

    target = info.size_bytes - info.blob_bytes + 100_000  # room for the newest blob only
    result = prune_cache(cache, target)
    assert result.removed_blobs == 7 and result.size_before == info.size_bytes
    assert result.size_after <= target
    assert cache.has_blob(ALG, digest(fx.new)) and not cache.has_blob(ALG, digest(fx.a[:C]))
    assert cache_info(cache).size_limit == info.size_limit  # the limit is unchanged

    assert clear_cache(cache) == 1
    assert cache_info(cache).blobs == 0
    assert fx.store.mirrored("a.bin") is not None  # the mirror is kept
    assert read(fx.store, "a.bin") == fx.a  # and reads refill the cache
    with pytest.raises(ValueError, match="negative"):
        prune_cache(cache, -1)


def test_prune_works_when_the_policy_never_evicts(make_store: StoreFactory) -> None:
    store = make_store(cache_eviction_policy="none")
    write(store, "x", random.Random(1).randbytes(2 * C))
    assert prune_cache(store.cache, 0).removed_blobs == 2
    info = cache_info(store.cache)
    assert (info.blobs, info.eviction_policy) == (0, "none")
