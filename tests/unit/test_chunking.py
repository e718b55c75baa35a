"""Chunkers: FastCDC 2020's boundaries (docs/format.md test vectors), streaming equals whole-buffer
cutting for any write sizes, parameters are checked, and the marker's spec decides the chunker."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import struct
import sys
from pathlib import Path

import pytest

from cas_store.backend import MemoryObjectStore
from cas_store.chunking import (
    CHUNKERS,
    FASTCDC_DEFAULTS,
    Chunker,
    ChunkerSpec,
    FastCDCChunker,
    FixedChunker,
    configured_chunker,
)
from cas_store.config import KiB, MiB, StoreConfig
from cas_store.errors import IncompatibleStoreError
from cas_store.fileobj import WriteFile
from cas_store.format import Chunk, Marker
from cas_store.hashing import hash_bytes
from tests.support.workloads import random_bytes
from tests.unit.conftest import StoreFactory
from tests.unit.test_store import read, write

DEFAULT_PARAMS = {"min_size": 524288, "avg_size": 2097152, "max_size": 8388608, "normalization": 2}
SMALL_PARAMS = {"min_size": 16384, "avg_size": 65536, "max_size": 262144, "normalization": 1}

#: docs/format.md, section 9, "Chunk boundaries": the end offset of every chunk of
#: ``vector_input(32 MiB)`` under the default parameters, and of ``vector_input(1 MiB)`` under
#: SMALL_PARAMS. The last is the end of the input.
DEFAULT_CUTS = [
    2557088, 5880828, 8172223, 10463821, 13293237, 16712505, 19265417, 20926338, 23816733,
    26036324, 29139983, 31875879, 33554432,
]  # fmt: skip
SMALL_CUTS = [
    88202, 212656, 259621, 300369, 356875, 487458, 580554, 625443, 671603, 780442, 803939,
    851615, 1005110, 1048576,
]  # fmt: skip
VECTOR_32M_SHA256 = "338b6e6a6de6695e764c0efbdb2cf5919f1fc312ef2e16ef9d618ea1a7c7c011"
#: SHA-256 of the gear table, its 256 entries as 8-byte big-endian integers.
GEAR_SHA256 = "9df0a720752a7d211fdebaf39bed01610983756fc340a1cfef41052b7356ae73"


def vector_input(size: int) -> bytes:
    """The test-vector input: SHA-256 of the 8-byte big-endian counters 0, 1, 2, ... concatenated,
    cut to ``size`` bytes (any language can produce it)."""
    blocks = (hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(-(-size // 32)))
    return b"".join(blocks)[:size]


def pyfastcdc_cuts(data: bytes | memoryview, params: dict[str, int]) -> list[int]:
    """Chunk ends as pyfastcdc's own whole-buffer cutting finds them (the reference)."""
    from pyfastcdc.cy import FastCDC

    cdc = FastCDC(
        params["avg_size"],
        min_size=params["min_size"],
        max_size=params["max_size"],
        normalized_chunking=params["normalization"],
    )
    return [c.offset + c.length for c in cdc.cut_buf(data)]


def reference_cut(data: bytes, min_size: int, avg_size: int, max_size: int, normalization: int) -> int:
    """The length of the first chunk of ``data``, exactly as docs/format.md section 3.3.1
    states FastCDC 2020 (one byte at a time; pyfastcdc rolls two), in plain Python."""
    from pyfastcdc.py.constants import GEAR, MASKS

    n = len(data)
    if n <= min_size:
        return n
    end = min(n, max_size)
    center = min(avg_size, end)
    bits = math.floor(math.log2(avg_size) + 0.5)
    mask_s, mask_l = MASKS[bits + normalization], MASKS[bits - normalization]
    h = 0
    for i in range(min_size // 2 * 2, end // 2 * 2):
        h = ((h << 1) + GEAR[data[i]]) & 0xFFFFFFFFFFFFFFFF
        if h & (mask_s if i < center // 2 * 2 else mask_l) == 0:
            return i
    return end


def protocol_cuts(chunker: Chunker, data: bytes) -> list[int]:
    """Chunk ends from calling ``cut`` on the whole rest of the data each time."""
    view, at, ends = memoryview(data), 0, []
    while at < len(view):
        n = chunker.cut(view[at:], final=True)
        assert n is not None and 0 < n <= chunker.max_size
        at += n
        ends.append(at)
    return ends


class Recorder:
    """A ChunkSink that keeps the chunks' sizes and digests."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.added: list[tuple[int, str]] = []

    def add(self, chunk: memoryview, digest: str, hashed: bool = True) -> None:
        assert hash_bytes("xxh128", bytes(chunk)) == digest
        self.added.append((len(chunk), digest))

    def commit(self, size: int, digest: str, chunks: list[Chunk], inline: bytes | None) -> None:
        self.chunks = chunks

    def abort(self) -> None:
        raise AssertionError("aborted")

    def flush(self) -> None:
        pass


def streamed_cuts(chunker: Chunker, data: bytes, sizes: list[int]) -> list[int]:
    """Chunk ends as WriteFile cuts ``data`` written in pieces of ``sizes`` (cycled)."""
    sink = Recorder()
    f = WriteFile("f", "xxh128", chunker, 0, sink)
    view, at, i = memoryview(data), 0, 0
    while at < len(view):
        n = sizes[i % len(sizes)]
        f.write(view[at : at + n])
        at, i = at + n, i + 1
    f.close()
    assert [(c.size, c.digest) for c in sink.chunks] == sink.added
    ends, end = [], 0
    for c in sink.chunks:
        end += c.size
        ends.append(end)
    return ends


def write_sizes(seed: int, count: int = 2000, largest: int = 6 * MiB) -> list[int]:
    """Log-uniform write sizes from 1 B to ``largest``, in runs of tiny and of huge writes."""
    rng = random.Random(seed)
    sizes: list[int] = []
    while len(sizes) < count:
        top = rng.choice([64, 4 * KiB, largest])  # a run of small writes, or of any size
        sizes += [int(math.exp(rng.uniform(0, math.log(top)))) for _ in range(rng.randrange(1, 40))]
    return sizes


# -- test vectors (docs/format.md, section 9) -------------------------------------------------


def test_vector_input_is_the_stated_one() -> None:
    assert hashlib.sha256(vector_input(32 * MiB)).hexdigest() == VECTOR_32M_SHA256
    assert vector_input(40)[:8].hex() == hashlib.sha256(bytes(8)).hexdigest()[:16]


def test_fastcdc2020_boundaries_are_the_test_vectors() -> None:
    data = vector_input(32 * MiB)
    assert pyfastcdc_cuts(data, DEFAULT_PARAMS) == DEFAULT_CUTS
    assert protocol_cuts(FastCDCChunker(**DEFAULT_PARAMS), data) == DEFAULT_CUTS
    small = data[: 1 * MiB]
    assert pyfastcdc_cuts(small, SMALL_PARAMS) == SMALL_CUTS
    assert protocol_cuts(FastCDCChunker(**SMALL_PARAMS), small) == SMALL_CUTS


def test_the_stated_algorithm_is_pyfastcdcs() -> None:
    """docs/format.md 3.3.1: the gear table (by its digest), the masks, and the cut function in
    plain Python find the vectors' boundaries."""
    from pyfastcdc.py.constants import GEAR, MASKS

    assert hashlib.sha256(struct.pack(">256Q", *GEAR)).hexdigest() == GEAR_SHA256
    assert GEAR[0] == 0x3B5D3C7D207E37DC and GEAR[255] == 0xAABD2B2A451504E1
    assert (MASKS[19], MASKS[21], MASKS[23]) == (0x0000D91707537000, 0x0000D91767537000, 0x0000D93777537000)
    data = vector_input(1 * MiB)
    at, ends = 0, []
    while at < len(data):
        at += reference_cut(data[at:], **SMALL_PARAMS)
        ends.append(at)
    assert ends == SMALL_CUTS
    first = reference_cut(vector_input(4 * MiB), **DEFAULT_PARAMS)
    assert first == DEFAULT_CUTS[0]
    zeros = bytes(SMALL_PARAMS["max_size"] + 5)
    assert reference_cut(zeros, **SMALL_PARAMS) == SMALL_PARAMS["max_size"]


def test_format_md_states_exactly_these_vectors() -> None:
    text = (Path(__file__).parents[2] / "docs" / "format.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (`V\(\d+\)`|\d+ zero bytes)[^|]*\|[^|]*\| ([\d, ]+)", text, re.M))
    ends = {k: [int(x) for x in v.split(",")] for k, v in rows.items()}
    assert ends == {
        "`V(33554432)`": DEFAULT_CUTS,
        "`V(1048576)`": SMALL_CUTS,
        "20971520 zero bytes": [8 * MiB, 16 * MiB, 20 * MiB],
    }
    assert VECTOR_32M_SHA256 in text and GEAR_SHA256 in text
    assert hashlib.sha256(bytes(8)).hexdigest()[:16] in text  # where V starts
    spec = json.loads(re.findall(r'^(\{"name": "fastcdc2020".*\})$', text, re.M)[0])
    assert spec == {"name": "fastcdc2020", "params": DEFAULT_PARAMS}


def test_content_without_boundaries_is_cut_at_max_size() -> None:
    zeros = bytes(20 * MiB)
    assert protocol_cuts(FastCDCChunker(), zeros) == [8 * MiB, 16 * MiB, 20 * MiB]
    assert pyfastcdc_cuts(zeros, DEFAULT_PARAMS) == [8 * MiB, 16 * MiB, 20 * MiB]


def test_the_default_parameters_are_the_documented_ones() -> None:
    assert dict(FASTCDC_DEFAULTS) == DEFAULT_PARAMS
    assert FastCDCChunker().spec() == ChunkerSpec("fastcdc2020", DEFAULT_PARAMS)
    assert configured_chunker(None, None).spec() == ChunkerSpec("fastcdc2020", DEFAULT_PARAMS)


# -- the Chunker protocol ------------------------------------------------------------------------


def test_cut_follows_the_protocol() -> None:
    chunker = FastCDCChunker(**SMALL_PARAMS)
    data = memoryview(vector_input(1 * MiB))
    first = SMALL_CUTS[0]
    assert chunker.cut(data[:0], final=True) is None  # nothing to cut
    assert chunker.cut(data[:100], final=False) is None  # below min_size: needs more
    assert chunker.cut(data[:100], final=True) == 100  # the end of the file ends a chunk
    assert chunker.cut(data[:first], final=False) is None  # no boundary inside yet
    assert chunker.cut(data[:first], final=True) == first
    assert chunker.cut(data[: first + 2], final=False) == first  # the boundary, once found
    assert chunker.cut(data, final=False) == first
    zeros = memoryview(bytes(SMALL_PARAMS["max_size"] + 10))
    assert chunker.cut(zeros[: SMALL_PARAMS["max_size"] - 1], final=False) is None
    assert chunker.cut(zeros[: SMALL_PARAMS["max_size"]], final=False) == SMALL_PARAMS["max_size"]
    assert chunker.cut(zeros, final=False) == SMALL_PARAMS["max_size"]  # decides at max_size


def test_cut_takes_slices_of_any_buffer() -> None:
    data = vector_input(1 * MiB)
    chunker = FastCDCChunker(**SMALL_PARAMS)
    at = SMALL_CUTS[2]
    want = SMALL_CUTS[3] - at
    for buffer in (data, bytearray(data), memoryview(data), memoryview(bytearray(data))):
        assert chunker.cut(memoryview(buffer)[at:], final=False) == want
    grown = bytearray(data)
    view = memoryview(grown)
    chunker.cut(view[at:], final=False)
    view.release()
    grown.extend(b"x")  # the chunker kept no export of the buffer


# -- streaming equals whole-buffer cutting ----------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_write_sizes_never_change_the_chunks(seed: int) -> None:
    """WriteFile cuts a 72 MiB content in writes of 1 B to 6 MiB (random, in runs) exactly as
    pyfastcdc cuts the whole buffer; the content mixes random bytes with runs of zeros (where
    every chunk is cut at max_size) and of repeated blocks."""
    rng = random.Random(seed)
    parts, size = [], 0
    while size < 72 * MiB:
        kind = rng.choice(["random", "random", "zeros", "repeat"])
        n = rng.randrange(1, 12 * MiB)
        part = {
            "random": lambda n=n: random_bytes(n, rng.randrange(2**32)),
            "zeros": lambda n=n: bytes(n),
            "repeat": lambda n=n: (random_bytes(4096, rng.randrange(2**32)) * (n // 4096 + 1))[:n],
        }[kind]()
        parts.append(part)
        size += n
    data = b"".join(parts)
    want = pyfastcdc_cuts(data, DEFAULT_PARAMS)
    chunker = FastCDCChunker()
    assert streamed_cuts(chunker, data, write_sizes(seed)) == want
    assert streamed_cuts(chunker, data, [len(data)]) == want  # one write of everything


def test_tiny_writes_never_change_the_chunks() -> None:
    data = vector_input(1 * MiB)
    chunker = FastCDCChunker(**SMALL_PARAMS)
    assert streamed_cuts(chunker, data, [1]) == SMALL_CUTS
    assert streamed_cuts(chunker, data, [1, 7, 4093, 65536, 3]) == SMALL_CUTS


def test_a_store_cuts_a_file_as_the_whole_buffer(make_store: StoreFactory, memory: MemoryObjectStore) -> None:
    store = make_store(chunk_size=None)  # a new store: the default chunker
    data = vector_input(32 * MiB)
    write(store, "v", data, pieces=write_sizes(9, count=300, largest=3 * MiB))
    record = store.resolve("v")
    assert record is not None
    ends, end = [], 0
    for c in record.entry.chunks:
        end += c.size
        ends.append(end)
    assert ends == DEFAULT_CUTS
    assert len(memory.keys("root/blobs/")) == len(DEFAULT_CUTS)
    assert read(store, "v") == data


# -- parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"min_size": 63}, "min_size must be an integer from 64 to 1048576"),
        ({"min_size": 2 * MiB, "avg_size": 4 * MiB}, "min_size must be"),
        ({"avg_size": 255, "min_size": 64}, "avg_size must be an integer from 256"),
        ({"avg_size": 8 * MiB}, "avg_size must be an integer from 256 to 4194304"),
        ({"max_size": 16 * MiB + 1}, "max_size must be an integer from 1024 to 16777216"),
        ({"normalization": 4}, "normalization must be an integer from 0 to 3"),
        ({"normalization": -1}, "normalization must be"),
        ({"normalization": True}, "normalization must be an integer"),
        ({"avg_size": 2.0 * MiB}, "avg_size must be an integer"),
        ({"avg_size": "2097152"}, "avg_size must be an integer"),
        ({"min_size": MiB, "avg_size": 512 * KiB}, "min_size <= avg_size <= max_size"),
        ({"max_size": 1 * MiB}, "min_size <= avg_size <= max_size"),
    ],
)
def test_parameters_outside_pyfastcdcs_bounds_are_refused(params: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FastCDCChunker(**{**DEFAULT_PARAMS, **params})  # type: ignore[arg-type]
    with pytest.raises(IncompatibleStoreError, match="misconfigured"):
        ChunkerSpec("fastcdc2020", {**DEFAULT_PARAMS, **params}).build()


def test_pyfastcdcs_extremes_are_accepted() -> None:
    FastCDCChunker(min_size=64, avg_size=256, max_size=1024, normalization=0)
    FastCDCChunker(min_size=MiB, avg_size=4 * MiB, max_size=16 * MiB, normalization=3)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({k: v for k, v in DEFAULT_PARAMS.items() if k != "normalization"}, "lack normalization"),
        ({}, "lack avg_size, max_size, min_size, normalization"),
        ({**DEFAULT_PARAMS, "seed": 1}, "seed"),
    ],
)
def test_a_spec_names_every_parameter_and_no_other(params: dict[str, int], match: str) -> None:
    with pytest.raises(IncompatibleStoreError, match=match):
        ChunkerSpec("fastcdc2020", params).build()


def test_without_the_compiled_module_the_chunker_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyfastcdc.cy", None)  # what a failed extension import gives
    with pytest.raises(ImportError, match="compiled module"):
        FastCDCChunker()
    with pytest.raises(IncompatibleStoreError, match="pure-Python fallback is too slow"):
        ChunkerSpec("fastcdc2020", DEFAULT_PARAMS).build()
    assert configured_chunker("fixed", None) == FixedChunker()  # fixed chunks need no pyfastcdc


# -- the registry and the marker --------------------------------------------------------------


def test_the_registry_builds_the_chunker_a_marker_names() -> None:
    assert set(CHUNKERS) == {"fixed", "fastcdc2020"}
    doc = {
        "format": "cas_store",
        "version": 2,
        "hash_algorithm": "xxh128",
        "store_id": "3f9c2a6e0b7d4e18a5c1f2d3e4b5a697",
        "chunker": {"name": "fastcdc2020", "params": SMALL_PARAMS},
        "gc": {"delta": 86400.0, "grace": 86400.0, "min_age": 86400.0, "publish": 900.0, "validity": 21600.0},
        "created_by": "cas_store 0.2.0",
    }
    marker = Marker.decode(json.dumps(doc).encode(), "test")
    chunker = marker.chunker_spec.build()
    assert chunker == FastCDCChunker(**SMALL_PARAMS)
    assert chunker.spec() == marker.chunker_spec
    assert protocol_cuts(chunker, vector_input(1 * MiB)) == SMALL_CUTS
    bad = {**doc, "chunker": {"name": "fastcdc2020", "params": {**SMALL_PARAMS, "max_size": 10**9}}}
    with pytest.raises(IncompatibleStoreError, match="misconfigured"):
        Marker.decode(json.dumps(bad).encode(), "test")


@pytest.mark.parametrize(
    ("options", "spec"),
    [
        ({}, ChunkerSpec("fastcdc2020", DEFAULT_PARAMS)),
        ({"chunker": "fastcdc2020"}, ChunkerSpec("fastcdc2020", DEFAULT_PARAMS)),
        ({"chunker": "fixed"}, ChunkerSpec("fixed", {"size": 8 * MiB})),
        ({"chunk_size": 2 * MiB}, ChunkerSpec("fixed", {"size": 2 * MiB})),
        ({"chunker": "fixed", "chunk_size": 2 * MiB}, ChunkerSpec("fixed", {"size": 2 * MiB})),
    ],
)
def test_a_new_store_records_the_configured_chunker(
    make_store: StoreFactory, memory: MemoryObjectStore, options: dict[str, object], spec: ChunkerSpec
) -> None:
    store = make_store(**{"chunk_size": None, **options})
    marker = store.marker(create=True)
    assert marker is not None and marker.chunker_spec == spec
    doc = json.loads(memory.data("root/cas-store.json"))
    assert doc["chunker"] == {"name": spec.name, "params": dict(spec.params)}
    assert store.chunker().spec() == spec


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"chunker": "rabin"}, "chunker must be one of fastcdc2020, fixed"),
        ({"chunker": "fastcdc2020", "chunk_size": 2 * MiB}, "chunk_size sets fixed chunks"),
    ],
)
def test_chunker_options_are_checked(options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StoreConfig(**options)  # type: ignore[arg-type]


def test_an_existing_store_keeps_its_chunker(make_store: StoreFactory) -> None:
    fixed = make_store(chunk_size=2 * MiB)
    write(fixed, "f", random_bytes(5 * MiB, 1))
    # Without chunker options, any store is accepted and cut its own way.
    assert make_store(chunk_size=None, cache="c2").chunker() == FixedChunker(2 * MiB)
    assert make_store(chunk_size=None, chunker="fixed", cache="c3").chunker() == FixedChunker(2 * MiB)
    with pytest.raises(IncompatibleStoreError, match="cuts files with the chunker 'fixed'"):
        make_store(chunk_size=None, chunker="fastcdc2020", cache="c4").chunker()


def test_a_content_defined_store_refuses_fixed_chunks(make_store: StoreFactory) -> None:
    cdc = make_store(chunk_size=None)
    assert cdc.chunker() == FastCDCChunker()
    assert make_store(chunk_size=None, cache="c2").chunker() == FastCDCChunker()
    assert make_store(chunk_size=None, chunker="fastcdc2020", cache="c3").chunker() == FastCDCChunker()
    for options in ({"chunker": "fixed"}, {"chunk_size": 8 * MiB}):
        with pytest.raises(IncompatibleStoreError, match="cuts files with the chunker 'fastcdc2020'"):
            make_store(cache="c4", **{"chunk_size": None, **options}).chunker()
