"""Following chunk runs (issue 9, P2): a writer of content written before takes that file's
chunks without running the chunker, and must still cut exactly as the chunker alone would:
the chunks, their digests and the whole-file digest are those of a plain cut, whatever the
content does relative to the run (the same, shorter, longer, edited, shifted, unrelated)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from cas_store.cache import Mirror
from cas_store.chunking import Chunker, FastCDCChunker, FixedChunker
from cas_store.config import KiB, MiB
from cas_store.errors import IntegrityError
from cas_store.fileobj import RunChunk, WriteFile
from cas_store.format import Chunk
from cas_store.hashing import hash_bytes
from cas_store.runs import ChunkRuns
from tests.unit.conftest import StoreFactory
from tests.unit.test_chunking import Recorder

SMALL = FastCDCChunker(min_size=2 * KiB, avg_size=8 * KiB, max_size=32 * KiB, normalization=2)


class Counting:
    """A chunker that counts its cuts."""

    def __init__(self, inner: Chunker) -> None:
        self.inner = inner
        self.max_size = inner.max_size
        self.name = inner.name
        self.calls = 0

    def cut(self, data: memoryview, final: bool) -> int | None:
        self.calls += 1
        return self.inner.cut(data, final)

    def spec(self) -> object:
        return self.inner.spec()


def write(
    data: bytes,
    runs: ChunkRuns | None,
    chunker: Chunker = SMALL,
    sizes: Sequence[int] = (7 * KiB,),
    cls: type[WriteFile] = WriteFile,
) -> tuple[list[Chunk], str]:
    sink = Recorder()  # checks every chunk handed on against its digest
    f = cls("f", "xxh128", chunker, 0, sink, runs)
    view, at, i = memoryview(data), 0, 0
    try:
        while at < len(view):
            n = sizes[i % len(sizes)]
            f.write(view[at : at + n])
            at, i = at + n, i + 1
    except BaseException:
        sink.abort = lambda: None  # type: ignore[method-assign]
        f.discard()
        raise
    digests: list[str] = []
    sink.commit = lambda size, digest, chunks, inline: (
        digests.append(digest),
        setattr(sink, "chunks", chunks),
    )  # type: ignore[method-assign]
    f.close()
    assert [(c.size, c.digest) for c in sink.chunks] == sink.added
    return list(sink.chunks), digests[0]


def variants(base: bytes, rng: random.Random) -> dict[str, bytes]:
    at = rng.randrange(len(base))
    return {
        "identical": base,
        "truncated": base[: rng.randrange(1, len(base))],
        "extended": base + rng.randbytes(rng.randrange(1, 100 * KiB)),
        "edited": base[:at] + bytes([base[at] ^ 1]) + base[at + 1 :],
        "inserted": base[:at] + rng.randbytes(rng.randrange(1, 5000)) + base[at:],
        "deleted": base[:at] + base[at + rng.randrange(1, 5000) :],
        "edited near the end": base[:-100] + rng.randbytes(100),
        "unrelated": rng.randbytes(len(base)),
        "same first chunk only": base[: 3 * KiB] + rng.randbytes(len(base)),
    }


@pytest.fixture
def runs(tmp_path: Path) -> ChunkRuns:
    return ChunkRuns(Mirror(tmp_path / "mirror.sqlite3"), "xxh128", SMALL.spec())


@pytest.mark.parametrize("seed", range(6))
def test_following_a_run_cuts_exactly_as_the_chunker(runs: ChunkRuns, seed: int) -> None:
    rng = random.Random(seed)
    base = rng.randbytes(rng.randrange(200 * KiB, 600 * KiB))
    sizes = [rng.choice([1, 100, 4 * KiB, 33 * KiB, 70 * KiB]) for _ in range(7)]
    write(base, runs, sizes=sizes)  # records the run
    for name, data in variants(base, rng).items():
        expected = write(data, None, sizes=sizes)
        assert write(data, runs, sizes=sizes) == expected, name
        assert expected[1] == hash_bytes("xxh128", data), name


def test_the_same_content_is_not_cut_again(runs: ChunkRuns) -> None:
    data = random.Random(1).randbytes(2 * MiB)
    plain = Counting(SMALL)
    first = write(data, runs, plain, sizes=[64 * KiB])
    following = Counting(SMALL)
    assert write(data, runs, following, sizes=[64 * KiB]) == first
    assert len(first[0]) > 100
    # The first chunk, then the run's last one (cut by its file's end) and the final call.
    assert following.calls <= 4 < plain.calls


def test_after_a_difference_the_chunker_takes_over(runs: ChunkRuns) -> None:
    rng = random.Random(2)
    data = rng.randbytes(MiB)
    write(data, runs)
    edited = data[: 600 * KiB] + b"x" + data[600 * KiB + 1 :]
    chunker = Counting(SMALL)
    assert write(edited, runs, chunker) == write(edited, None)
    assert chunker.calls > 10  # cut from the edit on


class Trusting(WriteFile):
    """A weakened writer that takes a run's chunk when only its size fits."""

    def _take(self, chunk: memoryview) -> bool:
        expected = self._expected()
        self._whole.update(chunk)
        self._add(chunk, expected.digest, expected.prefix)
        self._next += 1
        if self._next >= len(self._follow or ()) - 1:
            self._follow = None
        return True


def test_the_prefix_check_has_teeth(runs: ChunkRuns) -> None:
    """Without the prefix digest check, an edit inside a chunk is stored as the old chunk."""
    rng = random.Random(3)
    data = rng.randbytes(400 * KiB)
    write(data, runs)
    edited = data[: 200 * KiB] + b"!" + data[200 * KiB + 1 :]
    with pytest.raises(AssertionError):  # the Recorder finds a chunk whose bytes miss its digest
        write(edited, runs, cls=Trusting)


def test_runs_are_kept_per_chunker_and_algorithm(tmp_path: Path) -> None:
    mirror = Mirror(tmp_path / "m.sqlite3")
    data = random.Random(4).randbytes(300 * KiB)
    small = ChunkRuns(mirror, "xxh128", SMALL.spec())
    write(data, small)
    other = FastCDCChunker(min_size=2 * KiB, avg_size=8 * KiB, max_size=64 * KiB, normalization=2)
    counted = Counting(other)
    other_runs = ChunkRuns(mirror, "xxh128", other.spec())
    assert write(data, other_runs, counted) == write(data, None, other)
    assert counted.calls > 10  # the other chunker's run is not SMALL's
    assert ChunkRuns(mirror, "sha256", SMALL.spec()).lookup(Chunk("x" * 64, 1)) is None


def test_a_damaged_run_is_ignored(runs: ChunkRuns, tmp_path: Path) -> None:
    data = random.Random(5).randbytes(300 * KiB)
    chunks, _ = write(data, runs)
    lead = runs._scope + chunks[0].digest
    runs._mirror.put_run(lead, b"[[not json")
    assert runs.lookup(chunks[0]) is None
    assert write(data, runs) == write(data, None)
    wrong: list[RunChunk] = [RunChunk(c.size, c.digest, "0" * 32) for c in chunks]
    runs.record(chunks, [r.prefix for r in wrong])  # prefixes of no content
    assert write(data, runs) == write(data, None)


def test_fixed_chunks_follow_too(tmp_path: Path) -> None:
    fixed = Counting(FixedChunker(MiB))
    runs = ChunkRuns(Mirror(tmp_path / "m.sqlite3"), "xxh128", fixed.spec())  # type: ignore[arg-type]
    data = random.Random(6).randbytes(5 * MiB + 3)
    write(data, runs, fixed, sizes=[3 * MiB])  # type: ignore[arg-type]
    fixed.calls = 0
    assert write(data + b"more", runs, fixed) == write(data + b"more", None, FixedChunker(MiB))  # type: ignore[arg-type]
    assert fixed.calls <= 3


def test_a_store_write_of_the_same_content_follows_its_run(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(chunk_size=None, chunker="fastcdc2020")
    data = random.Random(7).randbytes(24 * MiB)
    with store.open_write("a", "a") as f:
        f.write(data)
    calls: list[int] = []
    real: Callable[..., int | None] = FastCDCChunker.cut
    monkeypatch.setattr(FastCDCChunker, "cut", lambda self, d, final: calls.append(1) or real(self, d, final))
    with store.open_write("b", "b") as f:
        for at in range(0, len(data), 8 * MiB):
            f.write(data[at : at + 8 * MiB])
    a, b = store.resolve("a"), store.resolve("b")
    assert a is not None and b is not None and a.entry == b.entry
    assert len(a.entry.chunks) > 5 and len(calls) <= 4


class Greedy(WriteFile):
    """A weakened writer that also takes the run's last chunk, which its file's end cut."""

    def _take(self, chunk: memoryview) -> bool:
        run = self._follow
        taken = super()._take(chunk)
        if taken and self._follow is None and run is not None and self._next < len(run):
            self._follow = run  # go on to the last chunk
        return taken


def test_the_last_chunk_rule_has_teeth(tmp_path: Path) -> None:
    """The run's last chunk ends where its file ended, not where the chunker would cut a longer
    file: taking it would store chunks that a plain cut of the same content never makes."""
    rng = random.Random(8)
    data = rng.randbytes(500 * KiB)
    longer = data + rng.randbytes(200 * KiB)
    for cls, same in ((WriteFile, True), (Greedy, False)):
        runs = ChunkRuns(Mirror(tmp_path / f"{cls.__name__}.sqlite3"), "xxh128", SMALL.spec())
        write(data, runs)
        assert (write(longer, runs, cls=cls) == write(longer, None)) is same


def test_a_run_naming_a_wrong_digest_never_stores_bytes_under_it(make_store: StoreFactory) -> None:
    """A run whose checksum holds but which names a digest its chunk does not have (a bug): the
    writer checks a run's digest before storing the bytes anywhere, and publishes nothing."""
    store = make_store(chunk_size=None, chunker="fastcdc2020")
    data = random.Random(9).randbytes(12 * MiB)
    with store.open_write("a", "a") as f:
        f.write(data)
    a = store.resolve("a")
    assert a is not None and len(a.entry.chunks) > 3
    marker = store.marker()
    assert marker is not None
    runs = ChunkRuns(store.cache.mirror, "xxh128", marker.chunker_spec)
    run = runs.lookup(a.entry.chunks[0])
    assert run is not None
    chunks = [Chunk(r.digest, r.size) for r in run]
    chunks[2] = Chunk("0" * 32, chunks[2].size)
    runs.record(chunks, [r.prefix for r in run])
    with pytest.raises(IntegrityError, match="runs table is damaged"), store.open_write("b", "b") as f:
        f.write(data)
    assert store.resolve("b") is None
    assert not store.cache.has_blob("xxh128", "0" * 32)
