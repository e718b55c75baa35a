"""Child process of the benchmark suite: runs one task for one peer and writes its timings.

    python -m bench.worker TASK.json

TASK.json holds ``task`` (writer, reader, lister, mem_write, mem_read), ``peer`` and everything the
task needs; results go to ``TASK["out"]`` as JSON, rewritten after every step, so that
what was measured before a failure is kept. Run by ``bench.suite`` with an isolated
environment (``bench.common.child_environ``); every cache directory it is given is fresh.

Paths inside a peer's root:
``large/a.bin`` and ``large/b.bin`` (same content), ``small/fNNNNN.bin``, ``mem/m.bin``,
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

from bench.common import copy_in, drain, make_peer, proc_status, reset_peak_rss, small_payload, timed

LARGE_A = "large/a.bin"
LARGE_B = "large/b.bin"
SMALL_DIR = "small"
MEM = "mem/m.bin"
WARMUP = "warmup/w.bin"


class Task:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.out = Path(spec["out"])
        self.metrics: dict[str, Any] = {}
        self.info: dict[str, Any] = {}

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
    warm = []
    for _ in range(s["warm_iters"]):
        seconds, n = timed(read_large)
        assert n == s["large_size"], n
        warm.append(seconds)
    task.info["large.warm_read.all"] = warm
    task.record("large.warm_read", statistics.median(warm))

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
    task.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
