"""Child process of the benchmark suite: runs one task for one peer and writes its timings.

    python -m bench.worker TASK.json

TASK.json holds ``task`` (writer, reader, lister, mem_write, mem_read, versions,
versions_read), ``peer`` and everything the task needs; results go to ``TASK["out"]`` as
JSON, rewritten after every step, so that what was measured before a failure is kept. Run
by ``bench.suite`` with an isolated environment (``bench.common.child_environ``); every
cache directory it is given is fresh.

Paths inside a peer's root:
``large/a.bin`` and ``large/b.bin`` (same content), ``small/fNNNNN.bin``, ``mem/m.bin``,
``versions/*`` (S2, S2b, S3, S4: first and second versions of generated files),
``warmup/w.bin`` (written before timing so that clients, connections and, for
cas_store, the store's format marker exist, as in any process that has done something).
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import traceback
from pathlib import Path
from typing import Any

import xxhash

from bench.common import (
    MiB,
    RequestCounter,
    copy_in,
    drain,
    make_peer,
    proc_status,
    reset_peak_rss,
    small_payload,
    timed,
)
from tests.support import workloads
from tests.support.workloads import Pieces

LARGE_A = "large/a.bin"
LARGE_B = "large/b.bin"
SMALL_DIR = "small"
MEM = "mem/m.bin"
WARMUP = "warmup/w.bin"
V1 = "versions/v1.bin"  # S2, S2b: the first version; S4 reads it
V2 = "versions/v2.bin"  # S2: 10 scattered 4 KiB overwrites
V2B = "versions/v2b.bin"  # S2b: 100 bytes inserted at offset 1000
CSV1 = "versions/table.csv"  # S3: the first version
CSV2 = "versions/table-v2.csv"  # S3: 10% more rows


class Task:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.out = Path(spec["out"])
        self.metrics: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self.after_close: list[Any] = []  # run once the peer is closed

    def record(self, name: str, value: Any) -> None:
        self.metrics[name] = value
        self.flush()

    def flush(self, error: str | None = None) -> None:
        data = {"metrics": self.metrics, "info": self.info, "error": error}
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.out)


def small_paths(peer: Any, n: int) -> list[str]:
    return [peer.path(f"{SMALL_DIR}/f{i:05d}.bin") for i in range(n)]


def warm_up_write(peer: Any) -> None:
    with peer.open(peer.path(WARMUP), "wb") as f:
        f.write(b"warm-up\n")
    assert peer.exists(peer.path(WARMUP))


def run_writer(task: Task, peer: Any) -> None:
    s = task.spec
    warm_up_write(peer)
    chunk = s["chunk"]

    def write(rel: str) -> int:
        with peer.open(peer.path(rel), "wb") as f:
            return copy_in(s["large_src"], f, chunk)

    seconds, n = timed(lambda: write(LARGE_A))
    assert n == s["large_size"], n
    task.record("large.cold_write", seconds)
    seconds, _ = timed(lambda: write(LARGE_B))
    task.record("large.identical_write", seconds)

    paths = small_paths(peer, s["small_n"])
    payloads = [small_payload(s["small_seed"], i, s["small_size"]) for i in range(len(paths))]

    def write_small() -> None:
        for path, data in zip(paths, payloads, strict=True):
            with peer.open(path, "wb") as f:
                f.write(data)

    task.record("small.write", timed(write_small)[0])
    seconds, found = timed(lambda: [peer.exists(p) for p in paths])
    assert all(found), "exists() is False for a file just written"
    task.record("small.exists", seconds)
    seconds, names = timed(lambda: peer.listdir(peer.path(SMALL_DIR)))
    assert len(names) == len(paths), f"listdir found {len(names)} of {len(paths)} files"
    task.record("small.listdir_writer", seconds)


def run_reader(task: Task, peer: Any) -> None:
    s = task.spec
    chunk = s["chunk"]
    assert peer.exists(peer.path(WARMUP))  # clients and connections, as in a process that did something

    paths = small_paths(peer, s["small_n"])

    def read_large(hasher: Any = None) -> int:
        with peer.open(peer.path(LARGE_A), "rb") as f:
            return drain(f, chunk, hasher)

    hasher = xxhash.xxh3_128()
    seconds, n = timed(lambda: read_large(hasher))
    if n != s["large_size"] or hasher.hexdigest() != s["large_digest"]:
        raise AssertionError(f"cold read returned wrong bytes ({n} bytes, digest {hasher.hexdigest()})")
    task.record("large.cold_read", seconds)

    def read_whole() -> int:
        with peer.open(peer.path(LARGE_A), "rb") as f:
            return len(f.read())

    for metric, read in (("large.warm_read", read_large), ("large.warm_read_whole", read_whole)):
        warm = []
        for _ in range(s["warm_iters"]):
            seconds, n = timed(read)
            assert n == s["large_size"], n
            warm.append(seconds)
        task.info[f"{metric}.all"] = warm
        task.record(metric, statistics.median(warm))

    expected = [small_payload(s["small_seed"], i, s["small_size"]) for i in range(len(paths))]

    def read_small() -> list[bytes]:
        out = []
        for path in paths:
            with peer.open(path, "rb") as f:
                out.append(f.read())
        return out

    for name in ("small.read_cold", "small.read_warm"):
        seconds, got = timed(read_small)
        if got != expected:
            raise AssertionError(f"{name}: small files came back with wrong content")
        task.record(name, seconds)


def run_lister(task: Task, peer: Any) -> None:
    """The first listdir of a process with an empty cache (its own process: a reader's
    reads would fill the cache first, and a listing first would warm the reads)."""
    assert peer.exists(peer.path(WARMUP))
    seconds, names = timed(lambda: peer.listdir(peer.path(SMALL_DIR)))
    n = task.spec["small_n"]
    assert len(names) == n, f"listdir found {len(names)} of {n} files"
    task.record("small.listdir_fresh", seconds)


def run_mem(task: Task, peer: Any, write: bool) -> None:
    """Peak RSS growth (VmHWM) of this fresh process while writing or reading one file.

    The harness's chunk buffer is allocated before the baseline and reused (``readinto``),
    so the growth is the peer's own.
    """
    s = task.spec
    if write:
        warm_up_write(peer)
    else:
        assert peer.exists(peer.path(WARMUP))
    buffer = bytearray(s["chunk"])  # zero-filled, so resident before the baseline
    hasher = xxhash.xxh3_128()
    gc.collect()
    task.info["peak_reset"] = reset_peak_rss()
    before = proc_status()
    path = peer.path(MEM)
    if write:

        def op() -> int:
            with peer.open(path, "wb") as f:
                return copy_in(s["src"], f, s["chunk"], buffer)

    else:

        def op() -> int:
            with peer.open(path, "rb") as f:
                return drain(f, s["chunk"], hasher, buffer)

    seconds, n = timed(op)
    after = proc_status()
    if n != s["size"] or (not write and hasher.hexdigest() != s["digest"]):
        raise AssertionError(f"memory {'write' if write else 'read'} moved wrong bytes ({n})")
    task.info["status_before"] = before
    task.info["status_after"] = after
    task.info["seconds"] = seconds
    task.info["chunk"] = s["chunk"]
    task.record("hwm_growth", after["VmHWM"] - before["VmHWM"])


def write_pieces(peer: Any, rel: str, pieces: Pieces, chunk: int) -> int:
    """Write ``pieces`` in order, each in writes of at most ``chunk`` bytes; the file's size."""
    with peer.open(peer.path(rel), "wb") as f:
        return workloads.write_pieces(f, pieces, chunk)


def stored(spec: dict[str, Any]) -> dict[str, int]:
    """Key -> size of every object under the peer's prefix in the bucket."""
    from bench.suite import Endpoint
    from tests.support.clients import boto3_client

    client = boto3_client(Endpoint(spec["endpoint"], spec["access_key"], spec["secret_key"]))
    out: dict[str, int] = {}
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=spec["bucket"], Prefix=spec["prefix"] + "/"
        )
        for page in pages:
            out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    finally:
        client.close()
    return out


def data_key(spec: dict[str, Any], key: str) -> bool:
    """Whether ``key`` (bucket-relative) holds file content: cas_store's blobs; any other
    peer's files under ``versions/``."""
    prefix = spec["prefix"] + ("/blobs/" if spec["peer"] == "cas" else "/versions/")
    return key.startswith(prefix)


def run_versions(task: Task, peer: Any) -> None:
    """S2, S2b, S3: write a first version, then a second at a new path; what the second
    added to the bucket (new content objects: cas_store's new blobs), as a share of its size.
    Also the digest of the slice S4 reads (``versions_read``) from the first version."""
    s = task.spec
    warm_up_write(peer)
    chunk = s["chunk"]
    if peer.name == "cas":
        task.info["chunker"] = peer.store.filesystem.store(peer.root).chunker().name

    def write(name: str, rel: str, pieces: Pieces, first: bool = False) -> None:
        before = stored(s)
        seconds, size = timed(lambda: write_pieces(peer, rel, pieces, chunk))
        new = {k: v for k, v in stored(s).items() if k not in before}
        data = sum(v for k, v in new.items() if data_key(s, k))
        task.info[name] = {
            "path": rel,
            "size": size,
            "seconds": seconds,
            "new_objects": len(new),
            "new_bytes": sum(new.values()),
            "new_data_objects": sum(1 for k in new if data_key(s, k)),
            "new_data_bytes": data,
        }
        if not first:
            task.record(f"ver.{name}.added", data / size)
        else:
            task.flush()

    base = workloads.random_bytes(s["size"], 1)
    write("v1", V1, [base], first=True)
    write("s2", V2, workloads.scattered_overwrites(base, count=10, size=4096))
    write("s2b", V2B, workloads.inserted_near_start(base, at=1000, size=100))
    offset = s["offset"]
    task.info["s4_digest"] = xxhash.xxh3_128(memoryview(base)[offset : offset + MiB]).hexdigest()
    del base
    first, second = workloads.csv_versions(s["csv_size"], grow=0.10)
    write("csv1", CSV1, [first], first=True)
    write("s3", CSV2, [second])
    task.info["s3"]["ideal"] = (len(second) - len(first)) / len(second)
    task.flush()


def run_versions_read(task: Task, peer: Any) -> None:
    """S4: in this fresh process with an empty cache, read 1 MiB at ``offset`` of the first
    version; the GETs of content objects (cas_store: blobs) and the bytes they asked for
    (their ranges), counted at the client once the peer is closed: read-ahead sent by then is
    included, even if closing cancelled it."""
    s = task.spec
    assert peer.exists(peer.path(WARMUP))  # clients and connections, as in a process that did something
    counter = RequestCounter(s["endpoint"])
    bucket = s["bucket"]

    def key(path: str) -> str:  # the URL path, path-style or virtual-hosted
        path = path.lstrip("/")
        return path[len(bucket) + 1 :] if path.startswith(f"{bucket}/{s['prefix']}/") else path

    def op() -> bytes:
        with peer.open(peer.path(V1), "rb") as f:
            f.seek(s["offset"])
            return bytes(f.read(MiB))

    counter.clear()
    seconds, got = timed(op)
    if len(got) != MiB or xxhash.xxh3_128(got).hexdigest() != s["digest"]:
        raise AssertionError(f"S4: read {len(got)} bytes at {s['offset']} with the wrong content")
    task.info["seconds"] = seconds
    task.info["offset"] = s["offset"]

    def count() -> None:
        sent = counter.requests
        gets = [r for r in sent if r.method == "GET" and data_key(s, key(r.path))]
        task.info["requests"] = [[r.method, key(r.path), r.range, r.response_bytes] for r in sent]
        task.record("ver.s4.fetched", sum(r.asked_bytes for r in gets))
        task.record("ver.s4.gets", len(gets))

    task.after_close.append(count)


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    task = Task(spec)
    peer = None
    try:
        peer = make_peer(spec)
        kind = spec["task"]
        if kind == "writer":
            run_writer(task, peer)
        elif kind == "reader":
            run_reader(task, peer)
        elif kind == "lister":
            run_lister(task, peer)
        elif kind in ("mem_write", "mem_read"):
            run_mem(task, peer, write=kind == "mem_write")
        elif kind == "versions":
            run_versions(task, peer)
        elif kind == "versions_read":
            run_versions_read(task, peer)
        else:
            raise ValueError(f"unknown task {kind!r}")
    except BaseException as exc:
        task.flush(error="".join(traceback.format_exception(exc))[-4000:])
        return 1
    finally:
        if peer is not None:
            try:
                peer.close()
            except Exception as exc:  # measured already; a failing close is reported, not fatal
                task.info["close_error"] = repr(exc)
    try:
        for fn in task.after_close:
            fn()
    except BaseException as exc:
        task.flush(error="".join(traceback.format_exception(exc))[-4000:])
        return 1
    task.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
