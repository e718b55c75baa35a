"""Pure parts of bucket format v1: paths, keys, the marker and manifest entries."""

from __future__ import annotations

import json

import pytest

from cas_store.chunking import ChunkerSpec
from cas_store.errors import IncompatibleStoreError, IntegrityError, InvalidPathError
from cas_store.format import Chunk, Entry, Marker
from cas_store.hashing import hash_bytes
from cas_store.layout import Root, blob_relkey, split_path
from cas_store.safety import GCDurations


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
    future = json.dumps({"format": "cas_store", "version": 3, "hash_algorithm": "xxh128"}).encode()
    with pytest.raises(IncompatibleStoreError, match="version 3"):
        Marker.decode(future, "t")
    with pytest.raises(IncompatibleStoreError, match="not a valid"):
        Marker.decode(b'{"format": "something-else"}', "t")
    with pytest.raises(IncompatibleStoreError, match="unknown hash"):
        Marker.decode(
            json.dumps({"format": "cas_store", "version": 1, "hash_algorithm": "md5"}).encode(), "t"
        )


@pytest.mark.parametrize("algorithm", ["xxh128", "sha256", "blake3"])
def test_hash_algorithms_are_stable(algorithm: str) -> None:
    known = {
        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "blake3": "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
    }
    digest = hash_bytes(algorithm, b"abc")
    if algorithm in known:
        assert digest == known[algorithm]
    else:
        import xxhash

        assert digest == xxhash.xxh3_128_hexdigest(b"abc")


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
    ],
)
def test_v2_marker_fields_are_checked(field: str, value: object, match: str) -> None:
    doc = json.loads(V2_MARKER)
    doc[field] = value
    with pytest.raises(IncompatibleStoreError, match=match):
        Marker.decode(json.dumps(doc).encode(), "t")


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
