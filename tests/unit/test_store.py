"""The Store facade, writer and reader over the in-memory backend (no server)."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from cas_store import store as store_module
from cas_store.backend import MemoryObjectStore
from cas_store.chunking import ChunkerSpec, FixedChunker
from cas_store.config import MiB
from cas_store.errors import BlobCorruptError, BlobMissingError, IncompatibleStoreError, InvalidPathError
from cas_store.hashing import hash_bytes
from cas_store.layout import split_path
from tests.support.wrappers import HookedObjectStore
from tests.unit.conftest import StoreFactory


def write(store, rel: str, data: bytes, pieces: list[int] | None = None) -> None:  # type: ignore[no-untyped-def]
    with store.open_write(rel, rel) as f:
        if pieces is None:
            f.write(data)
        else:
            at = 0
            for n in pieces:
                f.write(data[at : at + n])
                at += n
            f.write(data[at:])


def read(store, rel: str) -> bytes:  # type: ignore[no-untyped-def]
    record = store.resolve(rel)
    assert record is not None
    with store.open_read(record, rel) as f:
        return f.read()  # type: ignore[no-any-return]


def blob_keys(memory: MemoryObjectStore) -> list[str]:
    return memory.keys("root/blobs/")


def test_roundtrip_of_a_multi_chunk_file(make_store: StoreFactory) -> None:
    store = make_store()
    data = random.Random(1).randbytes(3 * MiB + 123)
    write(store, "a/b.bin", data)
    assert read(store, "a/b.bin") == data
    cold = make_store(cache="other-cache")  # an empty cache: every chunk comes from the bucket
    assert read(cold, "a/b.bin") == data


def test_entry_is_published_after_every_blob_it_names(
    make_store: StoreFactory, memory: MemoryObjectStore
) -> None:
    events: list[str] = []

    def hook(method: str, key: str) -> None:
        if method == "put":
            events.append(key)

    store = make_store(HookedObjectStore(memory, hook))
    write(store, "f", random.Random(2).randbytes(4 * MiB + 5))
    manifest_at = events.index("root/manifest/f")
    assert len([k for k in events[:manifest_at] if "/blobs/" in k]) == 5
    assert not [k for k in events[manifest_at:] if "/blobs/" in k]


def test_identical_content_is_uploaded_once(make_store: StoreFactory, memory: MemoryObjectStore) -> None:
    hooked = HookedObjectStore(memory)
    store = make_store(hooked)
    data = random.Random(3).randbytes(2 * MiB + 7)
    write(store, "one", data)
    puts = hooked.count("put", "root/blobs/")
    assert puts == 3 and len(blob_keys(memory)) == 3
    write(store, "two", data)  # remembered: no request for its blobs at all
    assert hooked.count("put", "root/blobs/") == puts
    other = make_store(hooked, cache="fresh")  # not remembered: one HEAD each, no upload
    heads = hooked.count("head", "root/blobs/")
    write(other, "three", data)
    assert hooked.count("head", "root/blobs/") == heads + 3
    assert hooked.count("put", "root/blobs/") == puts


def test_arbitrary_write_sizes_cut_as_one_write(make_store: StoreFactory) -> None:
    store = make_store()
    data = random.Random(4).randbytes(5 * MiB + 999)
    write(store, "whole", data)
    rng = random.Random(5)
    write(store, "pieces", data, [rng.choice([1, 7, 4096, MiB - 1, MiB + 3, 3 * MiB]) for _ in range(9)])
    whole, pieces = store.resolve("whole"), store.resolve("pieces")
    assert whole is not None and pieces is not None
    assert whole.entry.chunks == pieces.entry.chunks
    assert [c.size for c in whole.entry.chunks] == [MiB] * 5 + [999]


def test_memo_records_when_the_proof_was_sent(make_store: StoreFactory, memory: MemoryObjectStore) -> None:
    """gc-protocol.md W1: the memo holds the time the proving request was sent, not when it ended."""
    now = [1000.0]

    def slow(method: str, key: str) -> None:
        if "/blobs/" in key:
            now[0] += 100.0  # every blob request takes 100 s of the injected clock

    make_store(cache="creator").marker(create=True)  # created by another process
    store = make_store(HookedObjectStore(memory, slow), clock=lambda: now[0])
    write(store, "f", b"x" * (MiB + 1))  # two new chunks: HEAD (404) then PUT each
    key = store.blobs.key("xxh128", hash_bytes("xxh128", b"x" * MiB))
    proven = store.cache.mirror.blob_proven_at(store.id, key)
    # Sent: HEAD at 1000 (it took until 1100), PUT at 1100 (until 1200); the PUT proved it.
    assert proven == 1100.0
    assert now[0] >= 1300.0  # and the write finished well after


def test_a_store_this_process_created_uploads_without_asking_first(
    make_store: StoreFactory, memory: MemoryObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a store created a moment ago, a blob is there only if a concurrent writer put it: no
    HEAD, and the conditional PUT settles that case. A store someone else created is asked
    first, and so is the creator's own once it is older than NEW_STORE_WINDOW."""
    hooked = HookedObjectStore(memory)
    creator = make_store(hooked)
    write(creator, "f", b"x" * (MiB + 1))
    assert hooked.count("head", "root/blobs/") == 0 and hooked.count("put", "root/blobs/") == 2
    hooked.calls.clear()
    write(make_store(hooked, cache="other"), "g", b"y" * (MiB + 1))
    assert hooked.count("head", "root/blobs/") == 2 and hooked.count("put", "root/blobs/") == 2
    monkeypatch.setattr(store_module, "NEW_STORE_WINDOW", 0.0)
    hooked.calls.clear()
    write(creator, "h", b"z" * (MiB + 1))
    assert hooked.count("head", "root/blobs/") == 2


def test_memo_expires_after_blob_memo_ttl(make_store: StoreFactory, memory: MemoryObjectStore) -> None:
    now = [5000.0]
    hooked = HookedObjectStore(memory)
    make_store(cache="creator").marker(create=True)
    store = make_store(hooked, clock=lambda: now[0], blob_memo_ttl=60.0)
    data = b"y" * (MiB + 10)
    write(store, "a", data)
    heads = hooked.count("head", "root/blobs/")
    now[0] += 59.0
    write(store, "b", data)  # inside the ttl: no request
    assert hooked.count("head", "root/blobs/") == heads
    now[0] += 2.0
    write(store, "c", data)  # outside: proven again by a HEAD each; the memo is not refreshed by use
    assert hooked.count("head", "root/blobs/") == heads + 2


def test_missing_and_corrupt_blobs_are_distinct_errors(
    make_store: StoreFactory, memory: MemoryObjectStore
) -> None:
    store = make_store()
    corrupt, missing = b"c" * (MiB + 1), b"m" * (MiB + 2)
    write(store, "corrupt", corrupt)
    write(store, "missing", missing)
    digest_c = hash_bytes("xxh128", corrupt[:MiB])
    digest_m = hash_bytes("xxh128", missing[:MiB])
    key_c, key_m = store.blobs.key("xxh128", digest_c), store.blobs.key("xxh128", digest_m)
    memory.run("test", lambda: memory.put(key_c, b"C" * MiB))  # same size, other bytes
    memory.run("test", lambda: memory.delete_many([key_m]))
    cold = make_store(cache="cold")
    for rel, error, digest, key in (
        ("corrupt", BlobCorruptError, digest_c, key_c),
        ("missing", BlobMissingError, digest_m, key_m),
    ):
        record = cold.resolve(rel)
        assert record is not None
        with pytest.raises(error) as info:
            cold.open_read(record, rel).read()
        assert (info.value.digest, info.value.key) == (digest, key)


def test_foreign_prefix_is_not_an_empty_store(make_store: StoreFactory, memory: MemoryObjectStore) -> None:
    memory.run("test", lambda: memory.put("root/someone-elses/data.csv", b"a,b"))
    store = make_store()
    with pytest.raises(IncompatibleStoreError, match="no cas_store format marker"):
        store.resolve("x")


def test_unknown_chunker_is_a_clear_error() -> None:
    with pytest.raises(IncompatibleStoreError, match="does not know"):
        ChunkerSpec("rabin-2031", {}).build()
    assert ChunkerSpec("fixed", {"size": 2 * MiB}).build() == FixedChunker(2 * MiB)
    with pytest.raises(IncompatibleStoreError, match="misconfigured"):
        ChunkerSpec("fixed", {"size": 10}).build()


def test_a_url_with_an_empty_bucket_is_rejected() -> None:
    with pytest.raises(InvalidPathError, match="names no bucket"):
        split_path("s3cas:///foo.txt")
    assert split_path("s3cas://b/foo.txt") == ["b", "foo.txt"]


def test_gitignore_ignores_the_file_tox_leaves() -> None:
    """tox writes a `.venv` *file* into the checkout; it must not show as untracked."""
    top = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", ".venv"], cwd=top, check=False, capture_output=True
    )
    assert result.returncode == 0, "add `.venv` (the file, not only `.venv/`) to .gitignore"


def test_exclusive_create_refuses_an_existing_path(make_store: StoreFactory) -> None:
    store = make_store()
    write(store, "f", b"first")
    with pytest.raises(FileExistsError):
        store.open_write("f", "f", exclusive=True)
    late = store.open_write("g", "g", exclusive=True)  # checked at open: absent
    write(store, "g", b"another writer was faster")
    late.write(b"mine")
    with pytest.raises(FileExistsError, match="another writer"):
        late.close()  # the conditional PUT of the entry refuses
    assert read(store, "g") == b"another writer was faster"


def test_a_store_wiped_and_created_again_is_not_trusted_from_memory(
    make_store: StoreFactory, memory: MemoryObjectStore
) -> None:
    """The memo and mirror are keyed by the marker's store_id (C2): after the prefix is
    wiped and a new store created at the same root, nothing remembered of the old one counts."""
    data = random.Random(7).randbytes(MiB + 5)
    first = make_store(entry_ttl=3600)
    write(first, "f", data)
    old_id = first.id
    assert first.blob_proof(first.blobs.key("xxh128", hash_bytes("xxh128", data[:MiB]))) is not None
    memory.run("wipe", lambda: memory.delete_many(memory.keys("root/")))

    hooked = HookedObjectStore(memory)
    second = make_store(hooked, entry_ttl=3600)  # the same cache directory: the same machine
    assert second.resolve("f") is not None  # entry_ttl: still the mirror's answer, no request...
    assert hooked.calls == []
    write(second, "g", data)  # ...but a writer loads the marker: a new store, a new id
    assert second.id != old_id
    assert hooked.count("put", "root/blobs/") == 2  # the memo's proofs of the old store are not used
    assert second.resolve("f") is None
    assert read(make_store(cache="fresh"), "g") == data


def test_the_marker_decides_gc_grace_for_an_existing_store(make_store: StoreFactory) -> None:
    write(make_store(gc_grace=2), "a", b"x" * 20_000)
    later = make_store(gc_grace=3600, cache="other")
    assert later.gc is not None and later.gc.grace == 2  # the configuration is for new stores only


def test_memo_rows_prove_blobs_for_at_most_v(make_store: StoreFactory, memory: MemoryObjectStore) -> None:
    """W2: a memo row is trusted for min(blob_memo_ttl, V); V is 900 s with gc_grace = 3600."""
    now = [1_000_000.0]
    hooked = HookedObjectStore(memory)
    make_store(cache="creator", gc_grace=3600).marker(create=True)
    store = make_store(hooked, clock=lambda: now[0], gc_grace=3600, blob_memo_ttl=7200)
    data = random.Random(3).randbytes(MiB)
    write(store, "a", data)
    key = store.blobs.key("xxh128", hash_bytes("xxh128", data))
    now[0] += 899
    assert store.blob_proof(key) is not None
    now[0] += 2
    assert store.blob_proof(key) is None  # older than V, though younger than the memo's ttl
    hooked.calls.clear()
    write(store, "b", data)
    assert hooked.count("head", key) == 1 and hooked.count("put", key) == 0
