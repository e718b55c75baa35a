"""Chunking: what a second version of a file adds, objects per GiB and throughput, for the
chunker of new stores and the candidates it was chosen from (issue 9).

    python -m bench chunking [--quick] [--out DIR] [--only NAME,...]
    python -m bench.chunking ...   (the same)

For each candidate chunker (``CANDIDATES``: fixed 8 MiB, the chunker of version 1 stores,
and FastCDC 2020 at three sizes and two normalization levels) and each workload, the first
and the second version of a generated file (``tests.support.workloads``) are cut by
cas_store's own streaming writer (:class:`cas_store.fileobj.WriteFile`, in 1 MiB writes,
the patches of a second version as writes of their own), each chunk hashed with xxh128.
**Added** is the bytes of the distinct chunks of the second version that the first does not
have, divided by the second version's size: what a store holding the first would upload.

Workloads (full; ``--quick``):

* S2: 1 GiB (256 MiB) random, a copy with 10 scattered 4 KiB overwrites;
* the same with 10 scattered 4 KiB insertions;
* S2b: the same with 100 bytes inserted at offset 1000 (a header that grew);
* S3: a CSV of 256 MiB (64 MiB) of synthetic readings, and the same with 10% more rows;
* Parquet, pyarrow's defaults, 256 MiB (64 MiB), and the same table with 10% more rows;
  once more with row groups of 131072 rows.

Throughput, on the 1 GiB (256 MiB) random content, each the best of 3 (the last three for
fixed 8 MiB and the default only, the two chunkers a configuration can name):

* **cut**: pyfastcdc's compiled cut loop alone, over the whole buffer (``cut_buf``);
* **write path**: ``WriteFile`` in 1 MiB writes, chunks hashed and dropped (no store);
* **2 threads**: two such writers at once on two contents: > 1x one thread only if the cut
  loop and the hash release the GIL;
* **store**: one file written through a ``Store`` over the in-memory backend, local cache
  included (its chunk files are written to a temporary directory).

Results: ``OUT/chunking-{full,quick}.{json,md}`` (default ``bench/results/``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import REPO
from cas_store.chunking import Chunker, FastCDCChunker, FixedChunker
from cas_store.fileobj import WriteFile
from cas_store.format import Chunk
from tests.support import workloads
from tests.support.workloads import Pieces

KiB, MiB, GiB = 2**10, 2**20, 2**30
WRITE = 1 * MiB
PUT_PER_1000 = 0.005  # USD, S3 Standard PUT list price

#: name -> chunker; the default of new stores is marked in the report.
CANDIDATES: dict[str, Callable[[], Chunker]] = {
    "fixed 8M": lambda: FixedChunker(8 * MiB),
    "cdc 256K/1M/4M nc2": lambda: FastCDCChunker(256 * KiB, 1 * MiB, 4 * MiB, 2),
    "cdc 512K/2M/8M nc2": lambda: FastCDCChunker(512 * KiB, 2 * MiB, 8 * MiB, 2),
    "cdc 512K/2M/8M nc1": lambda: FastCDCChunker(512 * KiB, 2 * MiB, 8 * MiB, 1),
    "cdc 1M/4M/16M nc2": lambda: FastCDCChunker(1 * MiB, 4 * MiB, 16 * MiB, 2),
}
DEFAULT = "cdc 512K/2M/8M nc2"
SIZES = {
    "full": {"random": 1 * GiB, "csv": 256 * MiB, "parquet": 256 * MiB},
    "quick": {"random": 256 * MiB, "csv": 64 * MiB, "parquet": 64 * MiB},
}


class Recorder:
    """A :class:`cas_store.fileobj.ChunkSink` that keeps the chunk list and drops the bytes."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []

    def add(self, chunk: memoryview, digest: str, hashed: bool = True) -> None:
        pass

    def commit(self, size: int, digest: str, chunks: list[Chunk], inline: bytes | None) -> None:
        self.chunks = chunks

    def abort(self) -> None:
        pass

    def flush(self) -> None:
        pass


def cut(chunker: Chunker, pieces: Pieces, write: int = WRITE) -> list[Chunk]:
    """The chunks cas_store's writer cuts from ``pieces``, each written in ``write``-byte calls."""
    sink = Recorder()
    f = WriteFile("bench", "xxh128", chunker, 16 * KiB, sink)
    for piece in pieces:
        view = memoryview(piece)
        for at in range(0, len(view), write):
            f.write(view[at : at + write])
    f.close()
    return sink.chunks


def added(first: list[Chunk], second: list[Chunk]) -> int:
    """Bytes of the distinct chunks of ``second`` that ``first`` lacks."""
    have = {c.digest for c in first}
    new: dict[str, int] = {}
    for c in second:
        if c.digest not in have:
            new[c.digest] = c.size
    return sum(new.values())


def workload_list(sizes: dict[str, int]) -> list[tuple[str, Callable[[], tuple[Pieces, Pieces, float]]]]:
    """(label, make) pairs; ``make`` returns both versions and the ideal fraction added."""
    random_size = sizes["random"]
    base: dict[str, bytes] = {}

    def random_base() -> bytes:
        if "data" not in base:
            base["data"] = workloads.random_bytes(random_size, 1)
        return base["data"]

    def edit(fn: Callable[[bytes], Pieces], changed: int) -> Callable[[], tuple[Pieces, Pieces, float]]:
        def make() -> tuple[Pieces, Pieces, float]:
            data = random_base()
            second = fn(data)
            return [data], second, changed / sum(len(p) for p in second)

        return make

    def appended(fn: Callable[[], tuple[bytes, bytes]]) -> Callable[[], tuple[Pieces, Pieces, float]]:
        def make() -> tuple[Pieces, Pieces, float]:
            first, second = fn()
            return [first], [second], (len(second) - len(first)) / len(second)

        return make

    label = f"{random_size // MiB} MiB random"
    csv, pq = sizes["csv"], sizes["parquet"]
    return [
        (f"S2: {label}, 10 x 4 KiB overwrites", edit(workloads.scattered_overwrites, 10 * 4 * KiB)),
        (f"{label}, 10 x 4 KiB insertions", edit(workloads.scattered_insertions, 10 * 4 * KiB)),
        (f"S2b: {label}, 100 B inserted at 1000", edit(workloads.inserted_near_start, 100)),
        (f"S3: CSV of at least {csv // MiB} MiB, +10% rows", appended(lambda: workloads.csv_versions(csv))),
        (f"Parquet {pq // MiB} MiB (defaults), +10% rows", appended(lambda: workloads.parquet_versions(pq))),
        (
            f"Parquet {pq // MiB} MiB (row groups of 131072), +10% rows",
            appended(lambda: workloads.parquet_versions(pq, row_group=131072)),
        ),
    ]


def best_of(n: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def throughput(chunker: Chunker, data: bytes, other: bytes) -> dict[str, float]:
    size = len(data)
    out: dict[str, float] = {}
    if isinstance(chunker, FastCDCChunker):
        cdc = chunker._cdc
        out["cut_gbps"] = size / best_of(3, lambda: sum(1 for _ in cdc.cut_buf(data))) / 1e9
    out["write_path_gbps"] = size / best_of(3, lambda: cut(chunker, [data])) / 1e9

    def two() -> None:
        threads = [threading.Thread(target=cut, args=(chunker, [d])) for d in (data, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    out["two_threads_gbps"] = 2 * size / best_of(3, two) / 1e9
    out["store_mbps"] = size / best_of(3, lambda: store_write(chunker, data)) / 1e6
    return out


def store_write(chunker: Chunker, data: bytes) -> None:
    """Write ``data`` through a fresh Store over the in-memory backend (local cache included)."""
    from cas_store.backend import MemoryObjectStore
    from cas_store.cache import LocalCache
    from cas_store.config import StoreConfig
    from cas_store.layout import Root
    from cas_store.store import Store

    if isinstance(chunker, FixedChunker):
        options: dict[str, Any] = {"chunk_size": chunker.size}
    else:
        options = {"chunker": "fastcdc2020"}
    with tempfile.TemporaryDirectory() as tmp:
        config = StoreConfig(cache_dir=tmp, **options)
        cache = LocalCache(config.resolved_cache_dir, config.cache_size, config.cache_eviction_policy)
        store = Store(Root("bkt", "bench"), config, MemoryObjectStore("bkt"), cache)
        store.marker(create=True)
        view = memoryview(data)
        with store.open_write("f", "f") as f:
            for at in range(0, len(view), WRITE):
                f.write(view[at : at + WRITE])
        cache.close()


def run(mode: str, only: list[str] | None) -> dict[str, Any]:
    sizes = SIZES[mode]
    names = [n for n in CANDIDATES if only is None or n in only]
    chunkers = {n: CANDIDATES[n]() for n in names}
    rows: list[dict[str, Any]] = []
    for label, make in workload_list(sizes):
        start = time.perf_counter()
        first, second, ideal = make()
        made = time.perf_counter() - start
        size = sum(len(p) for p in second)
        row: dict[str, Any] = {"workload": label, "size": size, "ideal": ideal, "added": {}, "make_s": made}
        for name, chunker in chunkers.items():
            a, b = cut(chunker, first), cut(chunker, second)
            row["added"][name] = added(a, b) / size
        rows.append(row)
        print(f"{label}: " + ", ".join(f"{n} {v:.2%}" for n, v in row["added"].items()), flush=True)
        del first, second
    data = workloads.random_bytes(sizes["random"], 1)
    other = workloads.random_bytes(sizes["random"], 11)
    per: dict[str, dict[str, Any]] = {}
    for name, chunker in chunkers.items():
        chunks = cut(chunker, [data])
        lengths = sorted(c.size for c in chunks[:-1])  # the last chunk is cut by the end of the file
        per[name] = {
            "objects_per_gib": len(chunks) * GiB / len(data),
            "mean_chunk": len(data) / len(chunks),
            "median_chunk": lengths[len(lengths) // 2],
            "smallest_chunk": lengths[0],
            "largest_chunk": lengths[-1],
            "put_usd_per_gib": len(chunks) * GiB / len(data) * PUT_PER_1000 / 1000,
        }
        if name in ("fixed 8M", DEFAULT):  # the two a configuration can name, end to end too
            per[name].update(throughput(chunker, data, other))
        else:
            per[name]["write_path_gbps"] = len(data) / best_of(3, lambda c=chunker: cut(c, [data])) / 1e9
        print(f"{name}: {per[name]}", flush=True)
    return {"rows": rows, "chunkers": per}


def markdown(result: dict[str, Any]) -> str:
    names = list(result["chunkers"])
    lines = [
        f"Chunking benchmark {result['started']}, cas_store {result['commit']} ({result['mode']} mode; "
        f"{result['cpus']} CPUs; Python {result['python']}; pyfastcdc {result['pyfastcdc']}). "
        f"Default of new stores: {DEFAULT}.",
        "",
        "Bytes of new chunks the second version adds, as a share of its size "
        "(each chunker cuts both versions in cas_store's streaming writer, 1 MiB writes):",
        "",
        "| workload | second version (MiB) | ideal | " + " | ".join(names) + " |",
        "|---|---:|---:|" + "---:|" * len(names),
    ]
    for row in result["rows"]:
        cells = [f"{row['added'][n]:.2%}" for n in names]
        lead = f"| {row['workload']} | {row['size'] / MiB:.1f} | {row['ideal']:.2%} | "
        lines.append(lead + " | ".join(cells) + " |")
    per = result["chunkers"]

    def line(label: str, key: str, fmt: Callable[[Any], str]) -> str:
        return f"| {label} | " + " | ".join(fmt(per[n][key]) if key in per[n] else "" for n in names) + " |"

    lines += [
        "",
        f"Chunks of the {result['sizes']['random'] // MiB} MiB random content, and throughput on it "
        "(best of 3; GB/s = 10^9 bytes/s):",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
        line("objects per GiB", "objects_per_gib", lambda v: f"{v:.0f}"),
        line("mean chunk (MiB)", "mean_chunk", lambda v: f"{v / MiB:.2f}"),
        line("median chunk, the last excluded (MiB)", "median_chunk", lambda v: f"{v / MiB:.2f}"),
        line("smallest chunk, the last excluded (MiB)", "smallest_chunk", lambda v: f"{v / MiB:.2f}"),
        line("largest chunk (MiB)", "largest_chunk", lambda v: f"{v / MiB:.2f}"),
        line("new-PUT cost per GiB (USD)", "put_usd_per_gib", lambda v: f"{v:.4f}"),
        line("cut loop alone (GB/s)", "cut_gbps", lambda v: f"{v:.2f}"),
        line("write path: cut + xxh128, 1 thread (GB/s)", "write_path_gbps", lambda v: f"{v:.2f}"),
        line("write path, 2 threads together (GB/s)", "two_threads_gbps", lambda v: f"{v:.2f}"),
        line("Store over the memory backend, cache included (MB/s)", "store_mbps", lambda v: f"{v:.0f}"),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench chunking", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (256 MiB random, 64 MiB tables)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--only", help="comma-separated candidate names")
    args = parser.parse_args(argv)
    from importlib.metadata import version

    from bench.suite import _git_commit

    mode = "quick" if args.quick else "full"
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    result: dict[str, Any] = {
        "started": started,
        "commit": _git_commit(),
        "mode": mode,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pyfastcdc": version("pyfastcdc"),
        "sizes": SIZES[mode],
        "default": DEFAULT,
    }
    t0 = time.perf_counter()
    result.update(run(mode, args.only.split(",") if args.only else None))
    result["seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"chunking-{mode}.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (args.out / f"chunking-{mode}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
