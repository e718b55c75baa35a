"""Collections racing deduplicating writers in other processes, and a collector process killed
at a step and rerun: on moto over HTTP (docs/gc.md section 10)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cas_store import CASFileSystem
from cas_store.format import Entry
from cas_store.layout import Root
from cas_store.maintenance import collect, verify
from tests.integration.conftest import FSFactory
from tests.integration.test_gc_protocol import STEPS_P1, STEPS_P2
from tests.support.clients import worker_environ
from tests.support.moto import MotoServer

WORKER = Path(__file__).with_name("gc_worker.py")
GRACE = 2
PAST_GRACE = GRACE + 1.2


@pytest.fixture
def server(moto: MotoServer) -> MotoServer:
    return moto


def _gc_objects(s3client: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3client.list_objects_v2(Bucket=bucket, Prefix="store/gc/").get("Contents", [])]


def _pool(tmp_path: Path, n: int) -> Path:
    pool = tmp_path / "pool"
    pool.mkdir()
    rng = random.Random(8)
    for i in range(n):
        (pool / f"c{i}").write_bytes(rng.randbytes(rng.choice([300_000, 2**20 + 7, 2 * 2**20 + 3])))
    return pool


def _logged_writes_read_back(logs: list[Path], pool: Path, reader: CASFileSystem, root: str) -> None:
    """Every path the writers' logs leave written reads back (from ``reader``, an empty cache) as
    the pool content last written to it, and nothing else is listed."""
    expected: dict[str, str] = {}
    for log in logs:
        for line in log.read_text().splitlines():
            op = json.loads(line)
            if op["op"] == "write":
                expected[op["path"]] = op["content"]
            else:
                expected.pop(op["path"])
    assert len(expected) > 10
    for path, name in expected.items():
        assert reader.cat(path) == (pool / name).read_bytes(), path
    assert sorted(reader.find(root)) == sorted(p.removeprefix("s3cas://") for p in expected)


@pytest.mark.timeout(240)
def test_collections_racing_writer_processes_lose_nothing(
    moto: MotoServer, make_fs: FSFactory, root: str, tmp_path: Path, s3client: Any, bucket: str
) -> None:
    fs = make_fs(chunk_size=2**20, gc_grace=GRACE)
    pool = _pool(tmp_path, 6)
    for content in pool.iterdir():  # every content is garbage at the start: the writers revive it
        fs.pipe(f"{root}/seed/{content.name}", content.read_bytes())
    fs.rm(f"{root}/seed", recursive=True)
    time.sleep(PAST_GRACE)
    logs = [tmp_path / f"w{w}.jsonl" for w in range(2)]
    writers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "write", root, str(w), str(w), "14", str(pool), str(logs[w])],
            env=worker_environ(moto, tmp_path / f"cache-{w}"),
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(2)
    ]
    reports = []
    store = fs.store()
    while any(p.poll() is None for p in writers):
        reports.append(collect(store, dry_run=False, break_lease=True))
        time.sleep(0.5)
    for proc in writers:
        assert proc.wait() == 0, proc.stderr.read()[-3000:] if proc.stderr else ""
    time.sleep(PAST_GRACE)
    for _ in range(2):  # finish every run
        reports.append(collect(store, dry_run=False))
        time.sleep(PAST_GRACE)
    reports.append(collect(store, dry_run=False))

    _logged_writes_read_back(logs, pool, make_fs(cache_dir=str(tmp_path / "reader-cache")), root)
    check = verify(store, deep=True)
    assert check.ok and check.quarantined == 0, check.to_dict()
    quarantined = sum(r.quarantined_blobs for r in reports)
    assert quarantined > 0 and sum(r.freed_blobs for r in reports) > 0
    assert _gc_objects(s3client, bucket) == []  # no run, copy or lease left


@pytest.mark.timeout(180)
# p1:copied and p2:restored crash in process in test_gc_protocol.py (test_f), and every step
# is killed, among writers, by the test after this one: here the two steps left, alone.
@pytest.mark.parametrize("step", ["p1:moved", "p2:purged"])
def test_collector_process_killed_at_a_step_then_rerun(
    moto: MotoServer, make_fs: FSFactory, root: str, tmp_path: Path, step: str, s3client: Any, bucket: str
) -> None:
    fs = make_fs(chunk_size=2**20, gc_grace=GRACE)
    keep, gone, reborn = (os.urandom(2 * 2**20) for _ in range(3))
    fs.pipe(f"{root}/keep", keep)
    fs.pipe(f"{root}/gone", gone)
    fs.pipe(f"{root}/reborn-source", reborn)
    fs.rm([f"{root}/gone", f"{root}/reborn-source"])
    time.sleep(PAST_GRACE)
    store = fs.store()
    if step.startswith("p2"):
        with fs.open(f"{root}/reborn", "wb") as f:
            f.write(reborn)
            f.flush()  # proven present now, moved by phase 1, then published: phase 2 restores it
            collect(store, dry_run=False)
        time.sleep(PAST_GRACE)
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "collect", root, step],
        env=worker_environ(moto, tmp_path / "collector-cache"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "PAUSED", (line, proc.stderr.read() if proc.stderr else "")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Its lease stays behind: it expires after min(1 h, Δ), here 2 s.
    time.sleep(PAST_GRACE)
    collect(store, dry_run=False)
    time.sleep(PAST_GRACE)
    last: Any = collect(store, dry_run=False)
    assert last.pending == [] and last.lost == []
    reader = make_fs(cache_dir=str(tmp_path / "reader-cache"))
    assert reader.cat(f"{root}/keep") == keep
    if step.startswith("p2"):
        assert reader.cat(f"{root}/reborn") == reborn
    assert verify(store, deep=True).ok
    assert _gc_objects(s3client, bucket) == []


def _check_nothing_lost(s3client: Any, bucket: str) -> None:
    """B2 while no collector runs: every blob an entry names is at its main key or in
    quarantine. Entries are read first: writers only add blobs, so a blob present when an
    entry was published is still listed afterwards."""
    root = Root(bucket, "store")
    entries = []
    for key in _keys(s3client, bucket, "store/manifest/"):
        try:
            body = s3client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3client.exceptions.NoSuchKey:
            continue  # removed by a writer since the listing
        entries.append((key, Entry.decode(body, key)))
    present = _keys(s3client, bucket, "store/blobs/")
    quarantined = {k.rsplit("/", 2)[-2] for k in _keys(s3client, bucket, "store/gc/q/")}
    for key, entry in entries:
        for chunk in entry.chunks:
            assert root.blob_key(entry.algorithm, chunk.digest) in present or chunk.digest in quarantined, (
                f"{key} names blob {chunk.digest}, neither at its main key nor in quarantine"
            )


def _keys(s3client: Any, bucket: str, prefix: str) -> set[str]:
    pages = s3client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


class _Collector:
    """A gc_worker.py collector process, imported, waiting for the step to pause at."""

    def __init__(self, moto: MotoServer, cache: Path, root: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), "collect-on-command", root],
            env=worker_environ(moto, cache),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def pause_at(self, step: str) -> bool:
        """Run a collection to ``step`` and SIGKILL it there (True), or let it finish (False)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "READY", self._error()
        self.proc.stdin.write(step + "\n")
        self.proc.stdin.flush()
        said = self.proc.stdout.readline().strip()
        if said == "PAUSED":
            self.proc.send_signal(signal.SIGKILL)
        assert said in ("PAUSED", "FINISHED") and self.proc.wait() in (0, -signal.SIGKILL), self._error()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return said == "PAUSED"

    def _error(self) -> str:
        self.proc.kill()
        return self.proc.stderr.read()[-3000:] if self.proc.stderr else ""


@pytest.mark.timeout(240)
def test_collectors_killed_at_every_step_while_writers_deduplicate_lose_nothing(
    moto: MotoServer, make_fs: FSFactory, root: str, tmp_path: Path, s3client: Any, bucket: str
) -> None:
    """A collector is SIGKILLed at each step of both phases in turn (p1:* on fresh and on
    re-driven runs, p2:* on a due run), each time rerun by the next, while two writer
    processes keep writing and removing the very contents being collected (deduplicating
    against blobs being moved, in quarantine, or purged). After every kill B2 holds; at the
    end every logged write reads back, nothing else is listed, verify is clean."""
    fs = make_fs(chunk_size=2**20, gc_grace=GRACE)
    pool = _pool(tmp_path, 8)
    for content in pool.iterdir():  # every content is garbage at the start: the writers revive it
        fs.pipe(f"{root}/seed/{content.name}", content.read_bytes())
    for i in range(4):  # garbage no writer revives: candidates for every phase 1
        fs.pipe(f"{root}/seed/junk{i}", os.urandom(300_000 + i))
    fs.rm(f"{root}/seed", recursive=True)
    time.sleep(PAST_GRACE)
    logs = [tmp_path / f"w{w}.jsonl" for w in range(2)]
    writers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "write", root, str(w), str(20 + w), "150", str(pool), str(logs[w])],
            env=worker_environ(moto, tmp_path / "writers-cache"),  # one cache directory for both
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(2)
    ]
    collector_cache = tmp_path / "collector-cache"
    killed: list[str] = []
    try:
        nxt = _Collector(moto, collector_cache, root)
        for step in STEPS_P1 + STEPS_P2:
            if step == STEPS_P2[0]:
                time.sleep(PAST_GRACE)  # the run killed at p1:quarantined is due
            for _attempt in range(6):
                collector, nxt = nxt, _Collector(moto, collector_cache, root)
                if collector.pause_at(step):
                    killed.append(step)
                    break
                time.sleep(0.5)  # not reached this time (nothing to move, or no run due)
            _check_nothing_lost(s3client, bucket)
            assert all(p.poll() is None for p in writers), "a writer stopped early"
        nxt.proc.kill()
        nxt.proc.wait()
    finally:
        for log in logs:
            Path(f"{log}.stop").touch()
    for proc in writers:
        assert proc.wait(timeout=60) == 0, proc.stderr.read()[-3000:] if proc.stderr else ""
    assert killed == list(STEPS_P1 + STEPS_P2)

    store = fs.store()
    reports = []
    time.sleep(PAST_GRACE)  # the leases of the killed collectors have expired
    for _ in range(2):  # finish every run, and the one the first of these starts
        reports.append(collect(store, dry_run=False))
        time.sleep(PAST_GRACE)
    reports.append(collect(store, dry_run=False))
    assert all(r.lost == [] for r in reports) and reports[-1].pending == []

    _logged_writes_read_back(logs, pool, make_fs(cache_dir=str(tmp_path / "reader-cache")), root)
    check = verify(store, deep=True)
    assert check.ok and check.quarantined == 0, check.to_dict()
    assert _gc_objects(s3client, bucket) == []
