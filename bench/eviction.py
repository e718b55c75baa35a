"""What does the cache's eviction policy cost on the read path?

diskcache's default "least-recently-stored" policy makes a hit a pure read; true LRU
("least-recently-used") updates the access time on every hit, i.e. every read is a
SQLite write. This measures a cache hit (``get(read=True)`` of a file-backed value,
as cas_store does) under each policy.

    python -m bench.eviction [--items 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import diskcache

from cas_store.cache import AdoptingDisk

POLICIES = ("least-recently-stored", "least-recently-used", "least-frequently-used", "none")


def measure(policy: str, items: int, repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cache = diskcache.Cache(tmp, eviction_policy=policy, size_limit=2**40, disk=AdoptingDisk)
        payload = os.urandom(64 * 1024)
        for i in range(items):
            cache.set(f"k{i}", payload)
        runs = []
        for _ in range(repeat):
            start = time.perf_counter()
            for i in range(items):
                handle = cache.get(f"k{i}", read=True)
                handle.close()
            runs.append((time.perf_counter() - start) / items * 1e6)
        cache.close()
    return {"median_us": statistics.median(runs), "min_us": min(runs), "max_us": max(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results = {p: measure(p, args.items, args.repeat) for p in POLICIES}
    base = results["least-recently-stored"]["median_us"]
    print("| policy | hit (µs, median) | min | max | vs least-recently-stored |")
    print("|---|---|---|---|---|")
    for policy, r in results.items():
        print(
            f"| {policy} | {r['median_us']:.1f} | {r['min_us']:.1f} | "
            f"{r['max_us']:.1f} | "
            f"{r['median_us'] / base:.2f}x |"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
