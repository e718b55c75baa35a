"""Per-chunk zstd compression: which level, which threshold, and whether an incompressibility
pre-check pays, measured to choose the defaults of the compression feature.

    python -m bench.compression_options [--quick] [--out DIR] [--no-upload]

The feature compresses each chunk with zstd (``zstandard``) and keeps the compressed form only
if it saves at least a threshold fraction of the chunk, else stores the chunk raw; the digest
stays the xxh128 of the uncompressed bytes. Goals:

* S5: a CSV (256 MiB) and a JSON-lines log (64 MiB): stored bytes (sum of per-chunk stored
  sizes) <= 1.05x whole-file zstd at the same level;
* S6: standard-normal float32 weights (256 MiB) and a zstd Parquet file (~64 MiB): stored <=
  1.01x raw, and cold-write throughput >= 0.95x that with compression off;
* compression and decompression well above what an S3 upload moves (measured on moto).

Each workload is generated deterministically (fixed seeds) into a temporary directory, read
back, and cut with the store's default chunker (``cas_store.chunking.FastCDCChunker()``, FastCDC
2020 512 KiB / 2 MiB / 8 MiB, normalization 2). For each level and chunk the compressed size
and the compress time (single thread, ``time.perf_counter`` per chunk) are recorded once;
every threshold's stored size follows from them (a threshold only decides what is kept).
The pre-check compresses a 64 KiB sample of a chunk at level 1 (``head``: its first 64 KiB;
``spread``: 4 x 16 KiB at 0, 1/4, 1/2 and 3/4 of it, joined) and stores the chunk raw without
compressing it if the sample saves less than the threshold; its cost is the measured sample
time plus the full compress time of the chunks that pass. The cold-write estimate for S6 is
``T(cut + xxh128) / (T(cut + xxh128) + T(compression stage))``, CPU only; the "serial with
upload" variant adds the measured moto upload time per byte to both sides.

Results: ``OUT/compression-options-{full,quick}.md`` (default ``bench/results/``), also printed, and
the raw measurements in ``OUT/compression-options-{full,quick}.json`` (``--report-only`` rewrites
the markdown from them without measuring).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime as dt
import gc
import io
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import xxhash
import zstandard

from cas_store.chunking import FastCDCChunker

KiB, MiB = 2**10, 2**20
REPO = Path(__file__).resolve().parent.parent
LEVELS = (-3, -1, 1, 3, 6, 9)
DEFAULT_LEVEL = 3
THRESHOLDS: dict[str, float] = {"0": 0.0, "1/32": 1 / 32, "1/16": 1 / 16, "1/8": 1 / 8}
SAMPLE_LEVEL = 1
#: Pre-check variants: name -> (where, sample bytes); "head" compresses the chunk's first bytes,
#: "spread" 4 equal pieces at 0, 1/4, 1/2 and 3/4 of it, joined.
SAMPLES: dict[str, tuple[str, int]] = {
    "head64K": ("head", 64 * KiB),
    "head16K": ("head", 16 * KiB),
    "spread4x4K": ("spread", 16 * KiB),
}
PRECHECKS = ("none", *SAMPLES)
SIZES = {
    "full": {"csv": 256 * MiB, "jsonl": 64 * MiB, "float32": 256 * MiB, "parquet": 64 * MiB},
    "quick": {"csv": 32 * MiB, "jsonl": 16 * MiB, "float32": 32 * MiB, "parquet": 16 * MiB},
}
S5 = ("csv", "jsonl")
S6 = ("float32", "parquet")
LABELS = {
    "csv": "CSV (S5)",
    "jsonl": "JSON-lines log (S5)",
    "float32": "float32 N(0,1) (S6)",
    "parquet": "Parquet, zstd (S6)",
}
UPLOAD_OBJECT = 8 * MiB
UPLOAD_COUNT = 16
#: "well above" the upload: the compression stage and decompression at least this many times it.
HEADROOM = 2.0


# --------------------------------------------------------------------------------------
# Workloads (deterministic)
# --------------------------------------------------------------------------------------

SITES = [f"{city}-{n}" for city in ("ams", "fra", "lon", "par", "nyc", "sfo", "sin", "tok") for n in range(5)]
PRODUCTS = [
    "widget",
    "gadget",
    "gizmo",
    "doohickey",
    "sprocket",
    "flange",
    "bracket",
    "valve",
    "pump",
    "relay",
]
CHANNELS = ["web", "store", "partner", "phone"]


def gen_csv(path: Path, size: int, seed: int = 11) -> None:
    """Sales-like rows: timestamp, ids, two categorical columns, a status, floats of several
    precisions, counts; written by pyarrow in batches until the file holds ``size`` bytes."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    batch, written, start = 200_000, 0, 0
    with open(path, "wb") as f:
        while written < size:
            rng = np.random.default_rng([seed, start])
            ids = np.arange(start, start + batch, dtype=np.int64)
            ts = 1_767_225_600 + ids * 3 + rng.integers(0, 3, batch)
            table = pa.table(
                {
                    "ts": pa.array(ts, type=pa.int64()).cast(pa.timestamp("s")),
                    "order_id": ids + 10_000_000,
                    "customer_id": rng.integers(1, 250_000, batch),
                    "site": pa.array(np.array(SITES, dtype=object)[rng.integers(0, len(SITES), batch)]),
                    "product": pa.array(
                        np.array(PRODUCTS, dtype=object)[rng.zipf(1.6, batch) % len(PRODUCTS)]
                    ),
                    "channel": pa.array(
                        np.array(CHANNELS, dtype=object)[rng.integers(0, len(CHANNELS), batch)]
                    ),
                    "quantity": rng.poisson(3, batch) + 1,
                    "unit_price": rng.lognormal(3.0, 0.8, batch).round(2),
                    "discount": (rng.random(batch) < 0.2) * rng.integers(5, 30, batch) / 100,
                    "temperature_c": rng.normal(21.5, 4.0, batch).round(3),
                    "score": rng.random(batch),
                    "status": pa.array(np.where(rng.random(batch) < 0.97, "ok", "returned")),
                }
            )
            out = io.BytesIO()
            pcsv.write_csv(table, out, pcsv.WriteOptions(include_header=start == 0))
            data = out.getvalue()
            f.write(data[: size - written] if written + len(data) > size else data)
            written += min(len(data), size - written)
            start += batch


LEVELS_LOG = ["INFO"] * 80 + ["DEBUG"] * 10 + ["WARN"] * 7 + ["ERROR"] * 3
SERVICES = ["api", "auth", "billing", "search", "ingest", "worker", "scheduler", "gateway"]
METHODS = ["GET"] * 7 + ["POST"] * 2 + ["DELETE"]
ROUTES = [
    "/api/v1/items/{}",
    "/api/v1/users/{}/orders",
    "/api/v2/search?q=term{}",
    "/healthz",
    "/api/v1/carts/{}",
]
STATUSES = [200] * 90 + [201] * 3 + [304] * 3 + [404] * 2 + [500, 503]
MESSAGES = [
    "request completed",
    "cache miss, fetching from origin",
    "slow query detected",
    "retrying upstream call",
    "user session refreshed",
    "rate limit approaching",
]


def gen_jsonl(path: Path, size: int, seed: int = 12) -> None:
    """Structured service logs, one JSON object a line (``json.dumps``), in batches."""
    batch, written, start = 20_000, 0, 0
    with open(path, "wb") as f:
        while written < size:
            rng = np.random.default_rng([seed, start])
            ms = 1_767_225_600_000 + (np.arange(start, start + batch) * 7) + rng.integers(0, 7, batch)
            cols = {
                "level": rng.integers(0, len(LEVELS_LOG), batch),
                "service": rng.integers(0, len(SERVICES), batch),
                "host": rng.integers(0, 64, batch),
                "trace": rng.integers(0, 2**63, batch),
                "method": rng.integers(0, len(METHODS), batch),
                "route": rng.integers(0, len(ROUTES), batch),
                "rid": rng.integers(1, 100_000, batch),
                "status": rng.integers(0, len(STATUSES), batch),
                "latency": rng.lognormal(3.0, 1.0, batch).round(2),
                "bytes": rng.integers(120, 65_536, batch),
                "user": rng.integers(1, 50_000, batch),
                "msg": rng.integers(0, len(MESSAGES), batch),
            }
            lines = []
            for i in range(batch):
                t = dt.datetime.fromtimestamp(int(ms[i]) / 1000, dt.UTC)
                lines.append(
                    json.dumps(
                        {
                            "ts": t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ms[i]) % 1000:03d}Z",
                            "level": LEVELS_LOG[cols["level"][i]],
                            "service": SERVICES[cols["service"][i]],
                            "host": f"ip-10-0-{cols['host'][i] // 8}-{cols['host'][i] % 8 + 10}",
                            "trace_id": f"{int(cols['trace'][i]):016x}",
                            "method": METHODS[cols["method"][i]],
                            "path": ROUTES[cols["route"][i]].format(int(cols["rid"][i])),
                            "status": STATUSES[cols["status"][i]],
                            "latency_ms": float(cols["latency"][i]),
                            "bytes": int(cols["bytes"][i]),
                            "user_id": int(cols["user"][i]),
                            "msg": MESSAGES[cols["msg"][i]],
                        }
                    )
                )
            data = ("\n".join(lines) + "\n").encode()
            f.write(data[: size - written] if written + len(data) > size else data)
            written += min(len(data), size - written)
            start += batch


def gen_float32(path: Path, size: int, seed: int = 13) -> None:
    """``size`` bytes of standard-normal float32 (one generator stream, 32 MiB at a time)."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        for at in range(0, size, 32 * MiB):
            n = min(32 * MiB, size - at) // 4
            f.write(rng.standard_normal(n, dtype=np.float32).tobytes())


def _mixed_table(rows: int, start: int, seed: int):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    rng = np.random.default_rng([seed, start])
    ids = np.arange(start, start + rows, dtype=np.int64)
    return pa.table(
        {
            "id": ids,
            "ts": pa.array(1_767_225_600_000 + ids * 50 + rng.integers(0, 50, rows), type=pa.int64()).cast(
                pa.timestamp("ms")
            ),
            "site": pa.array(np.array(SITES, dtype=object)[rng.integers(0, len(SITES), rows)]),
            "product": pa.array(np.array(PRODUCTS, dtype=object)[rng.integers(0, len(PRODUCTS), rows)]),
            "quantity": rng.poisson(3, rows).astype(np.int32),
            "price": rng.lognormal(3.0, 0.8, rows).round(2),
            "reading": rng.normal(0.0, 1.0, rows),
            "weight": rng.standard_normal(rows, dtype=np.float32),
            "token": pa.array([f"{v:016x}" for v in rng.integers(0, 2**63, rows)]),
        }
    )


def gen_parquet(path: Path, size: int, seed: int = 14) -> None:
    """A zstd Parquet file of about ``size`` bytes (pyarrow, row groups of 262144 rows)."""
    import pyarrow.parquet as pq

    batch = 262_144
    probe = io.BytesIO()
    pq.write_table(_mixed_table(batch, 0, seed), probe, compression="zstd")
    rows = int(size / (len(probe.getvalue()) / batch))
    table = _mixed_table(batch, 0, seed)
    with pq.ParquetWriter(path, table.schema, compression="zstd") as writer:
        for start in range(0, rows, batch):
            writer.write_table(_mixed_table(min(batch, rows - start), start, seed), row_group_size=batch)


GENERATORS: dict[str, Callable[[Path, int], None]] = {
    "csv": gen_csv,
    "jsonl": gen_jsonl,
    "float32": gen_float32,
    "parquet": gen_parquet,
}


# --------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------


def best_of(n: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cut_all(chunker: FastCDCChunker, data: bytes) -> list[tuple[int, int]]:
    view, pos, out = memoryview(data), 0, []
    while pos < len(view):
        n = chunker.cut(view[pos:], True)
        assert n
        out.append((pos, n))
        pos += n
    return out


@dataclass
class LevelResult:
    level: int
    whole: int  # bytes of whole-file zstd
    whole_s: float
    sizes: list[int]  # compressed size per chunk
    times: list[float]  # compress seconds per chunk (min over repetitions)
    decompress_s: float  # all compressed chunks of this level

    @property
    def compress_s(self) -> float:
        return sum(self.times)


@dataclass
class Workload:
    name: str
    size: int
    chunks: list[tuple[int, int]]
    cut_s: float
    hash_s: float
    cut_hash_s: float
    sample_saving: dict[str, list[float]] = field(default_factory=dict)  # precheck -> per chunk
    sample_s: dict[str, float] = field(default_factory=dict)  # precheck -> seconds, all chunks
    levels: dict[int, LevelResult] = field(default_factory=dict)

    def stored(self, level: int, threshold: float, precheck: str = "none") -> int:
        lr = self.levels[level]
        total = 0
        for i, (_, n) in enumerate(self.chunks):
            if precheck != "none" and _skip(self.sample_saving[precheck][i], threshold):
                total += n
                continue
            c = lr.sizes[i]
            total += c if c < n and c <= n * (1 - threshold) else n
        return total

    def stage_s(self, level: int, threshold: float, precheck: str = "none") -> float:
        """CPU seconds of the compression stage (sample checks and full compressions)."""
        lr = self.levels[level]
        if precheck == "none":
            return lr.compress_s
        saving = self.sample_saving[precheck]
        passed = sum(t for t, s in zip(lr.times, saving, strict=True) if not _skip(s, threshold))
        return self.sample_s[precheck] + passed

    def waste_s(self, level: int, threshold: float, precheck: str = "none") -> float:
        """CPU seconds spent on chunks that end up stored raw (samples spread evenly)."""
        lr = self.levels[level]
        per_sample = self.sample_s[precheck] / len(self.chunks) if precheck != "none" else 0.0
        total = 0.0
        for i, (_, n) in enumerate(self.chunks):
            if precheck != "none" and _skip(self.sample_saving[precheck][i], threshold):
                total += per_sample
                continue
            c = lr.sizes[i]
            if not (c < n and c <= n * (1 - threshold)):
                total += per_sample + lr.times[i]
        return total


def _skip(saving: float, threshold: float) -> bool:
    """Whether a sample's saving stores the chunk raw uncompressed (threshold 0: no saving)."""
    return saving <= 0 if threshold == 0 else saving < threshold


def _sample(view: memoryview, how: str, size: int) -> bytes | memoryview:
    if how == "head" or len(view) <= size:
        return view[:size]
    piece = size // 4
    return b"".join(view[k * len(view) // 4 : k * len(view) // 4 + piece] for k in range(4))


def measure(name: str, data: bytes, reps: int, cheap_reps: int, log: Callable[[str], None]) -> Workload:
    chunker = FastCDCChunker()
    chunks = cut_all(chunker, data)
    view = memoryview(data)

    def cut_only() -> None:
        cut_all(chunker, data)

    def hash_only() -> None:
        for off, n in chunks:
            xxhash.xxh3_128(view[off : off + n]).digest()

    def cut_hash() -> None:
        pos = 0
        while pos < len(view):
            n = chunker.cut(view[pos:], True)
            assert n
            xxhash.xxh3_128(view[pos : pos + n]).digest()
            pos += n

    w = Workload(
        name,
        len(data),
        chunks,
        best_of(cheap_reps, cut_only),
        best_of(cheap_reps, hash_only),
        best_of(cheap_reps, cut_hash),
    )
    sampler = zstandard.ZstdCompressor(level=SAMPLE_LEVEL)
    for pname, (how, size) in SAMPLES.items():
        savings: list[float] = []
        best = float("inf")
        for _ in range(cheap_reps):
            savings = []
            t0 = time.perf_counter()
            for off, n in chunks:
                s = _sample(view[off : off + n], how, size)
                savings.append(1 - len(sampler.compress(s)) / len(s))
            best = min(best, time.perf_counter() - t0)
        w.sample_saving[pname], w.sample_s[pname] = savings, best
    for level in LEVELS:
        cctx = zstandard.ZstdCompressor(level=level)
        times = [float("inf")] * len(chunks)
        blobs: list[bytes] = []
        for _ in range(reps):
            blobs = []
            for i, (off, n) in enumerate(chunks):
                t0 = time.perf_counter()
                blobs.append(cctx.compress(view[off : off + n]))
                times[i] = min(times[i], time.perf_counter() - t0)
        dctx = zstandard.ZstdDecompressor()

        def decompress_all(blobs: list[bytes] = blobs, dctx: Any = dctx) -> None:
            for b in blobs:
                dctx.decompress(b)

        decompress_s = best_of(reps, decompress_all)
        t0 = time.perf_counter()
        whole = len(cctx.compress(data))
        whole_s = time.perf_counter() - t0
        w.levels[level] = LevelResult(level, whole, whole_s, [len(b) for b in blobs], times, decompress_s)
        del blobs
        gc.collect()
        lr = w.levels[level]
        log(
            f"  {name} level {level}: chunked {sum(lr.sizes) / len(data):.3f} whole {whole / len(data):.3f} "
            f"of raw; {len(data) / MiB / lr.compress_s:.0f} MiB/s"
        )
    return w


# --------------------------------------------------------------------------------------
# Upload throughput on moto (server in this process's thread, client in a child)
# --------------------------------------------------------------------------------------


def _upload_child(endpoint_url: str, bucket: str, threads: int) -> float:
    from tests.support.clients import boto3_client
    from tests.support.env import DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY, isolated_aws_environ

    os.environ.clear()
    os.environ.update(isolated_aws_environ())

    @dataclass
    class Endpoint:
        endpoint_url: str
        access_key: str = DUMMY_ACCESS_KEY
        secret_key: str = DUMMY_SECRET_KEY

    from botocore.config import Config

    client = boto3_client(Endpoint(endpoint_url), Config(max_pool_connections=max(10, threads)))
    body = np.random.default_rng(99).bytes(UPLOAD_OBJECT)
    client.put_object(Bucket=bucket, Key=f"warm-{threads}", Body=body[:1024])

    def put(i: int) -> None:
        client.put_object(Bucket=bucket, Key=f"t{threads}/obj-{i}", Body=body)

    t0 = time.perf_counter()
    if threads == 1:
        for i in range(UPLOAD_COUNT):
            put(i)
    else:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(put, range(UPLOAD_COUNT)))
    elapsed = time.perf_counter() - t0
    client.close()
    return UPLOAD_COUNT * UPLOAD_OBJECT / MiB / elapsed


def upload_throughput(log: Callable[[str], None]) -> dict[str, float]:
    from tests.support.clients import boto3_client, make_bucket
    from tests.support.moto import MotoServer

    results: dict[str, float] = {}
    bucket = "compression-bench"
    with MotoServer() as server:
        make_bucket(server.endpoint_url, bucket, server.access_key, server.secret_key)
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            for threads in (1, 4):
                runs = [
                    pool.submit(_upload_child, server.endpoint_url, bucket, threads).result()
                    for _ in range(2)
                ]
                results[f"{threads} thread{'s' if threads > 1 else ''}"] = max(runs)
                log(f"  upload, {threads} thread(s): {runs} MiB/s")
        client = boto3_client(server)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)
        client.close()
    return results


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def mibs(nbytes: int, seconds: float) -> float:
    return nbytes / MiB / seconds if seconds > 0 else float("inf")


@dataclass
class Candidate:
    level: int
    threshold: str
    precheck: str
    s5: float  # worst stored / whole-file over S5 workloads
    s6_size: float  # worst stored / raw over S6 workloads
    s6_write: float  # worst cold-write CPU ratio over S6 workloads
    s6_write_upload: float  # the same with a serial upload at the measured rate
    s6_waste: float  # cut + hash against cut + hash + the time spent on chunks stored raw
    stage_mibs: float  # slowest compression stage over S5 workloads (MiB/s of raw)
    decompress_mibs: float  # slowest decompression over all workloads
    s5_raw: float  # stored / raw, S5 workloads together

    def sizes_ok(self) -> bool:
        return self.s5 <= 1.05 and self.s6_size <= 1.01

    def speed_ok(self, upload: float) -> bool:
        """Compression stage above the upload, decompression ``HEADROOM`` times it."""
        return self.stage_mibs >= upload and self.decompress_mibs >= HEADROOM * upload

    def margin(self, cpu_only: bool) -> float:
        """The smallest relative margin over S5 and S6's write goal (S6's size goal holds by
        construction: a chunk is kept compressed only if it is smaller)."""
        write = self.s6_write if cpu_only else self.s6_write_upload
        return min(1.05 / self.s5 - 1, write / 0.95 - 1)


def candidates(ws: dict[str, Workload], upload: float) -> list[Candidate]:
    out = []
    for level in LEVELS:
        for tname, t in THRESHOLDS.items():
            for pc in PRECHECKS:
                s6_write, s6_up, s6_waste = [], [], []
                for n in S6:
                    w = ws[n]
                    base, stage = w.cut_hash_s, w.stage_s(level, t, pc)
                    s6_write.append(base / (base + stage))
                    s6_waste.append(base / (base + w.waste_s(level, t, pc)))
                    up = w.size / MiB / upload if upload else 0.0
                    s6_up.append((base + up) / (base + stage + up))
                out.append(
                    Candidate(
                        level,
                        tname,
                        pc,
                        max(ws[n].stored(level, t, pc) / ws[n].levels[level].whole for n in S5),
                        max(ws[n].stored(level, t, pc) / ws[n].size for n in S6),
                        min(s6_write),
                        min(s6_up),
                        min(s6_waste),
                        min(mibs(ws[n].size, ws[n].stage_s(level, t, pc)) for n in S5),
                        min(mibs(w.size, w.levels[level].decompress_s) for w in ws.values()),
                        sum(ws[n].stored(level, t, pc) for n in S5) / sum(ws[n].size for n in S5),
                    )
                )
    return out


#: Margins within this of the largest count as equal; among them the fewest S5 bytes win.
MARGIN_TIE = 0.02


def _rank(cands: list[Candidate], cpu_only: bool) -> list[Candidate]:
    """Candidates within ``MARGIN_TIE`` of the largest margin first, fewest S5 bytes first among
    them; then the rest by margin."""
    if not cands:
        return []
    top = max(c.margin(cpu_only) for c in cands) - MARGIN_TIE
    return sorted(
        cands,
        key=lambda c: (
            c.margin(cpu_only) < top,
            c.s5_raw if c.margin(cpu_only) >= top else 0,
            -c.margin(cpu_only),
        ),
    )


def _cand_row(c: Candidate, cpu_only: bool) -> str:
    return (
        f"| {c.level} | {c.threshold} | {c.precheck} | {c.margin(cpu_only):.1%} | {c.s5:.4f} "
        f"| {c.s5_raw:.4f} "
        f"| {c.s6_size:.4f} | {c.s6_write:.3f} | {c.s6_write_upload:.3f} | {c.s6_waste:.3f} "
        f"| {c.stage_mibs:.0f} "
        f"| {c.decompress_mibs:.0f} |"
    )


CAND_HEADER = [
    "| level | threshold | pre-check | margin | S5 stored/whole | S5 stored/raw | S6 stored/raw "
    "| S6 cold write (CPU) | S6 cold write (+upload) | S6 waste only (CPU) | S5 stage MiB/s "
    "| decompress MiB/s |",
    "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def markdown(meta: dict[str, Any], ws: dict[str, Workload], upload: dict[str, float]) -> str:
    up1 = upload.get("1 thread", 0.0)
    up_best = max(upload.values(), default=0.0)
    lines = [
        f"# Per-chunk zstd compression options ({meta['mode']} mode)",
        "",
        f"{meta['started']}, cas_store {meta['commit']}; {meta['cpus']} CPUs, Python {meta['python']}, "
        f"zstandard {meta['zstandard']} (libzstd {meta['libzstd']}, {meta['backend']} backend), "
        f"pyfastcdc {meta['pyfastcdc']}, xxhash {meta['xxhash']}, numpy {meta['numpy']}, "
        f"pyarrow {meta['pyarrow']}. "
        f"Chunker: FastCDC 2020 512 KiB / 2 MiB / 8 MiB, nc 2 (cas_store's default). "
        f"Single thread; compress times are per chunk, the best of {meta['reps']}; cut/hash/sample "
        f"times the best of {meta['cheap_reps']}. Run took {meta['seconds']:.0f} s. MiB/s are of raw bytes.",
        "",
        "## Workloads",
        "",
        "| workload | MiB | chunks | mean chunk (MiB) | cut MiB/s | xxh3-128 MiB/s | cut + hash MiB/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for w in ws.values():
        lines.append(
            f"| {LABELS[w.name]} | {w.size / MiB:.1f} | {len(w.chunks)} | {w.size / len(w.chunks) / MiB:.2f} "
            f"| {mibs(w.size, w.cut_s):.0f} | {mibs(w.size, w.hash_s):.0f} "
            f"| {mibs(w.size, w.cut_hash_s):.0f} |"
        )
    lines += [
        "",
        "Upload to moto on loopback (server in the harness's thread, boto3 in a child process, "
        f"{UPLOAD_COUNT} x {UPLOAD_OBJECT // MiB} MiB put_object, best of 2): "
        + (", ".join(f"{k}: **{v:.0f} MiB/s**" for k, v in upload.items()) or "not measured"),
        "",
        "## Stored bytes",
        "",
        "S5 rows: stored / whole-file zstd at the same level (goal <= 1.05); S6 rows: stored / raw "
        "(goal <= 1.01). Threshold = minimum saving for a chunk to be kept compressed "
        "(0: any saving). `whole/raw` is whole-file zstd's ratio, `chunks/raw` every chunk "
        "compressed (no threshold, frames included).",
        "",
        "| workload | level | whole/raw | chunks/raw | "
        + " | ".join(f"t={t}" for t in THRESHOLDS)
        + " | compress MiB/s | whole-file MiB/s | decompress MiB/s |",
        "|---|---:|---:|---:|" + "---:|" * len(THRESHOLDS) + "---:|---:|---:|",
    ]
    for w in ws.values():
        for level, lr in w.levels.items():
            ref = lr.whole if w.name in S5 else w.size
            cells = " | ".join(f"{w.stored(level, t) / ref:.4f}" for t in THRESHOLDS.values())
            lines.append(
                f"| {LABELS[w.name]} | {level} | {lr.whole / w.size:.4f} | {sum(lr.sizes) / w.size:.4f} "
                f"| {cells} "
                f"| {mibs(w.size, lr.compress_s):.0f} | {mibs(w.size, lr.whole_s):.0f} "
                f"| {mibs(w.size, lr.decompress_s):.0f} |"
            )
    lines += [
        "",
        "## Trying to compress (incompressible) data",
        "",
        "Milliseconds per MiB, single thread: compress-and-discard at each level, against xxh3-128 "
        f"and cut + hash; and each pre-check's level-{SAMPLE_LEVEL} sample (per MiB of chunk), with the "
        "median saving of its samples over chunks (and the saving of whole chunks at level 3).",
        "",
        "| workload | xxh3-128 | cut + hash | "
        + " | ".join(f"zstd {lv}" for lv in LEVELS)
        + " | "
        + " | ".join(f"{p} sample" for p in SAMPLES)
        + " | "
        + " | ".join(f"{p} saving" for p in SAMPLES)
        + " | chunk saving, level 3 |",
        "|---|---:|---:|" + "---:|" * (len(LEVELS) + 2 * len(SAMPLES) + 1),
    ]
    for w in ws.values():
        per = w.size / MiB
        full3 = 1 - sum(w.levels[DEFAULT_LEVEL].sizes) / w.size
        lines.append(
            f"| {LABELS[w.name]} | {w.hash_s / per * 1e3:.3f} | {w.cut_hash_s / per * 1e3:.3f} | "
            + " | ".join(f"{w.levels[lv].compress_s / per * 1e3:.2f}" for lv in LEVELS)
            + " | "
            + " | ".join(f"{w.sample_s[p] / per * 1e3:.3f}" for p in SAMPLES)
            + " | "
            + " | ".join(f"{np.median(w.sample_saving[p]):.2%}" for p in SAMPLES)
            + f" | {full3:.2%} |"
        )
    cands = candidates(ws, up1)
    lines += [
        "",
        "## Pre-check",
        "",
        "Per (level, threshold, pre-check): worst S5 stored / whole-file, S5 stored / raw (both "
        "files), worst S6 stored / raw, S6 cold-write ratio (worst of the two; CPU only: cut + hash "
        "against cut + hash + compression stage; and with a serial single-thread upload at the "
        f"measured {up1:.0f} MiB/s added to both), the slowest S5 compression stage, the slowest "
        "decompression. Waste only: cut + hash against cut + hash + the CPU spent on chunks that end "
        "up stored raw (the cost of trying on incompressible data). Margin: the smaller of S5's and "
        "S6-write's relative margins (S6 with the serial upload). "
        "Levels 1 and 3 here; every level is ranked below.",
        "",
        *CAND_HEADER,
    ]
    lines += [_cand_row(c, False) for c in cands if c.level in (1, 3)]
    sized = [c for c in cands if c.sizes_ok() and c.speed_ok(up_best)]
    cpu_ok = _rank([c for c in sized if c.s6_write >= 0.95], True)
    up_ok = _rank([c for c in sized if c.s6_write_upload >= 0.95], False)
    lines += [
        "",
        "## Recommendation",
        "",
        "Hard filters: S5 <= 1.05, S6 size <= 1.01, compression stage above the best measured "
        f"upload ({up_best:.0f} MiB/s) and decompression >= {HEADROOM:.0f}x it. Ranked: candidates "
        f"within {MARGIN_TIE:.0%} of the largest margin first, the fewest S5 bytes first among them "
        "(S5's margin is about 5% at every level, so the margin alone would pick the fastest, least "
        "compressing level); then the rest by margin. Top 8.",
        "",
        "The basis: S6's cold write with a serial upload at the measured single-stream rate "
        f"(>= 0.95): {len(up_ok)} candidates (margin with the upload-inclusive ratio).",
        "",
        *CAND_HEADER,
        *[_cand_row(c, False) for c in up_ok[:8]],
        "",
        f"For comparison, S6's cold write judged CPU only (>= 0.95, as if S3 were infinitely fast): "
        f"{len(cpu_ok)} candidates (margin with the CPU-only ratio).",
        "",
        *CAND_HEADER,
        *[_cand_row(c, True) for c in cpu_ok[:8]],
        "",
    ]
    if not up_ok:
        lines.append("**No candidate meets every goal** (see the pre-check table).")
    else:
        best = up_ok[0]
        pc = best.precheck
        lines.append(
            f"**Recommendation: level {best.level}, threshold {best.threshold}, pre-check "
            f"{pc + ' (level ' + str(SAMPLE_LEVEL) + ')' if pc != 'none' else 'off'}**: S5 stored "
            f"{best.s5:.3f}x whole-file zstd (worst; {best.s5_raw:.1%} of raw), S6 stored "
            f"{best.s6_size:.3f}x raw; S6 cold-write throughput estimate {best.s6_write:.3f}x compression "
            f"off CPU only (hash + chunk + compress vs hash + chunk; {best.s6_waste:.3f}x counting only "
            f"the work on chunks stored raw), {best.s6_write_upload:.3f}x with a serial upload; "
            f"compression stage >= {best.stage_mibs:.0f} MiB/s ({best.stage_mibs / up_best:.1f}x the best "
            f"upload) and decompression >= {best.decompress_mibs:.0f} MiB/s."
        )
        if best.s6_write < 0.95:
            lines.append(
                f"\nCPU only, S6's cold-write goal is missed ({best.s6_write:.3f} < 0.95): cut + hash "
                f"runs at {min(mibs(ws[n].size, ws[n].cut_hash_s) for n in S6):.0f} MiB/s or more, so any "
                "chunk that is compressed, or passes the pre-check and then saves too little, costs several "
                "times its cut + hash; only a store whose uploads are far faster than the compression stage "
                "would see it."
            )
    return "\n".join(lines) + "\n"


def _to_json(meta: dict[str, Any], ws: dict[str, Workload], upload: dict[str, float]) -> str:
    return json.dumps(
        {"meta": meta, "upload": upload, "workloads": [dataclasses.asdict(w) for w in ws.values()]}
    )


def _from_json(text: str) -> tuple[dict[str, Any], dict[str, Workload], dict[str, float]]:
    raw = json.loads(text)
    ws = {}
    for d in raw["workloads"]:
        levels = {int(k): LevelResult(**v) for k, v in d.pop("levels").items()}
        d["chunks"] = [tuple(c) for c in d["chunks"]]
        ws[d["name"]] = Workload(**d, levels=levels)
    return raw["meta"], ws, raw["upload"]


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compression_options", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smaller workloads (32/16/32/16 MiB)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--no-upload", action="store_true", help="skip the moto upload measurement")
    parser.add_argument("--reps", type=int, default=3, help="compress repetitions (best of, per chunk)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the markdown from the JSON of the last run, no measuring",
    )
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    json_path = args.out / f"compression-options-{mode}.json"
    if args.report_only:
        text = markdown(*_from_json(json_path.read_text()))
        (args.out / f"compression-options-{mode}.md").write_text(text)
        print(text)
        return 0
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    meta: dict[str, Any] = {
        "mode": mode,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "zstandard": zstandard.__version__,
        "libzstd": ".".join(map(str, zstandard.ZSTD_VERSION)),
        "backend": zstandard.backend,
        "pyfastcdc": version("pyfastcdc"),
        "xxhash": xxhash.VERSION,
        "numpy": np.__version__,
        "pyarrow": version("pyarrow"),
        "reps": args.reps,
        "cheap_reps": 3,
    }
    upload: dict[str, float] = {}
    if not args.no_upload:
        log("upload throughput on moto")
        upload = upload_throughput(log)
    ws: dict[str, Workload] = {}
    with tempfile.TemporaryDirectory(prefix="cas-compression-") as tmp:
        for name, size in SIZES[mode].items():
            path = Path(tmp) / name
            log(f"generating {name} ({size / MiB:.0f} MiB)")
            GENERATORS[name](path, size)
            data = path.read_bytes()
            path.unlink()
            log(f"measuring {name} ({len(data) / MiB:.1f} MiB)")
            ws[name] = measure(name, data, meta["reps"], meta["cheap_reps"], log)
            del data
            gc.collect()
    meta["seconds"] = time.perf_counter() - t_start
    text = markdown(meta, ws, upload)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(_to_json(meta, ws, upload) + "\n")
    (args.out / f"compression-options-{mode}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
