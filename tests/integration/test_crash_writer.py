"""Writer processes SIGKILLed at random moments of large multi-chunk writes, on moto over HTTP.

Promises: a path is never visible with missing or partial bytes (whatever moment a writer
dies at, every listed path reads back whole, as one of the versions written to it); the
cache directory of a killed writer serves the next process (no stale lock, no damaged
database, no half-written blob served); the blobs killed writers uploaded and never
published are freed by a collection, and nothing still referenced is.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest

from cas_store import CASFileSystem
from cas_store.chunking import ChunkerSpec
from cas_store.format import Entry
from cas_store.hashing import hash_bytes
from cas_store.layout import Root
from cas_store.maintenance import collect, init_store, verify
from tests.integration.conftest import FSFactory
from tests.integration.crash_worker import content
from tests.support.clients import worker_environ
from tests.support.moto import MotoServer

WORKER = Path(__file__).with_name("crash_worker.py")
GRACE = 2
PAST_GRACE = GRACE + 1.2
#: About 24 content-defined chunks of ~128 KiB per file: many uploads to be killed among.
SIZE = 3 * 2**20 + 12_345
SMALL_CDC = ChunkerSpec(
    "fastcdc2020",
    {"min_size": 64 * 2**10, "avg_size": 128 * 2**10, "max_size": 256 * 2**10, "normalization": 2},
)
PATHS = ["a", "b", "c/d"]
KILLS = 12  # each at a random point of a write of ~24 chunks (CI time: ~3 s a kill)


@pytest.fixture
def server(moto: MotoServer) -> MotoServer:
    return moto


class Worker:
    """A crash_worker.py process, imported and waiting for a command."""

    def __init__(self, moto: MotoServer, root: str, cache: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), root],
            env=worker_environ(moto, cache),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ready = False

    def wait_ready(self) -> None:
        """Wait until it has imported everything (once)."""
        if not self.ready:
            self.expect("READY")
            self.ready = True

    @property
    def stdout(self) -> IO[str]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def expect(self, word: str) -> None:
        line = self.stdout.readline().strip()
        if line != word:
            self.proc.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"worker said {line!r}, not {word!r}: {err[-3000:]}")

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def kill(self) -> list[str]:
        """SIGKILL it; what it printed before dying."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        rest = self.stdout.read().split()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return rest


def _referenced_blobs(s3client: Any, bucket: str) -> set[str]:
    """The blob keys the store's entries name."""
    root, keys = Root(bucket, "store"), set()
    for key in _objects(s3client, bucket, "store/manifest/"):
        body = s3client.get_object(Bucket=bucket, Key=key)["Body"].read()
        entry = Entry.decode(body, key)
        keys |= {root.blob_key(entry.algorithm, c.digest) for c in entry.chunks}
    return keys


def _objects(s3client: Any, bucket: str, prefix: str) -> set[str]:
    pages = s3client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def _check_visible(
    reader: CASFileSystem, root: str, started: dict[str, list[int]], done: dict[str, int]
) -> dict[str, str]:
    """Every listed path reads whole, as a version written to it and not older than the last
    one whose write returned; {path: digest}."""
    seen = {}
    for name in reader.find(root):
        path = name.removeprefix(root.removeprefix("s3cas://") + "/")
        body = reader.cat(f"{root}/{path}")
        versions = started[path]
        matches = [i for i, seed in enumerate(versions) if body == content(seed, SIZE)]
        assert matches, f"{path}: {len(body)} bytes that are none of the versions written to it"
        if path in done:
            assert max(matches) >= done[path], f"{path}: an older version than the last completed write"
        seen[path] = hash_bytes("xxh128", body)
    for path in done:
        assert path in seen, f"{path}: a completed write is not listed"
    return seen


@pytest.mark.timeout(180)
def test_writers_killed_mid_write_leave_nothing_partial(
    moto: MotoServer, make_fs: FSFactory, root: str, tmp_path: Path, s3client: Any, bucket: str
) -> None:
    fs = make_fs(cache_dir=str(tmp_path / "setup-cache"))
    init_store(fs.store(), gc_grace=GRACE, chunker=SMALL_CDC)
    cache = tmp_path / "writer-cache"  # every writer's, in turn
    rng = random.Random(10)
    started: dict[str, list[int]] = {p: [] for p in PATHS}  # seeds, in order
    done: dict[str, int] = {}  # path -> index in started of the last write that returned

    # One write allowed to finish: its duration bounds the kill delays.
    first = Worker(moto, root, cache)
    first.wait_ready()
    nxt = Worker(moto, root, cache)  # imports while the first one writes
    started["a"].append(0)
    t0 = time.monotonic()
    first.send(f"write {root}/a 0 {SIZE}")
    first.expect("WRITING")
    first.expect("DONE")
    duration = time.monotonic() - t0
    done["a"] = 0
    first.kill()

    kills = completed = 0
    seed = 1
    while kills < KILLS:
        # A rerun deduplicates and is quick, so some writes finish before their kill.
        assert completed < 2 * KILLS, "most writes finished before their kill: the delays are too long"
        worker, nxt = nxt, Worker(moto, root, cache)
        worker.wait_ready()
        path = rng.choice(PATHS)
        # Half the time, write again what the last killed writer did not finish (a rerun).
        if started[path] and rng.random() < 0.5 and done.get(path) != len(started[path]) - 1:
            version = started[path][-1]
        else:
            version, seed = seed, seed + 1
        started[path].append(version)
        worker.send(f"write {root}/{path} {version} {SIZE}")
        worker.expect("WRITING")
        time.sleep(rng.uniform(0, 0.8 * duration))
        said = worker.kill()
        if "DONE" in said:
            done[path] = len(started[path]) - 1
            completed += 1
        else:
            kills += 1
        seen = _check_visible(
            make_fs(cache_dir=str(tmp_path / f"fresh-{kills}-{completed}")), root, started, done
        )
        # The killed writer's cache directory serves the next process (which reads through it).
        nxt.wait_ready()
        nxt.send("read " + " ".join(f"{root}/{p}" for p in seen))
        assert json.loads(nxt.stdout.readline()) == {f"{root}/{p}": d for p, d in seen.items()}
    nxt.kill()

    # A writer in this process on the same cache directory: whole reads, and dedup works.
    survivor = make_fs(cache_dir=str(cache), gc_grace=GRACE)
    for path, digest in seen.items():
        assert hash_bytes("xxh128", survivor.cat(f"{root}/{path}")) == digest
    started["rerun"], done["rerun"] = [started["a"][-1]], 0
    survivor.pipe(f"{root}/rerun", content(started["a"][-1], SIZE))
    seen["rerun"] = hash_bytes("xxh128", content(started["a"][-1], SIZE))

    orphans = _objects(s3client, bucket, "store/blobs/") - _referenced_blobs(s3client, bucket)
    assert orphans  # killed uploads and overwritten versions
    store = make_fs(cache_dir=str(tmp_path / "collector-cache")).store()
    time.sleep(PAST_GRACE)
    first_run = collect(store, dry_run=False)
    time.sleep(PAST_GRACE)
    second_run = collect(store, dry_run=False)
    assert first_run.quarantined_blobs == len(orphans)
    assert second_run.freed_blobs == len(orphans)
    assert _objects(s3client, bucket, "store/blobs/") == _referenced_blobs(s3client, bucket)
    assert _objects(s3client, bucket, "store/gc/") == set()
    report = verify(store, deep=True)
    assert report.ok and report.quarantined == 0 and report.missing == {}, report.to_dict()
    reader = make_fs(cache_dir=str(tmp_path / "final-cache"))
    assert _check_visible(reader, root, started, done) == seen
