"""Invariant checks under concurrency: threads and processes sharing one store and one cache."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cas_store import CASFileSystem
from cas_store.hashing import hash_bytes
from tests.integration.conftest import FSFactory
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
