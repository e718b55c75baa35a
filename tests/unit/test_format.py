"""Pure parts of bucket format v1: paths, keys, the marker and manifest entries."""

from __future__ import annotations

import json

import pytest

from cas_store.errors import IncompatibleStoreError, IntegrityError, InvalidPathError
from cas_store.format import Chunk, Entry, Marker
from cas_store.hashing import hash_bytes
from cas_store.layout import Root, blob_relkey, split_path


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
    future = json.dumps({"format": "cas_store", "version": 2, "hash_algorithm": "xxh128"}).encode()
    with pytest.raises(IncompatibleStoreError, match="version 2"):
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
