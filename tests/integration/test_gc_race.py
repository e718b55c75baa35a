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

from cas_store.maintenance import collect, verify
from tests.integration.conftest import FSFactory
from tests.support.moto import MotoServer

WORKER = Path(__file__).with_name("gc_worker.py")
GRACE = 2
PAST_GRACE = GRACE + 1.2


@pytest.fixture
def server(moto: MotoServer) -> MotoServer:
    return moto


def _env(moto: MotoServer, cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ENDPOINT_URL": moto.endpoint_url,
        "AWS_ACCESS_KEY_ID": moto.access_key,
        "AWS_SECRET_ACCESS_KEY": moto.secret_key,
        "CAS_STORE_CACHE_DIR": str(cache),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }


def _gc_objects(s3client: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3client.list_objects_v2(Bucket=bucket, Prefix="store/gc/").get("Contents", [])]


def _pool(tmp_path: Path, n: int) -> Path:
    pool = tmp_path / "pool"
    pool.mkdir()
    rng = random.Random(8)
    for i in range(n):
        (pool / f"c{i}").write_bytes(rng.randbytes(rng.choice([300_000, 2**20 + 7, 2 * 2**20 + 3])))
    return pool


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
            env=_env(moto, tmp_path / f"cache-{w}"),
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

    expected: dict[str, str] = {}
    for log in logs:
        for line in log.read_text().splitlines():
            op = json.loads(line)
            if op["op"] == "write":
                expected[op["path"]] = op["content"]
            else:
                expected.pop(op["path"])
    assert len(expected) > 10
    reader = make_fs(cache_dir=str(tmp_path / "reader-cache"))
    for path, content in expected.items():
        assert reader.cat(path) == (pool / content).read_bytes(), path
    assert sorted(reader.find(root)) == sorted(p.removeprefix("s3cas://") for p in expected)
    check = verify(store, deep=True)
    assert check.ok and check.quarantined == 0, check.to_dict()
    quarantined = sum(r.quarantined_blobs for r in reports)
    assert quarantined > 0 and sum(r.freed_blobs for r in reports) > 0
    assert _gc_objects(s3client, bucket) == []  # no run, copy or lease left


@pytest.mark.timeout(180)
@pytest.mark.parametrize("step", ["p1:copied", "p1:moved", "p2:restored", "p2:purged"])
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
        env=_env(moto, tmp_path / "collector-cache"),
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
