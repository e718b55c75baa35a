"""Servers that do not honour conditional writes (If-None-Match, If-Match): deduplication,
publishing, the upgrade's marker rewrite and the collection stay correct.

Each scenario runs on moto with the conditional headers stripped before moto sees them (the
server ignores them, as JuiceFS, rclone and s3rver do), on moto answering ``501
NotImplemented`` to any request carrying them (as Swift does), and on SeaweedFS as it is
(it honours them).

Promises: no blob is lost, every published entry is one whole version of what was written,
a deep ``verify`` finds nothing wrong, and what a collection quarantines while a writer
deduplicates against it is restored.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cas_store.errors import CASStoreError
from cas_store.format import Marker
from cas_store.maintenance import collect, upgrade_store, verify
from tests.integration.conftest import FSFactory
from tests.support.clients import S3Endpoint, worker_environ
from tests.support.faults import FaultKind, Rule
from tests.support.moto import MotoServer

MiB = 2**20
GRACE = 2.0
PAST_GRACE = GRACE + 1.2
QUIRKS: dict[str, FaultKind] = {"ignored": "strip-conditional", "rejected": "reject-conditional"}


@pytest.fixture(params=["ignored", "rejected", pytest.param("seaweedfs", marks=pytest.mark.seaweedfs)])
def server(request: pytest.FixtureRequest) -> Iterator[S3Endpoint]:
    """moto ignoring or rejecting conditional headers, or SeaweedFS as it is."""
    if request.param == "seaweedfs":
        yield request.getfixturevalue("seaweedfs")
        return
    moto: MotoServer = request.getfixturevalue("moto")
    moto.faults.add_rule(Rule(QUIRKS[request.param], times=None))
    try:
        yield moto
    finally:
        moto.faults.off()
        moto.faults.clear_records()


def quirk_met(server: S3Endpoint) -> None:
    """On moto, the quirk really met conditional requests (else the scenario proved nothing)."""
    if isinstance(server, MotoServer):
        counts = server.faults.counts()
        assert sum(counts[k] for k in QUIRKS.values()) > 0, counts


def _blob_keys(s3client: Any, bucket: str) -> list[str]:
    pages = s3client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="store/blobs/")
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _together(workers: list[Callable[[], None]]) -> list[BaseException]:
    """Run the workers in threads released at once; return what they raised."""
    barrier = threading.Barrier(len(workers))
    errors: list[BaseException] = []

    def run(work: Callable[[], None]) -> None:
        barrier.wait()
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return errors


def _check_store(make_fs: FSFactory, root: str, tmp_path: Path, expected: dict[str, set[bytes]]) -> None:
    """From an empty cache each path holds one whole allowed version; a deep verify is clean."""
    reader = make_fs(cache_dir=str(tmp_path / f"check-{time.monotonic_ns()}"))
    for path, allowed in expected.items():
        data = reader.cat(path)
        assert data in allowed, f"{path}: {len(data)} bytes, none of the versions written"
    report = verify(reader.store(), deep=True)
    assert report.ok and report.entries == len(expected), report.to_dict()


@pytest.mark.timeout(120)
def test_concurrent_deduplicating_writers_threads(
    server: S3Endpoint, make_fs: FSFactory, root: str, tmp_path: Path, s3client: Any, bucket: str
) -> None:
    big, tiny = os.urandom(3 * MiB), b"small and inline"
    writers = [make_fs(chunk_size=MiB, cache_dir=str(tmp_path / f"w{i}")) for i in range(5)]

    def writer(i: int) -> Callable[[], None]:
        def work() -> None:
            writers[i].pipe({f"{root}/big-{i}": big, f"{root}/tiny-{i}": tiny})

        return work

    assert _together([writer(i) for i in range(5)]) == []
    expected = {f"{root}/big-{i}": {big} for i in range(5)} | {f"{root}/tiny-{i}": {tiny} for i in range(5)}
    _check_store(make_fs, root, tmp_path, expected)
    assert len(_blob_keys(s3client, bucket)) == 3  # stored once: one blob per chunk
    quirk_met(server)


_PROCESS_WRITER = """
import sys
from cas_store import CASFileSystem
root, worker, source = sys.argv[1:4]
fs = CASFileSystem(root=root, skip_instance_cache=True, chunk_size=2**20)
data = open(source, "rb").read()
for i in range(3):
    fs.pipe(f"{root}/p{worker}-{i}", data)
fs.pipe(f"{root}/shared", data[: 2**20 + 5 + int(worker)])
"""


@pytest.mark.timeout(120)
def test_concurrent_deduplicating_writers_processes(
    server: S3Endpoint, make_fs: FSFactory, root: str, tmp_path: Path, s3client: Any, bucket: str
) -> None:
    make_fs(chunk_size=MiB).pipe(f"{root}/first", b"the store exists")  # both processes join it
    data = os.urandom(2 * MiB + 11)
    source = tmp_path / "content"
    source.write_bytes(data)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS_WRITER, root, str(w), str(source)],
            env=worker_environ(server, tmp_path / f"cache-{w}"),
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=100)
        assert proc.returncode == 0, err[-3000:]
    expected = {f"{root}/p{w}-{i}": {data} for w in range(2) for i in range(3)}
    expected[f"{root}/shared"] = {data[: MiB + 5], data[: MiB + 6]}
    expected[f"{root}/first"] = {b"the store exists"}
    _check_store(make_fs, root, tmp_path, expected)
    # The 3 chunks of data, the two tails of "shared" (its first chunk is data's first).
    assert len(_blob_keys(s3client, bucket)) == 5
    quirk_met(server)


@pytest.mark.timeout(120)
def test_concurrent_publishers_of_one_path(
    server: S3Endpoint, make_fs: FSFactory, root: str, tmp_path: Path
) -> None:
    versions = [os.urandom(2 * MiB + i) for i in range(4)] + [b"inline version %d" % i for i in range(2)]
    writers = [make_fs(chunk_size=MiB, cache_dir=str(tmp_path / f"w{i}")) for i in range(len(versions))]
    path = f"{root}/contested"
    for _ in range(2):
        jobs = [
            lambda fs=fs, data=data: fs.pipe(path, data) for fs, data in zip(writers, versions, strict=True)
        ]
        assert _together(jobs) == []  # type: ignore[arg-type]
        _check_store(make_fs, root, tmp_path, {path: set(versions)})
    quirk_met(server)


@pytest.mark.timeout(120)
def test_upgrade_rewrites_the_marker(
    server: S3Endpoint, make_fs: FSFactory, root: str, tmp_path: Path, s3client: Any, bucket: str
) -> None:
    """cas-store upgrade's If-Match rewrite: alone, and two upgrades racing."""
    s3client.put_object(
        Bucket=bucket, Key="store/cas-store.json", Body=Marker(1, "xxh128", MiB, "cas_store 0.1.0").encode()
    )
    old = os.urandom(MiB + 3)
    fs = make_fs(chunk_size=MiB)
    assert fs.store().marker().version == 1  # type: ignore[union-attr]
    fs.pipe(f"{root}/old", old)
    stores = [make_fs(chunk_size=MiB, cache_dir=str(tmp_path / f"u{i}")).store() for i in range(2)]
    results: list[Any] = []

    def upgrade(i: int) -> Callable[[], None]:
        return lambda: results.append(upgrade_store(stores[i], GRACE))

    errors = _together([upgrade(0), upgrade(1)])
    # Each either upgraded or says to run the upgrade again (lost a race it could detect).
    assert all(isinstance(e, CASStoreError) and "upgrade again" in str(e) for e in errors), errors
    assert results and any(r.created for r in results)
    marker = Marker.decode(s3client.get_object(Bucket=bucket, Key="store/cas-store.json")["Body"].read(), "m")
    assert marker.version == 2 and marker.gc is not None and marker.gc.grace == GRACE
    again = upgrade_store(make_fs(cache_dir=str(tmp_path / "again")).store(), GRACE)
    assert (again.version, again.created) == (2, False)
    new = os.urandom(MiB + 9)
    make_fs(cache_dir=str(tmp_path / "after")).pipe(f"{root}/new", new)
    _check_store(make_fs, root, tmp_path, {f"{root}/old": {old}, f"{root}/new": {new}})
    quirk_met(server)


@pytest.mark.timeout(120)
def test_collection_racing_a_deduplicating_writer(
    server: S3Endpoint, make_fs: FSFactory, root: str, tmp_path: Path, s3client: Any, bucket: str
) -> None:
    """A writer proves old garbage blobs present, a collection moves them, the writer publishes:
    readers find them in quarantine, the next collection restores them (docs/gc.md case a)."""
    fs = make_fs(chunk_size=MiB, gc_grace=GRACE)
    keep, data = os.urandom(MiB + 1), os.urandom(2 * MiB + 1)
    fs.pipe({f"{root}/keep": keep, f"{root}/gone": data})
    fs.rm(f"{root}/gone")
    time.sleep(PAST_GRACE)  # the garbage is older than G
    writer = make_fs(chunk_size=MiB, gc_grace=GRACE, cache_dir=str(tmp_path / "writer")).store()
    f = writer.open_write("new", "new")
    f.write(data)  # HEADs prove the old blobs present: nothing is uploaded
    f.flush()
    collector = make_fs(cache_dir=str(tmp_path / "collector")).store()
    moved = collect(collector, dry_run=False)
    assert moved.quarantined_blobs == 3  # the 3 chunks of "gone" ("new" is not published yet)
    f.close()
    assert make_fs(cache_dir=str(tmp_path / "r1")).cat(f"{root}/new") == data  # from quarantine
    time.sleep(PAST_GRACE)
    restored = collect(collector, dry_run=False)
    # Each moved chunk comes back: restored by phase 2, or re-uploaded by the writer at close
    # (the tail chunk, cut only then, and any whose proof grew older than V - P meanwhile).
    assert restored.restored_blobs <= 3 and restored.freed_blobs == 0, restored.to_dict()
    _check_store(make_fs, root, tmp_path, {f"{root}/keep": {keep}, f"{root}/new": {data}})
    assert len(_blob_keys(s3client, bucket)) == 5
    listing = s3client.list_objects_v2(Bucket=bucket, Prefix="store/gc/").get("Contents", [])
    assert listing == []  # no run, quarantine copy or lease left
    quirk_met(server)
