"""A separate process for tests/integration/test_gc_race.py: a writer, or a collector.

    python gc_worker.py write ROOT WORKER SEED SECONDS POOL_DIR LOG
    python gc_worker.py collect ROOT PAUSE_AT
    python gc_worker.py collect-on-command ROOT

Connection settings come from the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, CAS_STORE_CACHE_DIR). ``write`` writes (deduplicating against the
contents of POOL_DIR, which the store has seen and partly removed) and removes paths for
SECONDS (or until the file LOG.stop exists), appending one JSON line per completed
operation to LOG. ``collect`` runs an acting collection and, at step PAUSE_AT, prints
``PAUSED`` and sleeps (to be killed there); if it never reaches that step it prints
``FINISHED``. ``collect-on-command`` imports everything, prints ``READY`` and reads
PAUSE_AT from stdin first (so that a test need not wait for the imports).
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from cas_store import CASFileSystem
from cas_store.maintenance import collect


def write(root: str, worker: str, seed: int, seconds: float, pool_dir: str, log_path: str) -> None:
    fs = CASFileSystem(root=root, skip_instance_cache=True, chunk_size=2**20, gc_grace=2)
    pool = sorted(Path(pool_dir).iterdir())
    rng = random.Random(seed)
    mine: list[str] = []
    deadline = time.monotonic() + seconds
    stop = Path(log_path + ".stop")
    n = 0
    with open(log_path, "a") as log:
        while time.monotonic() < deadline and not stop.exists():
            if mine and rng.random() < 0.25:
                path = mine.pop(rng.randrange(len(mine)))
                fs.rm(path)
                log.write(json.dumps({"op": "rm", "path": path}) + "\n")
            else:
                content = rng.choice(pool)
                path = f"{root}/w{worker}/{n}"
                n += 1
                with fs.open(path, "wb") as f:
                    data = content.read_bytes()
                    half = len(data) // 2
                    f.write(data[:half])
                    time.sleep(rng.random() * 0.8)  # held open across a collection, sometimes past V
                    f.write(data[half:])
                mine.append(path)
                log.write(json.dumps({"op": "write", "path": path, "content": content.name}) + "\n")
            log.flush()


def collect_pausing(root: str, pause_at: str) -> None:
    fs = CASFileSystem(root=root, skip_instance_cache=True, gc_grace=2)

    def hook(step: str, run: str) -> None:
        if step == pause_at:
            print("PAUSED", flush=True)
            time.sleep(3600)  # killed here

    collect(fs.store(), dry_run=False, hook=hook, break_lease=True)
    print("FINISHED", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6], sys.argv[7])
    elif sys.argv[1] == "collect-on-command":
        print("READY", flush=True)
        collect_pausing(sys.argv[2], sys.stdin.readline().strip())
    else:
        collect_pausing(sys.argv[2], sys.argv[3])
