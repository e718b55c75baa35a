"""Per-chunk compression (issue 12, docs/format.md 4.1): what writers store, what entries
record, and that readers get the exact bytes back whatever form a blob is in.

In-memory backend; tests/integration/test_compression_s3.py repeats the essentials over HTTP.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random

import pytest
import zstandard

from cas_store.backend import MemoryObjectStore
from cas_store.chunking import FastCDCChunker
from cas_store.compression import (
    DEFAULT_COMPRESSION,
    MAX_ENCODED_CHUNK,
    PROBE_BYTES,
    Compression,
    DecodeError,
    decode,
    decode_into,
    parse_compression,
)
from cas_store.config import MiB, StoreConfig
from cas_store.errors import BlobCorruptError, BlobMissingError, IncompatibleStoreError, IntegrityError
from cas_store.format import Chunk, Entry, Marker
from cas_store.hashing import hash_bytes
from cas_store.maintenance import usage, usage_of, verify
from cas_store.store import Store
from tests.support.workloads import compressible_csv as csv_bytes
from tests.support.wrappers import HookedObjectStore
from tests.unit.conftest import StoreFactory

ALG = "xxh128"
DEFAULT_CHUNKER = FastCDCChunker().spec()


def blob_lengths(memory: MemoryObjectStore) -> dict[str, int]:
    return {k.rsplit("/", 1)[1]: len(memory.data(k)) for k in memory.keys("root/blobs/")}


def entry_doc(memory: MemoryObjectStore, rel: str) -> dict[str, object]:
    return json.loads(memory.data(f"root/manifest/{rel}"))


def write(store: Store, rel: str, data: bytes) -> None:
    with store.open_write(rel, rel) as f:
        f.write(data)


def read(store: Store, rel: str) -> bytes:
    record = store.resolve(rel)
    assert record is not None
    with store.open_read(record, rel) as f:
        return f.read()  # type: ignore[no-any-return]


# -- the codec ----------------------------------------------------------------------------


def test_a_compressible_chunk_is_stored_as_a_shorter_zstd_frame_that_decodes_to_it() -> None:
    data = csv_bytes(2 * MiB)
    encoded = DEFAULT_COMPRESSION.encode(data)
    assert encoded is not None and len(encoded) <= len(data) * 7 / 8
    assert zstandard.ZstdDecompressor().decompress(encoded) == data  # a plain zstd frame
    assert zstandard.frame_content_size(encoded) == len(data)
    assert decode(encoded, len(data)) == data


def test_a_chunk_that_does_not_save_the_threshold_is_stored_raw() -> None:
    rng = random.Random(1)
    assert DEFAULT_COMPRESSION.encode(rng.randbytes(MiB)) is None  # fails at the probe
    # Compressible start, random rest: passes the probe, then the whole fails the threshold.
    mixed = b"a" * PROBE_BYTES + rng.randbytes(MiB)
    assert DEFAULT_COMPRESSION.encode(mixed) is None
    # Half zeros, half random saves about 1/2: kept; not with a threshold of 0.9.
    assert DEFAULT_COMPRESSION.encode(bytes(MiB // 2) + rng.randbytes(MiB // 2)) is not None
    assert Compression(level=1, min_saving=0.9).encode(bytes(MiB // 2) + rng.randbytes(MiB // 2)) is None
    # The probe's price (docs/format.md 4.1): a chunk whose first 16 KiB do not compress is
    # stored raw even if the rest would.
    assert DEFAULT_COMPRESSION.encode(rng.randbytes(PROBE_BYTES) + bytes(MiB)) is None
    assert DEFAULT_COMPRESSION.encode(b"") is None
    assert DEFAULT_COMPRESSION.encode(bytes(MAX_ENCODED_CHUNK + 1)) is None  # too large to encode


def test_tiny_chunks_are_never_stored_longer() -> None:
    for n in (1, 2, 9, 20, 100):
        encoded = DEFAULT_COMPRESSION.encode(bytes(n))
        assert encoded is None or len(encoded) < n


def test_decode_accepts_only_exact_forms() -> None:
    data = csv_bytes(300_000)
    frame = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(data)
    assert decode(data, len(data)) == data  # as long as the chunk: raw
    with pytest.raises(DecodeError, match="more than"):
        decode(data + b"x", len(data))
    with pytest.raises(DecodeError):
        decode(frame[:-3], len(data))  # truncated
    with pytest.raises(DecodeError, match="declares"):
        decode(frame, len(data) + 1)  # a frame of another size
    no_size = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(data)
    with pytest.raises(DecodeError):
        decode(no_size, len(data))  # a frame must declare its size
    damaged = bytearray(frame)
    damaged[len(damaged) // 2] ^= 0xFF
    try:
        out = decode(bytes(damaged), len(data))
    except DecodeError:
        pass
    else:  # zstd without a checksum may decode damage: the digest check catches it
        assert out != data
    for trailing in (frame[:10], b"xx", zstandard.ZstdCompressor().compress(b"")):
        with pytest.raises(DecodeError, match="after its zstd frame"):
            decode(frame + trailing, len(data))  # one frame, and nothing after it
    checked = zstandard.ZstdCompressor(level=1, write_checksum=True).compress(data)
    assert decode(checked, len(data)) == data  # a frame with a checksum spans 4 more bytes
    with pytest.raises(DecodeError, match="truncated"):
        decode(checked[:-2], len(data))
    rle = zstandard.ZstdCompressor(level=1).compress(b"a" * 1_000_000)  # run-length blocks
    assert decode(rle, 1_000_000) == b"a" * 1_000_000


def test_decode_into_hands_the_chunk_over_in_bounded_pieces_at_their_offsets() -> None:
    data = csv_bytes(3 * MiB + 12345)
    frame = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(data)
    pieces: list[tuple[int, bytes]] = []
    decode_into(frame, len(data), lambda at, piece: pieces.append((at, piece)), piece=256 * 1024)
    assert max(len(p) for _, p in pieces) <= 256 * 1024 and len(pieces) >= 13
    assert [at for at, _ in pieces] == list(itertools.accumulate([0] + [len(p) for _, p in pieces[:-1]]))
    assert b"".join(p for _, p in pieces) == data
    raw: list[tuple[int, bytes]] = []
    decode_into(data, len(data), lambda at, piece: raw.append((at, piece)))
    assert raw == [(0, data)]  # a raw blob is the chunk itself
    with pytest.raises(DecodeError):
        decode_into(frame[:-3], len(data), lambda at, piece: None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("zstd", Compression(1, 0.125)),
        ("ZSTD:3", Compression(3, 0.125)),
        ("zstd:-5", Compression(-5, 0.125)),
        ("none", None),
    ],
)
def test_parse_compression(text: str, expected: Compression | None) -> None:
    assert parse_compression(text) == expected


@pytest.mark.parametrize("text", ["lz4", "zstd:x", "zstd:23", "zstd:-8", ""])
def test_parse_compression_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"compression|level"):
        parse_compression(text)
    with pytest.raises(ValueError, match=r"compression|level"):
        StoreConfig(compression=text)


# -- the format ---------------------------------------------------------------------------


def test_a_compressed_store_is_version_3_and_records_its_settings() -> None:
    marker = Marker.new("xxh128", DEFAULT_CHUNKER, 86400, "t", DEFAULT_COMPRESSION)
    doc = json.loads(marker.encode())
    assert doc["version"] == 3
    assert doc["compression"] == {"codec": "zstd", "level": 1, "min_saving": 0.125}
    assert Marker.decode(marker.encode(), "t") == marker
    plain = Marker.new("xxh128", DEFAULT_CHUNKER, 86400, "t")
    assert plain.version == 2 and "compression" not in json.loads(plain.encode())


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "zstd",
        {"codec": "lz4", "level": 1, "min_saving": 0.125},
        {"codec": "zstd", "level": 1},
        {"codec": "zstd", "level": 1.5, "min_saving": 0.125},
        {"codec": "zstd", "level": 1, "min_saving": 1},
    ],
)
def test_a_version_3_marker_needs_valid_compression(bad: object) -> None:
    doc = json.loads(Marker.new("xxh128", DEFAULT_CHUNKER, 86400, "t", DEFAULT_COMPRESSION).encode())
    doc["compression"] = bad
    if bad is None:
        del doc["compression"]
    with pytest.raises(IncompatibleStoreError, match="compression"):
        Marker.decode(json.dumps(doc).encode(), "t")


def test_chunk_records() -> None:
    data = b"y" * 100_000
    d = hash_bytes(ALG, data)
    entry = Entry(100_000, ALG, d, chunks=(Chunk(d, 100_000, 23),))
    encoded = entry.encode()
    assert json.loads(encoded)["chunks"] == [{"digest": d, "size": 100_000, "enc": "zstd", "stored": 23}]
    assert Entry.decode(encoded, "t") == entry
    assert entry.stored_size == 23
    with pytest.raises(IncompatibleStoreError, match="upgrade cas_store"):
        Entry.decode(encoded.replace(b'"zstd"', b'"lz9"'), "t")
    for stored in (0, 100_000, 200_000):
        bad = encoded.replace(b'"stored":23', f'"stored":{stored}'.encode())
        with pytest.raises(IntegrityError, match="compressed chunk"):
            Entry.decode(bad, "t")
    with pytest.raises(IntegrityError, match="malformed"):
        Entry.decode(encoded.replace(b'"stored":23', b'"stored":"x"'), "t")


# -- writing and reading ------------------------------------------------------------------


@pytest.fixture
def store(make_store: StoreFactory) -> Store:
    return make_store(chunk_size=None)  # a new store: fastcdc2020 and zstd level 1


def test_written_chunks_are_compressed_where_it_pays_and_entries_record_it(
    store: Store, memory: MemoryObjectStore, make_store: StoreFactory
) -> None:
    text = csv_bytes(6 * MiB)
    noise = random.Random(5).randbytes(3 * MiB)
    write(store, "table.csv", text)
    write(store, "weights.bin", noise)
    assert json.loads(memory.data("root/cas-store.json"))["version"] == 3
    lengths = blob_lengths(memory)
    text_chunks = entry_doc(memory, "table.csv")["chunks"]
    assert len(text_chunks) >= 2
    for c in text_chunks:
        assert c["enc"] == "zstd" and c["stored"] == lengths[c["digest"]] <= c["size"] * 7 / 8
    for c in entry_doc(memory, "weights.bin")["chunks"]:
        assert "enc" not in c and "stored" not in c and lengths[c["digest"]] == c["size"]
    stored_text = sum(c["stored"] for c in text_chunks)
    whole = len(zstandard.ZstdCompressor(level=1).compress(text))
    assert stored_text <= 1.05 * whole  # S5, in small: chunking costs at most 5%
    # Byte-identical back: from this cache, from an empty one, and offline from the cache.
    assert read(store, "table.csv") == text and read(store, "weights.bin") == noise
    fresh = make_store(chunk_size=None, cache="fresh")
    assert read(fresh, "table.csv") == text and read(fresh, "weights.bin") == noise
    memory.offline = True
    assert read(fresh, "table.csv") == text
    memory.offline = False


def test_range_reads_of_a_compressed_file_fetch_only_the_covering_chunks(
    store: Store, memory: MemoryObjectStore, make_store: StoreFactory
) -> None:
    text = csv_bytes(8 * MiB)
    write(store, "t.csv", text)
    chunks = entry_doc(memory, "t.csv")["chunks"]
    assert len(chunks) >= 3 and all(c.get("enc") == "zstd" for c in chunks)
    hooked = HookedObjectStore(memory)
    reader = make_store(hooked, chunk_size=None, cache="reader", read_ahead="none")
    middle = chunks[0]["size"] + 10
    record = reader.resolve("t.csv")
    assert record is not None
    with reader.open_read(record, "t.csv") as f:
        f.seek(middle)
        assert f.read(1000) == text[middle : middle + 1000]
    fetched = [k for m, k in hooked.calls if m in ("get", "get_range") and "/blobs/" in k]
    assert [k.rsplit("/", 1)[1] for k in fetched] == [chunks[1]["digest"]]


def test_the_cache_keeps_chunks_decoded(store: Store, memory: MemoryObjectStore) -> None:
    text = csv_bytes(3 * MiB)
    write(store, "t.csv", text)
    for c in entry_doc(memory, "t.csv")["chunks"]:
        handle = store.cache.open_blob(ALG, c["digest"])
        assert handle is not None
        with handle:
            assert hash_bytes(ALG, handle.read()) == c["digest"]


def test_a_writer_that_deduplicates_records_how_the_bucket_holds_each_chunk(
    store: Store, memory: MemoryObjectStore, make_store: StoreFactory
) -> None:
    text = csv_bytes(4 * MiB)
    write(store, "a.csv", text)
    first = entry_doc(memory, "a.csv")["chunks"]
    write(store, "b.csv", text)  # proofs from this machine's memo
    other = make_store(chunk_size=None, cache="other")
    write(other, "c.csv", text)  # proofs from HEADs
    assert entry_doc(memory, "b.csv")["chunks"] == first == entry_doc(memory, "c.csv")["chunks"]
    # A writer that stores raw (another store's settings) meets the compressed blobs: its
    # entry records them as compressed, as its HEADs reported.
    raw_writer = make_store(chunk_size=None, cache="raw")
    marker = Marker.decode(memory.data("root/cas-store.json"), "t")
    raw_writer._marker = dataclasses.replace(marker, compression=None)
    write(raw_writer, "d.csv", text)
    assert entry_doc(memory, "d.csv")["chunks"] == first


def test_readers_decide_by_the_blob_whatever_the_entry_says(
    store: Store, memory: MemoryObjectStore, make_store: StoreFactory
) -> None:
    """The entry records what its writer saw; a server that ignores If-None-Match may have
    taken another writer's form of the same chunk since. Both directions read back."""
    text = csv_bytes(3 * MiB)
    write(store, "t.csv", text)
    doc = entry_doc(memory, "t.csv")
    assert all(c.get("enc") == "zstd" for c in doc["chunks"])
    # The entry says raw, the blobs are compressed: each read learns it from the short object.
    says_raw = dict(doc, chunks=[{"digest": c["digest"], "size": c["size"]} for c in doc["chunks"]])
    memory.run("t", lambda: memory.put("root/manifest/raw-hint.csv", json.dumps(says_raw).encode()))
    assert read(make_store(chunk_size=None, cache="r1"), "raw-hint.csv") == text
    # The entry says compressed, the blobs are raw.
    pieces, offset = [], 0
    for c in doc["chunks"]:
        piece = text[offset : offset + c["size"]]
        offset += c["size"]
        pieces.append(piece)
        memory.run(
            "t", lambda p=piece, d=c["digest"]: memory.put(f"root/blobs/xxh128/{d[:2]}/{d[2:4]}/{d}", p)
        )
    assert read(make_store(chunk_size=None, cache="r2"), "t.csv") == text


def test_a_damaged_compressed_blob_is_never_served(
    store: Store, memory: MemoryObjectStore, make_store: StoreFactory
) -> None:
    text = csv_bytes(MiB)
    write(store, "t.csv", text)
    (chunk,) = entry_doc(memory, "t.csv")["chunks"]
    d = chunk["digest"]
    key = f"root/blobs/xxh128/{d[:2]}/{d[2:4]}/{d}"
    good = memory.data(key)
    for damaged in (good[:-5], good[:10] + bytes(len(good) - 10), b"\x28\xb5\x2f\xfd" + b"\x00" * 20):
        memory.run("t", lambda b=damaged: memory.put(key, b))
        with pytest.raises(BlobCorruptError, match="corrupt"):
            read(make_store(chunk_size=None, cache=f"c{len(damaged)}"), "t.csv")
    memory.run("t", lambda: memory.put(key, good))
    assert verify(store, deep=True).ok
    memory.run("t", lambda: memory.put(key, good[:-5]))
    report = verify(store)  # the length is not the recorded one: downloaded and decoded
    assert not report.ok and d in report.corrupt and report.blobs_hashed == 1


def test_usage_shows_logical_deduplicated_and_stored_bytes(store: Store, memory: MemoryObjectStore) -> None:
    text = csv_bytes(4 * MiB)
    noise = random.Random(2).randbytes(2 * MiB)
    write(store, "a.csv", text)
    write(store, "copy/a.csv", text)
    write(store, "w.bin", noise)
    u = usage(store)
    in_bucket = sum(blob_lengths(memory).values())
    assert u.logical_bytes == 2 * len(text) + len(noise)
    assert u.deduplicated_bytes == len(text) + len(noise)
    assert u.stored_bytes == u.blob_bytes == in_bucket < len(text) // 2 + len(noise)
    assert u.dedup_ratio == pytest.approx(u.logical_bytes / u.deduplicated_bytes)
    assert (
        u.compression_ratio == pytest.approx(u.deduplicated_bytes / in_bucket) and u.compression_ratio > 1.5
    )
    du = usage_of(store, "copy")
    assert (du.logical_bytes, du.deduplicated_bytes) == (len(text), len(text))
    assert du.stored_bytes == sum(c["stored"] for c in entry_doc(memory, "copy/a.csv")["chunks"])
    assert du.compression_ratio > 2


def test_compression_none_writes_a_version_2_store_of_raw_blobs(
    make_store: StoreFactory, memory: MemoryObjectStore
) -> None:
    plain = make_store(chunk_size=None, compression="none")
    text = csv_bytes(2 * MiB)
    write(plain, "t.csv", text)
    marker = json.loads(memory.data("root/cas-store.json"))
    assert marker["version"] == 2 and "compression" not in marker
    assert sum(blob_lengths(memory).values()) == len(text)
    assert read(make_store(chunk_size=None, cache="r"), "t.csv") == text  # no option: follows the marker
    with pytest.raises(IncompatibleStoreError, match="compression is chosen when a store is created"):
        make_store(chunk_size=None, compression="zstd", cache="z").marker()


def test_configured_compression_must_match_the_store(store: Store, make_store: StoreFactory) -> None:
    write(store, "x.csv", csv_bytes(MiB))
    for option in ("none", "zstd:3"):
        with pytest.raises(IncompatibleStoreError, match="zstd level 1"):
            make_store(chunk_size=None, compression=option, cache=option).marker()
    make_store(chunk_size=None, compression="zstd", cache="same").marker()  # the same settings


def test_a_higher_level_is_recorded_and_used(make_store: StoreFactory, memory: MemoryObjectStore) -> None:
    high = make_store(chunk_size=None, compression="zstd:9")
    text = csv_bytes(2 * MiB)
    write(high, "t.csv", text)
    assert json.loads(memory.data("root/cas-store.json"))["compression"]["level"] == 9
    (chunk,) = entry_doc(memory, "t.csv")["chunks"]
    assert chunk["stored"] <= len(zstandard.ZstdCompressor(level=9).compress(text)) + 64
    assert read(make_store(chunk_size=None, cache="r"), "t.csv") == text


def test_a_compressed_blob_is_read_from_its_quarantine_copy(
    store: Store, memory: MemoryObjectStore, make_store: StoreFactory
) -> None:
    """Rule R: a collector moved the blob aside; the copy holds the compressed bytes as they were."""
    text = csv_bytes(MiB)
    write(store, "t.csv", text)
    (chunk,) = entry_doc(memory, "t.csv")["chunks"]
    key = store.blobs.key(ALG, chunk["digest"])
    frame = memory.data(key)
    assert len(frame) == chunk["stored"] < len(text)
    copy = store.root.quarantine_key(ALG, chunk["digest"], "20261201T221500Z-1a2b3c4d")
    memory.run("t", lambda: memory.put(copy, frame))
    memory.run("t", lambda: memory.delete_many([key]))
    assert read(make_store(chunk_size=None, cache="r"), "t.csv") == text
    memory.run("t", lambda: memory.put(copy, frame[:-4]))  # a damaged copy is skipped, never served
    with pytest.raises(BlobMissingError):
        read(make_store(chunk_size=None, cache="r2"), "t.csv")
