"""A writer process for tests/integration/test_crash_writer.py, to be killed mid-write.

    python crash_worker.py ROOT

Connection settings and the cache directory come from the environment (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, CAS_STORE_CACHE_DIR). It imports everything,
prints ``READY`` and then obeys one command per line of stdin (so that a kill lands in the
work, not in the imports); the file system is made at the first command:

    write PATH SEED SIZE   prints WRITING, writes content(SEED, SIZE) to PATH, prints DONE
    read PATH...           prints one JSON line: {path: xxh128 of its content, or null if absent}
"""

from __future__ import annotations

import json
import random
import sys

from cas_store import CASFileSystem
from cas_store.hashing import hash_bytes

#: Bytes per write() call: a write is many calls, and many chunks.
PIECE = 256 * 2**10


def content(seed: int, size: int) -> bytes:
    """The content of version ``seed``: the same bytes in every process."""
    return random.Random(seed).randbytes(size)


def main(root: str) -> None:
    fs: CASFileSystem | None = None
    print("READY", flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if fs is None:
            fs = CASFileSystem(root=root, skip_instance_cache=True)
        if command == "write":
            path, seed, size = args[0], int(args[1]), int(args[2])
            data = content(seed, size)
            print("WRITING", flush=True)
            with fs.open(path, "wb") as f:
                for start in range(0, size, PIECE):
                    f.write(data[start : start + PIECE])
            print("DONE", flush=True)
        elif command == "read":
            found = {p: hash_bytes("xxh128", fs.cat(p)) if fs.exists(p) else None for p in args}
            print(json.dumps(found), flush=True)
        else:
            raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1])
