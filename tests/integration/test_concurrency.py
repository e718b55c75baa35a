"""Invariant checks under concurrency: threads and processes sharing one store and one cache."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cas_store import CASFileSystem
from cas_store.hashing import hash_bytes
from cas_store.maintenance import collect, verify
from tests.integration.concurrency_worker import content as spec_content
from tests.integration.conftest import FSFactory
from tests.support.clients import worker_environ
from tests.support.moto import MotoServer


@pytest.fixture
def server(moto: MotoServer) -> MotoServer:
    return moto


def _blobs(s3client: Any, bucket: str) -> list[str]:
    return [
        o["Key"] for o in s3client.list_objects_v2(Bucket=bucket, Prefix="store/blobs/").get("Contents", [])
    ]


def test_threads_writing_identical_content_store_one_blob(
    fs: CASFileSystem, root: str, s3client: Any, bucket: str
) -> None:
    data = os.urandom(2 * 2**20)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: fs.pipe(f"{root}/t{i}/same.bin", data), range(16)))
    store, rel = fs.locate(f"{root}/t0/same.bin")
    record = store.resolve(rel)
    assert record is not None
    # Each chunk of the content (one or two, as the store's content-defined chunker cuts it)
    # is stored once, however many threads wrote it.
    assert len(_blobs(s3client, bucket)) == len({c.digest for c in record.entry.chunks})
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: fs.cat(f"{root}/t{i}/same.bin"), range(16)))
    assert all(r == data for r in results)


def test_threads_writing_one_path_leave_one_whole_version(
    fs: CASFileSystem, root: str, s3client: Any, bucket: str
) -> None:
    versions = [os.urandom(100_000 + i) for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda v: fs.pipe(f"{root}/contended.bin", v), versions))
    final = fs.cat(f"{root}/contended.bin")
    assert final in versions  # last writer wins, never a mix
    info = fs.info(f"{root}/contended.bin")
    assert info["digest"] == hash_bytes("xxh128", final)
    assert len(_blobs(s3client, bucket)) == len(versions)


WORKER = textwrap.dedent(
    """
    import os, sys
    from cas_store import CASFileSystem
    endpoint, root, cache, worker = sys.argv[1:5]
    fs = CASFileSystem(root=root, key="testing", secret="testing",
                       client_kwargs={"endpoint_url": endpoint}, cache_dir=cache)
    shared = bytes(range(256)) * 4096 * 3  # 3 MiB, identical in every process
    for i in range(5):
        fs.pipe(f"{root}/p{worker}/same-{i}.bin", shared)
        fs.pipe(f"{root}/contended.bin", worker.encode() * 50_000)
        assert fs.cat(f"{root}/p{worker}/same-{i}.bin") == shared
        body = fs.cat(f"{root}/contended.bin")
        assert len(set(body)) == 1 and len(body) == 50_000 * len(worker), "torn read"
    print("ok")
    """
)


@pytest.mark.timeout(180)
def test_processes_share_one_store_and_one_cache(
    moto: MotoServer, root: str, bucket: str, s3client: Any, tmp_path: Path
) -> None:
    cache = str(tmp_path / "shared-cache")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, moto.endpoint_url, root, cache, str(w)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for w in range(1, 5)
    ]
    outputs = [p.communicate(timeout=170) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0 and out.strip() == "ok", err[-3000:]
    keys = _blobs(s3client, bucket)
    shared = bytes(range(256)) * 4096 * 3
    assert any(k.endswith(hash_bytes("xxh128", shared)) for k in keys)
    # One blob for the shared content plus one per distinct contended version.
    assert len(keys) == 1 + 4
    reader = CASFileSystem(
        root=root,
        key="testing",
        secret="testing",
        client_kwargs={"endpoint_url": moto.endpoint_url},
        cache_dir=cache,
        skip_instance_cache=True,
    )
    assert reader.cat(f"{root}/p3/same-4.bin") == shared


def test_concurrent_first_writers_create_one_store(make_fs: FSFactory, root: str, tmp_path: Path) -> None:
    """Many writers racing to initialise an empty prefix all end up using the one marker."""
    barrier = threading.Barrier(8)

    def first_write(i: int) -> None:
        fs = make_fs(cache_dir=str(tmp_path / f"c{i}"))  # each its own process-like state
        barrier.wait()
        fs.pipe(f"{root}/w{i}", b"x" * 20_000)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(first_write, range(8)))
    assert len(make_fs().ls(root, detail=False)) == 8


MIXED_WORKER = Path(__file__).with_name("concurrency_worker.py")
GC_GRACE = 2
PAST_GRACE = GC_GRACE + 1.2


def _expected_state(logs: list[Path]) -> dict[str, str]:
    """{path: spec} after the logged operations. A worker's own paths: its last write, copy
    or removal. A shared path: the write that no other write started after the end of."""
    state: dict[str, str] = {}
    shared: dict[str, list[dict[str, Any]]] = {}
    for log in logs:
        for line in log.read_text().splitlines():
            op = json.loads(line)
            if op["path"].split("/")[-2] == "shared":
                if op["op"] == "write":
                    shared.setdefault(op["path"], []).append(op)
            elif op["op"] in ("write", "copy"):
                state[op["path"]] = op["spec"]
            elif op["op"] == "rm":
                del state[op["path"]]
    for path, writes in shared.items():
        last = [w for w in writes if not any(o["t0"] > w["t1"] for o in writes)]
        state[path] = "|".join(sorted(w["spec"] for w in last))  # the candidates for the last write
    return state


@pytest.mark.timeout(240)
def test_four_processes_of_mixed_operations_and_a_collection_on_one_cache(
    moto: MotoServer, make_fs: FSFactory, root: str, bucket: str, s3client: Any, tmp_path: Path
) -> None:
    """4 processes x 200 mixed operations (writes of inline, single- and multi-chunk files
    sharing contents, overwrites, copies, removals, reads, listings, and writes of shared
    paths) on one store and one cache directory, while collections run: every operation
    succeeds and checks what it reads; afterwards every path holds its last write, read from
    an empty cache and by a fresh process on the shared cache; nothing else is listed;
    verify (deep) is clean once the collections finish."""
    fs = make_fs(chunk_size=2**20, gc_grace=GC_GRACE, cache_dir=str(tmp_path / "setup-cache"))
    pool = tmp_path / "pool"
    pool.mkdir()
    rng = random.Random(4)
    for i in range(6):
        (pool / f"c{i}").write_bytes(rng.randbytes([200_000, 2 * 2**20 + 5_000, 2**20 + 17][i % 3]))
    for content in sorted(pool.iterdir())[:3]:  # garbage at the start: revived, or collected
        fs.pipe(f"{root}/seed/{content.name}", content.read_bytes())
    fs.rm(f"{root}/seed", recursive=True)
    cache = tmp_path / "shared-cache"
    logs = [tmp_path / f"w{w}.jsonl" for w in range(4)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(MIXED_WORKER),
                "run",
                root,
                str(w),
                str(40 + w),
                "200",
                str(pool),
                str(logs[w]),
            ],
            env=worker_environ(moto, cache),
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    store = fs.store()
    reports = []
    try:
        while any(p.poll() is None for p in procs):
            reports.append(collect(store, dry_run=False))
            time.sleep(0.5)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc in procs:
        assert proc.wait() == 0, proc.stderr.read()[-3000:] if proc.stderr else ""
    assert sum(len(log.read_text().splitlines()) for log in logs) == 4 * 200
    assert sum(r.quarantined_blobs for r in reports) > 0  # the collections raced the writers

    time.sleep(PAST_GRACE)
    for _ in range(2):  # finish every run
        reports.append(collect(store, dry_run=False))
        time.sleep(PAST_GRACE)
    reports.append(collect(store, dry_run=False))
    assert all(r.lost == [] for r in reports) and reports[-1].pending == []

    expected = _expected_state(logs)
    reader = make_fs(cache_dir=str(tmp_path / "empty-cache"))
    assert sorted(reader.find(root)) == sorted(p.removeprefix("s3cas://") for p in expected)
    settled: dict[str, str] = {}
    for path, specs in expected.items():
        body = reader.cat(path)
        matching = [s for s in specs.split("|") if body == _spec_bytes(s, pool)]
        assert matching, f"{path}: not its last write (one of {specs})"
        settled[path] = matching[0]
    expected_file = tmp_path / "expected.json"
    expected_file.write_text(json.dumps(settled))
    checker = subprocess.run(
        [sys.executable, str(MIXED_WORKER), "check", root, str(pool), str(expected_file)],
        env=worker_environ(moto, cache),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checker.returncode == 0 and checker.stdout.strip() == "ok", checker.stderr[-3000:]
    report = verify(store, deep=True)
    assert report.ok and report.quarantined == 0, report.to_dict()
    assert [
        o["Key"] for o in s3client.list_objects_v2(Bucket=bucket, Prefix="store/gc/").get("Contents", [])
    ] == []


def _spec_bytes(spec: str, pool: Path) -> bytes:
    return spec_content(spec, str(pool))
