"""A process of tests/integration/test_concurrency.py's mixed workload, or its checker.

    python concurrency_worker.py run ROOT WORKER SEED OPS POOL_DIR LOG
    python concurrency_worker.py check ROOT POOL_DIR EXPECTED

Connection settings and the (shared) cache directory come from the environment
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, CAS_STORE_CACHE_DIR).

``run`` does OPS mixed operations: writes and overwrites of its own paths (``w<WORKER>/``:
tiny inline files, and single- and multi-chunk contents of POOL_DIR, which every worker
writes, so they deduplicate), writes of shared paths (``shared/``, content with a header
naming its write), reads, copies, removals and listings. Reads and listings of its own
paths are checked against what it wrote (they are its alone); a read of a shared path
must be one whole write. One JSON line per completed operation goes to LOG, with its start
and end times. ``check`` reads every path of EXPECTED ({path: spec}) and compares.
"""

from __future__ import annotations

import json
import random
import sys
import time
from functools import cache
from pathlib import Path

from cas_store import CASFileSystem

HEADER = 64
OWN_PATHS = 8
SHARED_PATHS = 3


@cache
def _pool_bytes(pool_dir: str, name: str) -> bytes:
    return (Path(pool_dir) / name).read_bytes()


def content(spec: str, pool_dir: str) -> bytes:
    """The bytes a spec names: ``tiny:SEED:SIZE``, ``pool:NAME``, ``shared:WRITE:NAME``."""
    kind, _, rest = spec.partition(":")
    if kind == "tiny":
        seed, size = rest.split(":")
        return random.Random(int(seed)).randbytes(int(size))
    if kind == "pool":
        return _pool_bytes(pool_dir, rest)
    write, _, name = rest.rpartition(":")
    return write.encode().ljust(HEADER, b"#") + _pool_bytes(pool_dir, name)


def run(root: str, worker: str, seed: int, ops: int, pool_dir: str, log_path: str) -> None:
    fs = CASFileSystem(root=root, skip_instance_cache=True)
    rng = random.Random(seed)
    pool = sorted(p.name for p in Path(pool_dir).iterdir())
    mine: dict[str, str] = {}  # path -> spec, as this worker last wrote it
    own = [f"{root}/w{worker}/f{i}" for i in range(OWN_PATHS)]
    shared = [f"{root}/shared/s{i}" for i in range(SHARED_PATHS)]
    with open(log_path, "w") as log:
        for n in range(ops):
            t0 = time.time()
            roll = rng.random()
            record: dict[str, object]
            if roll < 0.35 or not mine:
                path = rng.choice(own)
                spec = f"tiny:{seed * 100_000 + n}:{rng.randrange(1, 12_000)}" if rng.random() < 0.3 else None
                spec = spec or f"pool:{rng.choice(pool)}"
                fs.pipe(path, content(spec, pool_dir))
                mine[path] = spec
                record = {"op": "write", "path": path, "spec": spec}
            elif roll < 0.45:
                path = rng.choice(shared)
                spec = f"shared:w{worker}.{n}:{rng.choice(pool)}"
                fs.pipe(path, content(spec, pool_dir))
                record = {"op": "write", "path": path, "spec": spec}
            elif roll < 0.60:
                path = rng.choice(sorted(mine))
                body = fs.cat(path)
                assert body == content(mine[path], pool_dir), f"{path}: not what was written ({mine[path]})"
                record = {"op": "read", "path": path}
            elif roll < 0.65:
                path = rng.choice(shared)
                if fs.exists(path):
                    body = fs.cat(path)
                    write = body[:HEADER].rstrip(b"#").decode()
                    name = body_name(body, pool_dir, pool)
                    assert name is not None, f"{path}: a torn or foreign version (header {write!r})"
                record = {"op": "read", "path": path}
            elif roll < 0.75:
                source, dest = rng.choice(sorted(mine)), rng.choice(own)
                fs.copy(source, dest)
                mine[dest] = mine[source]
                record = {"op": "copy", "path": dest, "spec": mine[source], "source": source}
            elif roll < 0.85:
                path = rng.choice(sorted(mine))
                fs.rm(path)
                del mine[path]
                record = {"op": "rm", "path": path}
            else:
                detail = rng.random() < 0.5  # a detailed listing reads (or mirrors) the entries
                found = fs.ls(f"{root}/w{worker}", detail=detail)
                names = [f["name"] for f in found] if detail else found
                listed = {fs.unstrip_protocol(name) for name in names}
                assert listed == set(mine), f"listing {sorted(listed)} is not {sorted(mine)}"
                record = {"op": "ls", "path": f"{root}/w{worker}"}
            log.write(json.dumps({**record, "t0": t0, "t1": time.time()}) + "\n")
            log.flush()


def body_name(body: bytes, pool_dir: str, pool: list[str]) -> str | None:
    """The pool content a shared write's body carries after its header, if it is whole."""
    for name in pool:
        if body[HEADER:] == _pool_bytes(pool_dir, name):
            return name
    return None


def check(root: str, pool_dir: str, expected_path: str) -> None:
    fs = CASFileSystem(root=root, skip_instance_cache=True)
    expected: dict[str, str] = json.loads(Path(expected_path).read_text())
    for path, spec in expected.items():
        assert fs.cat(path) == content(spec, pool_dir), f"{path}: not {spec}"
    print("ok", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7])
    else:
        check(sys.argv[2], sys.argv[3], sys.argv[4])
