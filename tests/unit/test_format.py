"""Bucket formats 1 and 2: paths, keys, the marker, manifest entries, and every test vector
of docs/format.md (section 9)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import random
import re
from pathlib import Path
from typing import Any

import pytest

from cas_store.backend import MemoryObjectStore
from cas_store.chunking import ChunkerSpec, FastCDCChunker
from cas_store.compression import DEFAULT_COMPRESSION, Compression, decode
from cas_store.errors import IncompatibleStoreError, IntegrityError, InvalidPathError
from cas_store.format import Chunk, Entry, Marker
from cas_store.hashing import hash_bytes
from cas_store.layout import Root, blob_relkey, split_path
from cas_store.maintenance import collect
from cas_store.safety import GCDurations
from tests.support.wrappers import HookedObjectStore
from tests.unit.conftest import StoreFactory


def test_blob_key_has_two_level_hex_fanout() -> None:
    digest = hash_bytes("xxh128", b"abc")
    assert blob_relkey("xxh128", digest) == f"blobs/xxh128/{digest[:2]}/{digest[2:4]}/{digest}"
    assert (
        Root("b", "p/q").blob_key("xxh128", digest) == f"p/q/blobs/xxh128/{digest[:2]}/{digest[2:4]}/{digest}"
    )
    assert Root("b").blob_key("xxh128", digest).startswith("blobs/")


def test_manifest_keys_mirror_logical_paths() -> None:
    root = Root.parse("s3cas://bkt/zenml")
    assert root.manifest_key("a/b.txt") == "zenml/manifest/a/b.txt"
    assert root.rel_from_manifest_key("zenml/manifest/a/b.txt") == "a/b.txt"
    assert root.manifest_dir_key("") == "zenml/manifest/"
    assert root.marker_key() == "zenml/cas-store.json"
    with pytest.raises(InvalidPathError, match="directory"):
        root.manifest_key("")


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("s3cas://b/p/x", ["b", "p", "x"]),
        ("b/p/x/", ["b", "p", "x"]),
        ("/b//p/./x", ["b", "p", "x"]),
        ("s3cas://b/dir with space/ünïcödé.txt", ["b", "dir with space", "ünïcödé.txt"]),
    ],
)
def test_split_path_normalises(path: str, segments: list[str]) -> None:
    assert split_path(path) == segments


@pytest.mark.parametrize(
    "path", ["s3cas://b/p/../q", "b/..", "s3://b/p", "file:///etc/passwd", "b/p\x00x", "b/\nx"]
)
def test_split_path_rejects_escapes_and_foreign_schemes(path: str) -> None:
    with pytest.raises(InvalidPathError):
        split_path(path)


def test_relative_rejects_paths_outside_the_root() -> None:
    root = Root.parse("s3cas://bkt/store")
    assert root.relative("s3cas://bkt/store/a/b") == "a/b"
    assert root.relative("bkt/store") == ""
    for outside in ("s3cas://bkt/other/a", "s3cas://other/store/a", "bkt/storeX/a"):
        with pytest.raises(InvalidPathError, match="outside the store root"):
            root.relative(outside)


def test_overlong_key_is_rejected() -> None:
    with pytest.raises(InvalidPathError, match="too long"):
        Root("b", "p").manifest_key("x" * 1100)


def test_entry_round_trips_inline_and_chunked() -> None:
    data = b"tiny"
    inline = Entry(len(data), "xxh128", hash_bytes("xxh128", data), inline=data)
    assert Entry.decode(inline.encode(), "t") == inline
    digest = hash_bytes("xxh128", b"x" * 100)
    chunked = Entry(100, "xxh128", digest, chunks=(Chunk(digest, 100),))
    assert Entry.decode(chunked.encode(), "t") == chunked
    doc = json.loads(chunked.encode())
    assert doc == {
        "v": 1,
        "size": 100,
        "algorithm": "xxh128",
        "digest": digest,
        "chunks": [{"digest": digest, "size": 100}],
    }


@pytest.mark.parametrize(
    "doc",
    [
        {
            "v": 1,
            "size": 5,
            "algorithm": "xxh128",
            "digest": "00" * 16,
            "chunks": [],
            "inline": "YWJj",
        },  # 3 != 5
        {"v": 1, "size": 5, "algorithm": "xxh128", "digest": "zz", "chunks": [], "inline": "YWJjZGU="},
        {
            "v": 1,
            "size": 10,
            "algorithm": "xxh128",
            "digest": "00" * 16,
            "chunks": [{"digest": "00" * 16, "size": 4}],
        },
        {"v": 1, "size": 1},
    ],
)
def test_malformed_entries_are_integrity_errors(doc: dict[str, object]) -> None:
    with pytest.raises(IntegrityError):
        Entry.decode(json.dumps(doc).encode(), "t")


def test_future_entry_version_is_incompatible() -> None:
    doc = {"v": 2, "size": 0, "algorithm": "xxh128", "digest": "00" * 16, "chunks": []}
    with pytest.raises(IncompatibleStoreError, match="upgrade"):
        Entry.decode(json.dumps(doc).encode(), "t")


def test_marker_round_trip_and_incompatible_versions() -> None:
    marker = Marker(1, "sha256", 4 * 2**20, "cas_store test")
    assert Marker.decode(marker.encode(), "t") == marker
    future = json.dumps({"format": "cas_store", "version": 4, "hash_algorithm": "xxh128"}).encode()
    with pytest.raises(IncompatibleStoreError, match="version 4"):
        Marker.decode(future, "t")
    with pytest.raises(IncompatibleStoreError, match="not a valid"):
        Marker.decode(b'{"format": "something-else"}', "t")
    with pytest.raises(IncompatibleStoreError, match="unknown hash"):
        Marker.decode(
            json.dumps({"format": "cas_store", "version": 1, "hash_algorithm": "md5"}).encode(), "t"
        )


@pytest.mark.parametrize("algorithm", ["xxh128", "sha256", "blake3"])
def test_hash_algorithms_are_stable(algorithm: str) -> None:
    """The test vectors of docs/format.md section 6."""
    known = {
        "xxh128": "06b05ab6733a618578af5f94892f3950",
        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "blake3": "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
    }
    assert hash_bytes(algorithm, b"abc") == known[algorithm]
    if algorithm == "xxh128":
        import xxhash

        assert known["xxh128"] == xxhash.xxh3_128_hexdigest(b"abc")


@pytest.mark.parametrize("chunk_size", [True, 0, 1024, 6 * 2**30, "8"])
def test_marker_rejects_chunk_sizes_writers_cannot_use(chunk_size: object) -> None:
    doc = {"format": "cas_store", "version": 1, "hash_algorithm": "xxh128", "chunk_size": chunk_size}
    with pytest.raises(IncompatibleStoreError, match="chunk_size"):
        Marker.decode(json.dumps(doc).encode(), "t")


def test_marker_without_chunk_size_is_accepted() -> None:
    doc = {"format": "cas_store", "version": 1, "hash_algorithm": "xxh128", "unknown-future-field": 1}
    assert Marker.decode(json.dumps(doc).encode(), "t").chunk_size is None


# -- format version 2 ---------------------------------------------------------------------

#: The test vector of docs/format.md: a version 2 marker exactly as cas_store writes it.
V2_MARKER = b"""{
 "chunker": {
  "name": "fixed",
  "params": {
   "size": 8388608
  }
 },
 "created_by": "cas_store 0.2.0",
 "format": "cas_store",
 "gc": {
  "delta": 86400.0,
  "grace": 86400.0,
  "min_age": 86400.0,
  "publish": 900.0,
  "validity": 21600.0
 },
 "hash_algorithm": "xxh128",
 "store_id": "3f9c2a6e0b7d4e18a5c1f2d3e4b5a697",
 "version": 2
}
"""


def test_v2_marker_test_vector_round_trips() -> None:
    marker = Marker.decode(V2_MARKER, "t")
    assert marker.version == 2
    assert marker.store_id == "3f9c2a6e0b7d4e18a5c1f2d3e4b5a697"
    assert marker.chunker_spec == ChunkerSpec("fixed", {"size": 8 * 2**20})
    assert marker.gc == GCDurations(86400, 86400, 21600, 900, 86400)
    assert marker.encode() == V2_MARKER
    fresh = Marker.new("xxh128", ChunkerSpec("fixed", {"size": 8 * 2**20}), 86400, "cas_store 0.2.0")
    assert fresh.encode() == V2_MARKER.replace(b"3f9c2a6e0b7d4e18a5c1f2d3e4b5a697", fresh.store_id.encode())


def test_new_markers_have_distinct_random_store_ids() -> None:
    spec = ChunkerSpec("fixed", {"size": 2**20})
    ids = {Marker.new("xxh128", spec, 60, "t").store_id for _ in range(50)}
    assert len(ids) == 50


@pytest.mark.parametrize(
    ("grace", "durations"),
    [
        (86400, (86400, 21600, 900, 86400)),
        (2, (2, 0.5, 2 / 96, 2)),
        (7 * 86400, (7 * 86400, 7 * 21600, 900, 7 * 86400)),  # P is capped at 15 min
    ],
)
def test_gc_durations_derive_from_the_grace(grace: float, durations: tuple[float, ...]) -> None:
    gc = GCDurations.from_grace(grace)
    assert (gc.delta, gc.validity, gc.publish, gc.min_age) == pytest.approx(durations)
    gc.validate("t")  # the derivation keeps the relations the marker requires


@pytest.mark.parametrize("grace", [0, -5, 0.5, True, "1d", float("nan")])
def test_unusable_gc_grace_is_refused(grace: object) -> None:
    with pytest.raises(ValueError, match="gc_grace"):
        GCDurations.from_grace(grace)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("delta", 21600.0),  # delta < 2 V
        ("publish", 0.0),
        ("publish", 6000.0),  # 4 P > V
        ("min_age", -1.0),
        ("validity", "x"),
    ],
)
def test_v2_marker_with_unsafe_gc_durations_is_incompatible(field: str, value: object) -> None:
    doc = json.loads(V2_MARKER)
    doc["gc"][field] = value
    with pytest.raises(IncompatibleStoreError, match=r"garbage-collection durations|'gc' object"):
        Marker.decode(json.dumps(doc).encode(), "t")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("store_id", None, "store_id"),
        ("store_id", "XYZ", "store_id"),
        ("chunker", None, "chunker"),
        ("chunker", {"name": "rabin-from-the-future"}, "does not know"),
        ("chunker", {"name": "fixed", "params": {"size": 12}}, "misconfigured"),
        ("gc", None, "gc"),
        ("version", 4, "version 4"),
        ("version", 2.0, "version 2.0"),
        ("version", True, "version True"),
        ("store_id", "3F9C2A6E0B7D4E18A5C1F2D3E4B5A697", "store_id"),
        ("upgraded_at", "yesterday", "upgraded_at"),
    ],
)
def test_v2_marker_fields_are_checked(field: str, value: object, match: str) -> None:
    doc = json.loads(V2_MARKER)
    doc[field] = value
    with pytest.raises(IncompatibleStoreError, match=match):
        Marker.decode(json.dumps(doc).encode(), "t")


@pytest.mark.parametrize(("field", "match"), [("store_id", "store_id"), ("chunker", "chunker"), ("gc", "gc")])
def test_v2_marker_without_a_field_is_incompatible(field: str, match: str) -> None:
    doc = json.loads(V2_MARKER)
    del doc[field]
    with pytest.raises(IncompatibleStoreError, match=match):
        Marker.decode(json.dumps(doc).encode(), "t")


def test_v2_fixed_chunker_defaults() -> None:
    """docs/format.md 3.3: an absent ``params`` is ``{}``, and ``fixed`` without ``size`` is 8 MiB."""
    doc = json.loads(V2_MARKER)
    doc["chunker"] = {"name": "fixed"}
    chunker = Marker.decode(json.dumps(doc).encode(), "t").chunker_spec.build()
    assert chunker.max_size == 8388608


def test_v2_marker_ignores_unknown_fields_and_chunk_size() -> None:
    doc = json.loads(V2_MARKER)
    doc.update({"chunk_size": 4 * 2**20, "unknown-future-field": 1})
    assert Marker.decode(json.dumps(doc).encode(), "t") == Marker.decode(V2_MARKER, "t")


def test_v1_marker_upgrades_to_v2_with_the_same_hash_and_chunker() -> None:
    v1 = Marker(1, "sha256", 4 * 2**20, "cas_store 0.1.0")
    v2 = v1.upgraded(gc_grace=3600, created_by="cas_store 0.2.0", now=1234.5)
    assert (v2.version, v2.hash_algorithm, v2.upgraded_at) == (2, "sha256", 1234.5)
    assert v2.chunker_spec == v1.chunker_spec == ChunkerSpec("fixed", {"size": 4 * 2**20})
    assert v2.gc == GCDurations.from_grace(3600)
    assert Marker.decode(v2.encode(), "t") == v2
    with pytest.raises(ValueError, match="version 1"):
        v2.upgraded(gc_grace=3600, created_by="x", now=0)


def test_a_v1_reader_refuses_a_v2_marker() -> None:
    """cas_store 0.1 (format 1 only) refuses any marker whose version is not 1 (the check
    this test repeats): a writer without rule W never writes to a version 2 store."""
    doc = json.loads(Marker.new("xxh128", ChunkerSpec("fixed", {"size": 2**20}), 60, "t").encode())
    assert doc["version"] != 1


# -- the other test vectors of docs/format.md section 9 -----------------------------------

#: docs/format.md 3.2: a version 1 marker as cas_store 0.1 wrote it.
V1_MARKER = b"""{
 "chunk_size": 8388608,
 "created_by": "cas_store 0.1.0",
 "format": "cas_store",
 "hash_algorithm": "xxh128",
 "version": 1
}
"""

#: docs/format.md section 9: V1_MARKER upgraded (gc_grace 86400, at 1796170705.5).
UPGRADED_MARKER = b"""{
 "chunker": {
  "name": "fixed",
  "params": {
   "size": 8388608
  }
 },
 "created_by": "cas_store 0.2.0",
 "format": "cas_store",
 "gc": {
  "delta": 86400.0,
  "grace": 86400.0,
  "min_age": 86400.0,
  "publish": 900.0,
  "validity": 21600.0
 },
 "hash_algorithm": "xxh128",
 "store_id": "3f9c2a6e0b7d4e18a5c1f2d3e4b5a697",
 "upgraded_at": 1796170705.5,
 "version": 2
}
"""

VECTOR_STORE_ID = b"3f9c2a6e0b7d4e18a5c1f2d3e4b5a697"
VECTOR_RUN = "20261201T221500Z-1a2b3c4d"


def test_v1_marker_test_vector_round_trips() -> None:
    marker = Marker.decode(V1_MARKER, "t")
    assert marker == Marker(1, "xxh128", 8 * 2**20, "cas_store 0.1.0")
    assert marker.encode() == V1_MARKER
    assert marker.chunker_spec == ChunkerSpec("fixed", {"size": 8 * 2**20})
    assert (marker.store_id, marker.gc) == (None, None)


def test_upgraded_marker_test_vector() -> None:
    upgraded = Marker.decode(V1_MARKER, "t").upgraded(86400, "cas_store 0.2.0", now=1796170705.5)
    assert upgraded.store_id is not None
    assert upgraded.encode() == UPGRADED_MARKER.replace(VECTOR_STORE_ID, upgraded.store_id.encode())
    decoded = Marker.decode(UPGRADED_MARKER, "t")
    assert decoded.upgraded_at == 1796170705.5
    assert decoded.encode() == UPGRADED_MARKER
    # the same marker as a store created as version 2, but for upgraded_at
    assert UPGRADED_MARKER.replace(b' "upgraded_at": 1796170705.5,\n', b"") == V2_MARKER


def test_key_test_vectors() -> None:
    digest = hash_bytes("xxh128", b"x" * 100000)
    assert digest == "0fe996a84987456bd8b99a30e426ac41"
    root = Root.parse("s3cas://bkt/zenml")
    assert root.marker_key() == "zenml/cas-store.json"
    assert root.blob_key("xxh128", digest) == "zenml/blobs/xxh128/0f/e9/0fe996a84987456bd8b99a30e426ac41"
    assert (
        root.quarantine_key("xxh128", digest, VECTOR_RUN)
        == "zenml/gc/q/xxh128/0f/e9/0fe996a84987456bd8b99a30e426ac41/20261201T221500Z-1a2b3c4d"
    )
    assert root.gc_key("runs", VECTOR_RUN, "state.json") == f"zenml/gc/runs/{VECTOR_RUN}/state.json"
    assert root.gc_key("lease") == "zenml/gc/lease"
    assert root.manifest_key("runs/1/model.pt") == "zenml/manifest/runs/1/model.pt"


def test_entry_test_vectors() -> None:
    inline_line = (
        b'{"v":1,"size":12,"algorithm":"xxh128","digest":"eefac9d87100cd1336b2e733a5484425",'
        b'"chunks":[],"inline":"aGVsbG8gd29ybGQK"}'
    )
    chunked_line = (
        b'{"v":1,"size":100000,"algorithm":"xxh128","digest":"0fe996a84987456bd8b99a30e426ac41",'
        b'"chunks":[{"digest":"0fe996a84987456bd8b99a30e426ac41","size":100000}]}'
    )
    hello = b"hello world\n"
    inline = Entry(len(hello), "xxh128", hash_bytes("xxh128", hello), inline=hello)
    assert inline.encode() == inline_line
    assert Entry.decode(inline_line, "t") == inline
    data = b"x" * 100000
    digest = hash_bytes("xxh128", data)
    chunked = Entry(len(data), "xxh128", digest, chunks=(Chunk(digest, len(data)),))
    assert chunked.encode() == chunked_line
    assert Entry.decode(chunked_line, "t") == chunked


@pytest.mark.parametrize(
    ("grace", "delta", "validity", "publish", "min_age", "recheck_after"),
    [
        (86400, 86400.0, 21600.0, 900.0, 86400.0, 20700.0),
        (2, 2.0, 0.5, 0.020833333333333332, 2.0, 0.4791666666666667),
        (604800, 604800.0, 151200.0, 900.0, 604800.0, 150300.0),  # P capped at 15 min
    ],
)
def test_gc_durations_test_vectors(
    grace: float, delta: float, validity: float, publish: float, min_age: float, recheck_after: float
) -> None:
    """docs/format.md section 9: exactly the numbers a marker records (JSON floats), and V - P."""
    durations = GCDurations.from_grace(grace)
    gc = {"delta": delta, "grace": float(grace), "min_age": min_age, "publish": publish, "validity": validity}
    assert durations.to_dict() == gc
    assert json.dumps(durations.to_dict(), sort_keys=True) == json.dumps(gc, sort_keys=True)
    assert durations.recheck_after == recheck_after


class _Clock:
    def __init__(self) -> None:
        self.now = 1796170705.5

    def __call__(self) -> float:
        return self.now


def _json(memory: MemoryObjectStore, key: str) -> Any:
    return json.loads(memory.data(key))


def _jsonl(memory: MemoryObjectStore, key: str) -> list[Any]:
    body = memory.data(key).decode()
    assert body.endswith("\n")
    for line in body.splitlines():  # each line as json.dumps(doc, sort_keys=True) writes it
        assert line == json.dumps(json.loads(line), sort_keys=True)
    return [json.loads(line) for line in body.splitlines()]


def test_collector_keys_and_documents(make_store: StoreFactory) -> None:
    """docs/format.md section 7: the keys and documents a collection writes under gc/."""
    clock = _Clock()
    memory = MemoryObjectStore("bkt", clock=clock)
    recorder = HookedObjectStore(memory)
    store = make_store(objects=recorder, clock=clock, gc_grace=2)
    root = store.root
    # Incompressible: the documents record the blobs' lengths in the bucket.
    kept, gone = random.Random(1).randbytes(100000), random.Random(2).randbytes(100000)
    for rel, data in (("keep", kept), ("gone", gone)):
        with store.open_write(rel, rel) as f:
            f.write(data)
    store.remove(["gone"])
    digest = hash_bytes("xxh128", gone)
    etag = memory.objects[root.manifest_key("keep")][1].etag
    started = clock.now = clock.now + 3  # older than G = 2 s
    seen: dict[str, Any] = {}

    def hook(step: str, run: str) -> None:
        prefix = root.gc_key("runs", run) + "/"
        if step == "p1:started":
            seen["marking"] = memory.data(prefix + "state.json")
            seen["lease"] = _json(memory, root.gc_key("lease"))
        elif step == "p1:logged":
            seen["l1"] = _jsonl(memory, prefix + "l1.jsonl")
            seen["q-0"] = _jsonl(memory, prefix + "q-0.jsonl")
        elif step == "p1:moved":
            seen["copy"] = memory.data(root.quarantine_key("xxh128", digest, run))
            seen["main"] = memory.keys(root.blob_key("xxh128", digest))
        elif step == "p1:quarantined":
            seen["quarantined"] = _json(memory, prefix + "state.json")
        elif step == "p2:due":
            seen["phase2"] = memory.data(prefix + "phase2")
        elif step == "p2:done":
            seen["left"] = memory.keys(root.gc_key() + "/")

    first = collect(store, dry_run=False, clock=clock, hook=hook)
    run = first.run
    assert run is not None
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", run)
    assert run.startswith(f"{dt.datetime.fromtimestamp(started, dt.UTC):%Y%m%dT%H%M%SZ}-")
    # state.json, compact JSON with sorted keys; the lease
    assert seen["marking"] == json.dumps({"phase": "marking", "wall": started}, sort_keys=True).encode()
    assert seen["lease"] == {
        "expires": started + 2,  # min(3600, delta)
        "host": seen["lease"]["host"],
        "pid": os.getpid(),
        "run": run,
        "wall": started,
    }
    assert isinstance(seen["lease"]["host"], str)
    # L1 (logical paths, the ETag as read) and the intent log of batch 0
    assert seen["l1"] == [{"etag": etag, "rel": "keep"}]
    assert seen["q-0"] == [{"algorithm": "xxh128", "digest": digest, "size": len(gone)}]
    # the move: the quarantine copy holds the blob's bytes, the main key is gone
    assert (seen["copy"], seen["main"]) == (gone, [])
    assert seen["quarantined"] == {"phase": "quarantined", "wall": started}
    # the probes of the self-test, at the invocation's run id, deleted at once
    assert recorder.calls.count(("put", root.gc_key(f"probe-{run}"))) == 2
    assert ("copy", root.gc_key(f"probe-{run}-copy")) in recorder.calls
    assert sorted(memory.keys(root.gc_key() + "/")) == sorted(
        [root.quarantine_key("xxh128", digest, run)]
        + [root.gc_key("runs", run, n) for n in ("state.json", "l1.jsonl", "q-0.jsonl")]
    )

    due = clock.now = clock.now + 3  # Δ = 2 s later, by both clocks
    second = collect(store, dry_run=False, clock=clock, hook=hook)
    assert run in second.finished_runs
    assert seen["phase2"] == json.dumps({"wall": due}, sort_keys=True).encode()
    assert seen["left"] == [root.gc_key("lease")]  # the run's keys and copies are gone
    assert memory.keys(root.gc_key() + "/") == []  # no run, copy, lease or probe left


V3_MARKER = b"""{
 "chunker": {
  "name": "fastcdc2020",
  "params": {
   "avg_size": 2097152,
   "max_size": 8388608,
   "min_size": 524288,
   "normalization": 2
  }
 },
 "compression": {
  "codec": "zstd",
  "level": 1,
  "min_saving": 0.125
 },
 "created_by": "cas_store 0.3.0",
 "format": "cas_store",
 "gc": {
  "delta": 86400.0,
  "grace": 86400.0,
  "min_age": 86400.0,
  "publish": 900.0,
  "validity": 21600.0
 },
 "hash_algorithm": "xxh128",
 "store_id": "3f9c2a6e0b7d4e18a5c1f2d3e4b5a697",
 "version": 3
}
"""
X100K_FRAME = bytes.fromhex("28b52ffda0a086010055000010787801009b8639c002")
X100K_COMPRESSED_ENTRY = (
    b'{"v":1,"size":100000,"algorithm":"xxh128","digest":"0fe996a84987456bd8b99a30e426ac41",'
    b'"chunks":[{"digest":"0fe996a84987456bd8b99a30e426ac41","size":100000,"enc":"zstd","stored":22}]}'
)


def test_v3_marker_test_vector_round_trips() -> None:
    marker = Marker.decode(V3_MARKER, "t")
    assert marker.version == 3 and marker.compression == Compression(level=1, min_saving=0.125)
    assert marker.chunker == FastCDCChunker().spec()  # what new stores are created with
    assert marker.encode() == V3_MARKER
    fresh = Marker.new("xxh128", FastCDCChunker().spec(), 86400, "cas_store 0.3.0", DEFAULT_COMPRESSION)
    assert dataclasses.replace(fresh, store_id=marker.store_id) == marker


@pytest.mark.parametrize(
    "change",
    [
        {"compression": None},
        {"codec": "lz4"},
        {"level": 1.5},
        {"level": 23},
        {"level": True},
        {"min_saving": 0},
        {"min_saving": 1},
        {"min_saving": None},
    ],
)
def test_v3_marker_compression_is_checked(change: dict[str, Any]) -> None:
    doc = json.loads(V3_MARKER)
    if "compression" in change:
        del doc["compression"]
    for name, value in change.items():
        if name != "compression":
            if value is None:
                del doc["compression"][name]
            else:
                doc["compression"][name] = value
    with pytest.raises(IncompatibleStoreError, match="compression"):
        Marker.decode(json.dumps(doc).encode(), "t")


def test_compressed_chunk_test_vector() -> None:
    data = b"x" * 100000
    assert decode(X100K_FRAME, len(data)) == data
    assert DEFAULT_COMPRESSION.encode(data) == X100K_FRAME  # zstandard 0.25's level 1
    entry = Entry.decode(X100K_COMPRESSED_ENTRY, "t")
    (chunk,) = entry.chunks
    assert (chunk.size, chunk.stored, chunk.stored_size) == (100000, 22, 22)
    assert entry.encode() == X100K_COMPRESSED_ENTRY
    assert (
        Entry(100000, "xxh128", entry.digest, chunks=(Chunk(entry.digest, 100000),)).with_sizes(
            {entry.digest: 22}
        )
        == entry
    )


def test_format_md_states_exactly_these_vectors() -> None:
    """The byte-exact vectors of docs/format.md are the ones this file checks."""
    text = (Path(__file__).parents[2] / "docs" / "format.md").read_text(encoding="utf-8")
    blocks = [b.encode() for b in re.findall(r"```(?:json)?\n(.*?)```", text, re.S)]
    assert blocks.count(V2_MARKER) == 2  # the example of 3.3 and the vector of section 9
    assert V1_MARKER in blocks
    assert UPGRADED_MARKER in blocks
    hello, data = b"hello world\n", b"x" * 100000
    digest = hash_bytes("xxh128", data)
    entries = [
        Entry(len(hello), "xxh128", hash_bytes("xxh128", hello), inline=hello).encode(),
        Entry(len(data), "xxh128", digest, chunks=(Chunk(digest, len(data)),)).encode(),
    ]
    assert b"\n".join(entries) + b"\n" in blocks
    assert V3_MARKER in blocks
    assert X100K_COMPRESSED_ENTRY + b"\n" in blocks
    assert X100K_FRAME.hex().encode() + b"\n" in blocks


def test_quarantine_keys_parse_back() -> None:
    root = Root("b", "p")
    digest = "0123456789abcdef0123456789abcdef"
    key = root.quarantine_key("xxh128", digest, "20261201T221500Z-1a2b3c4d")
    assert root.parse_quarantine_key(key) == ("xxh128", digest, "20261201T221500Z-1a2b3c4d")
    assert root.parse_quarantine_key(root.blob_key("xxh128", digest)) is None
    assert root.parse_quarantine_key("p/gc/q/xxh128/99/99/" + digest + "/run") is None  # wrong fan-out
    assert root.parse_quarantine_key("p/gc/q/stray") is None
