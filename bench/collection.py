"""Garbage collection: the requests and time of a collection, per 10,000 entries (issue 8).

    python -m bench gc [--quick] [--entries N] [--removed F] [--out DIR] [--keep] [--timeout S]
    python -m bench.collection ...   (the same)

Builds a store with ``gc_grace = 2`` (``cas-store init --gc-grace 2s``) on moto (in this
process, on 127.0.0.1) holding N files (default 10,000; 1,000 with ``--quick``) of 2-64 KiB,
log-uniform, with ``inline_threshold`` 4 KiB (so about 80% of them have a blob) and 15% of
them copies of an earlier file's content; removes 30% of them, so that the blobs only they
named are garbage. Then runs the collector (:func:`cas_store.maintenance.collect`), each
invocation in a fresh process as ``cas-store gc`` would, with the local cache of a machine
that never wrote to the store:

1. a dry run, cold (an empty cache of its own);
2. phase 1 (``--yes``), cold (another empty cache, kept for the runs below);
3. phase 2, once the grace period has passed (frees what phase 1 quarantined);
4. a steady-state run: nothing changed, nothing to do;
5. a run after 1% new files were written (by a writer, not by the collector's machine).

Each invocation's S3 requests are counted by the server (moto's request log,
``tests.support.requests``) by type (LIST, GET, HEAD, PUT, COPY, DELETE) and by the part of
the store they touch; the wall time is that of ``collect()`` alone (the process, its imports
and the marker's ``GET`` are set up before the count starts). The reference row lists every
key of the store once (boto3, in a child too): the floor of any collector's listing.
Checks: the bytes freed are exactly those of the content only removed files named, nothing
else went, every remaining file's blobs are present (``verify``), the steady-state run makes
no entry ``GET``, and the last run reads exactly the new entries.

Results: ``OUT/gc-{full,quick}.{json,md}`` (default ``bench/results/``); the table is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import REPO, child_environ, small_payload

KiB = 1024
FULL: dict[str, Any] = {
    "entries": 10_000,
    "removed": 0.30,
    "shared": 0.15,
    "new": 0.01,
    "min_size": 2 * KiB,
    "max_size": 64 * KiB,
    "inline_threshold": 4 * KiB,
    "gc_grace": 2.0,
    "writers": 2,
    "threads": 8,
}
QUICK: dict[str, Any] = {**FULL, "entries": 1_000}
#: Request types, in table order.
KINDS = ("LIST", "GET", "HEAD", "PUT", "COPY", "DELETE")
#: The collector's invocations, in order: (key, label, cache, dry_run).
STEPS = (
    ("dry", "dry run, cold cache", "dry", True),
    ("phase1", "phase 1 (--yes), cold cache", "collector", False),
    ("phase2", "phase 2, after the grace period", "collector", False),
    ("steady", "steady state, nothing changed", "collector", False),
    ("new", "after 1% new files", "collector", False),
)
#: Seconds added to every wait for the grace period: LastModified has 1 s resolution.
SLACK = 1.5


# ----------------------------------------------------------------------------------------------
# The plan: which files hold which content, which are removed, what must be freed
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Plan:
    seed: str
    #: [rel, content id, size] per file written before the collections.
    files: list[list[Any]]
    removed: list[str]
    #: Files written between the steady-state run and the last one (new content).
    new_files: list[list[Any]]
    inline_threshold: int

    def blob_contents(self, files: list[list[Any]]) -> dict[int, int]:
        """Content id -> size, for the contents of ``files`` that are stored as blobs."""
        return {cid: size for _, cid, size in files if size > self.inline_threshold}

    def expected(self) -> dict[str, Any]:
        gone = set(self.removed)
        kept = [f for f in self.files if f[0] not in gone]
        written = self.blob_contents(self.files)
        live = self.blob_contents(kept)
        garbage = {cid: size for cid, size in written.items() if cid not in live}
        shared_kept = {
            cid for cid in self.blob_contents([f for f in self.files if f[0] in gone]) if cid in live
        }
        new = self.blob_contents(self.new_files)
        return {
            "files": len(self.files),
            "files_inline": sum(1 for f in self.files if f[2] <= self.inline_threshold),
            "distinct_contents": len({f[1] for f in self.files}),
            "blobs_written": len(written),
            "blob_bytes_written": sum(written.values()),
            "removed": len(self.removed),
            "live_files": len(kept),
            "live_blobs": len(live),
            "garbage_blobs": len(garbage),
            "garbage_bytes": sum(garbage.values()),
            "removed_but_still_named": len(shared_kept),
            "new_files": len(self.new_files),
            "new_blobs": len(new),
            "final_files": len(kept) + len(self.new_files),
            "final_blobs": len(live) + len(new),
        }


def make_plan(config: dict[str, Any], seed: str) -> Plan:
    rng = random.Random(seed)
    lo, hi = math.log2(config["min_size"]), math.log2(config["max_size"])
    n = config["entries"]
    sizes: list[int] = []
    files: list[list[Any]] = []
    for i in range(n):
        rel = f"runs/r{i % 97:02d}/step{(i // 97) % 13}/f{i:05d}.bin"
        if files and rng.random() < config["shared"]:
            _, cid, size = files[rng.randrange(len(files))]
        else:
            cid, size = len(sizes), int(2 ** rng.uniform(lo, hi))
            sizes.append(size)
        files.append([rel, cid, size])
    removed = sorted(f[0] for f in rng.sample(files, round(config["removed"] * n)))
    new_files = []
    for i in range(max(1, round(config["new"] * n))):
        cid, size = len(sizes), int(2 ** rng.uniform(lo, hi))
        sizes.append(size)
        new_files.append([f"new/f{i:05d}.bin", cid, size])
    return Plan(seed, files, removed, new_files, config["inline_threshold"])


# ----------------------------------------------------------------------------------------------
# Counting the requests a step made (moto's request log)
# ----------------------------------------------------------------------------------------------


def classify(
    method: str, key: str | None, query: dict[str, list[str]], headers: Any
) -> tuple[str, str | None]:
    """(type, key or listed prefix) of one request; DeleteObjects has no key (its body names them)."""
    if method == "GET" and key is None:
        return "LIST", query.get("prefix", [""])[0]
    if method == "PUT" and key is not None and "x-amz-copy-source" in headers:
        return "COPY", key
    if method == "POST" and "delete" in query:
        return "DELETE", None
    if method in ("GET", "HEAD", "PUT", "DELETE"):
        return method, key
    return "OTHER", key


def area(target: str | None, prefix: str) -> str:
    """The part of the store a key (or listed prefix) is in: manifest, blobs, gc/q, ..."""
    if target is None:
        return "(batch)"
    rest = target.removeprefix(f"{prefix}/")
    if rest == target:
        return "other"
    if not rest:
        return "(all)"
    parts = rest.split("/")
    if parts[0] == "gc" and len(parts) > 1:
        return "gc/probe" if parts[1].startswith("probe-") else f"gc/{parts[1]}"
    return parts[0] if parts[0] in ("manifest", "blobs", "gc") else "marker"


def count(requests: list[Any], prefix: str) -> dict[str, Any]:
    kinds: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for r in requests:
        kind, target = classify(r.method, r.key, r.query, r.headers)
        kinds[kind] += 1
        areas[f"{kind} {area(target, prefix)}"] += 1
        statuses[f"{kind} {r.status}"] += 1
    return {
        "total": len(requests),
        "by_type": {k: kinds.get(k, 0) for k in (*KINDS, "OTHER") if k in KINDS or kinds.get(k)},
        "by_type_and_area": dict(sorted(areas.items())),
        "by_type_and_status": dict(sorted(statuses.items())),
    }


# ----------------------------------------------------------------------------------------------
# The harness
# ----------------------------------------------------------------------------------------------


class Harness:
    def __init__(self, args: argparse.Namespace, config: dict[str, Any], base: Path, server: Any) -> None:
        self.args = args
        self.config = config
        self.base = base
        self.server = server
        self.bucket = f"cas-bench-gc-{uuid.uuid4().hex[:8]}"
        self.prefix = "store"
        self.env = child_environ(base, base / "zenml-unused")
        (base / "tasks").mkdir()
        self.errors: list[dict[str, str]] = []
        self.steps: dict[str, dict[str, Any]] = {}
        self.setup: dict[str, float] = {}
        #: What the writers sent (not measured, but it shows what rule W costs at this gc_grace).
        self.setup_requests: dict[str, Any] = {}
        self.checks: list[dict[str, Any]] = []

    # -- children ---------------------------------------------------------------------------

    def spec(self, cache: str, **extra: Any) -> dict[str, Any]:
        return {
            "endpoint": self.server.endpoint_url,
            "access_key": self.server.access_key,
            "secret_key": self.server.secret_key,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "cache_dir": str(self.base / "caches" / cache),
            **extra,
        }

    def _task_file(self, name: str, task: dict[str, Any]) -> tuple[Path, Path]:
        path = self.base / "tasks" / f"{name}.json"
        out = self.base / "tasks" / f"{name}.out.json"
        path.write_text(json.dumps({**task, "out": str(out)}))
        return path, out

    def child(self, name: str, task: dict[str, Any]) -> dict[str, Any]:
        """Run an unmeasured task (init, write, remove, list, check) in a fresh process."""
        path, out = self._task_file(name, task)
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "bench.collection", "--child", str(path)],
                cwd=self.base,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=self.args.timeout,
                check=False,
            )
            failed, stderr = proc.returncode != 0, proc.stderr
        except subprocess.TimeoutExpired as exc:
            failed, stderr = True, f"timed out after {exc.timeout:.0f} s"
        result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
        self.setup[name] = time.perf_counter() - start
        print(f"  {name:<34} {self.setup[name]:6.1f} s", flush=True)
        if failed:
            raise RuntimeError(f"{name} failed:\n{result.get('error') or stderr[-3000:]}")
        return result

    def measured(self, name: str, task: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        """Run a task in a fresh process, counting only what it does between GO and DONE.

        The child sets up (imports, file system, the store's marker), prints READY and waits;
        the server's recording covers the task itself and nothing else.
        """
        path, out = self._task_file(name, task)
        stderr_path = self.base / "tasks" / f"{name}.stderr"
        with open(stderr_path, "w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.collection", "--child", str(path)],
                cwd=self.base,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
            watchdog = threading.Timer(self.args.timeout, proc.kill)
            watchdog.start()
            try:
                assert proc.stdin is not None and proc.stdout is not None
                ready = proc.stdout.readline().strip()
                if ready != "READY":
                    proc.wait()
                    raise RuntimeError(f"{name}: child did not get ready ({ready!r})")
                with self.server.record() as log:
                    proc.stdin.write("GO\n")
                    proc.stdin.flush()
                    done = proc.stdout.readline().strip()
                proc.stdin.close()
                code = proc.wait()
            finally:
                watchdog.cancel()
        result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
        if done != "DONE" or code != 0 or "error" in result:
            raise RuntimeError(
                f"{name} failed (exit {code}):\n{result.get('error') or stderr_path.read_text()[-3000:]}"
            )
        return result, log.requests

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> None:
        c = self.config
        from tests.support.clients import make_bucket

        make_bucket(self.server.endpoint_url, self.bucket, self.server.access_key, self.server.secret_key)
        plan = make_plan(c, seed=f"bench-gc/{c['entries']}")
        self.plan = plan
        self.expected = expected = plan.expected()
        print(
            f"store: {expected['files']:,} files ({expected['files_inline']:,} inline), "
            f"{expected['blobs_written']:,} blobs ({expected['blob_bytes_written'] / 2**20:.1f} MiB); "
            f"removing {expected['removed']:,} files leaves {expected['garbage_blobs']:,} garbage blobs "
            f"({expected['garbage_bytes']:,} bytes; {expected['removed_but_still_named']:,} blobs of removed "
            "files are still named by others)",
            flush=True,
        )
        writer = {"inline_threshold": c["inline_threshold"], "threads": c["threads"], "seed": plan.seed}
        self.child("init", {**self.spec("writer-0"), "task": "init", "gc_grace": c["gc_grace"]})
        with self.server.record() as write_log, contextlib.ExitStack() as stack:
            procs = []
            start = time.perf_counter()
            for k in range(c["writers"]):
                name = f"write-{k}"
                share = plan.files[k :: c["writers"]]
                path, out = self._task_file(
                    name, {**self.spec(f"writer-{k}"), **writer, "task": "write", "files": share}
                )
                err = stack.enter_context(open(self.base / "tasks" / f"{name}.stderr", "w+"))
                proc = subprocess.Popen(
                    [sys.executable, "-m", "bench.collection", "--child", str(path)],
                    cwd=self.base,
                    env=self.env,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
                stack.callback(_reap, proc)
                procs.append((name, out, err, proc))
            for name, out, err, proc in procs:
                if proc.wait(timeout=self.args.timeout) != 0:
                    err.seek(0)
                    result = json.loads(out.read_text()) if out.exists() else {}
                    raise RuntimeError(f"{name} failed:\n{result.get('error') or err.read()[-3000:]}")
        self.setup["write"] = time.perf_counter() - start
        self.setup_requests["write"] = count(write_log.requests, self.prefix)
        rate = expected["files"] / self.setup["write"]
        print(
            f"  {'write (' + str(c['writers']) + ' processes)':<34} {self.setup['write']:6.1f} s"
            f"  ({rate:.0f} files/s)",
            flush=True,
        )
        self.child("remove", {**self.spec("writer-0"), "task": "remove", "rels": plan.removed})
        written_at = time.time()

        listing = self.reference("list", "reference: LIST every key of the store")
        grace = c["gc_grace"]
        self.wait_until(written_at + grace + SLACK, "blobs older than gc_grace")
        for key, label, cache, dry in STEPS:
            if key == "phase2":
                self.wait_until(self.steps["phase1"]["ended_at"] + grace + SLACK, "the grace period")
            if key == "new":
                self.child(
                    "write-new", {**self.spec("writer-0"), **writer, "task": "write", "files": plan.new_files}
                )
            self.collect(key, label, cache, dry)
        self.steps["list"] = listing
        self.check()

    def wait_until(self, when: float, what: str) -> None:
        left = when - time.time()
        if left > 0:
            print(f"  waiting {left:.1f} s for {what}", flush=True)
            time.sleep(left)

    def reference(self, key: str, label: str) -> dict[str, Any]:
        result, requests = self.measured(key, {**self.spec("reference"), "task": "list"})
        row = {
            "label": label,
            "seconds": result["seconds"],
            "requests": count(requests, self.prefix),
            "keys": result["keys"],
        }
        print(
            f"  {label:<34} {row['seconds']:6.2f} s  {_types(row['requests'])}  ({row['keys']:,} keys)",
            flush=True,
        )
        return row

    def collect(self, key: str, label: str, cache: str, dry_run: bool) -> None:
        result, requests = self.measured(key, {**self.spec(cache), "task": "collect", "dry_run": dry_run})
        result.update(label=label, cache=cache, requests=count(requests, self.prefix), ended_at=time.time())
        result["segments"] = segments(result)
        self.steps[key] = result
        r = result["report"]
        print(
            f"  {label:<34} {result['seconds']:6.2f} s  {_types(result['requests'])}  "
            f"candidates {r['candidates']}, quarantined {r['quarantined_blobs']}, "
            f"freed {r['freed_blobs']} ({r['freed_bytes']:,} bytes)",
            flush=True,
        )

    # -- checks -------------------------------------------------------------------------------

    def expect(self, what: str, measured: Any, expected: Any) -> None:
        ok = measured == expected
        self.checks.append({"check": what, "measured": measured, "expected": expected, "ok": ok})
        if not ok:
            self.errors.append(
                {"where": "check", "error": f"{what}: measured {measured!r}, expected {expected!r}"}
            )

    def check(self) -> None:
        e, s = self.expected, self.steps
        dry, p1, p2 = s["dry"]["report"], s["phase1"]["report"], s["phase2"]["report"]
        steady, new = s["steady"]["report"], s["new"]["report"]
        for what, measured, expected in [
            (
                "dry run: candidate bytes = bytes only removed files named",
                dry["candidate_bytes"],
                e["garbage_bytes"],
            ),
            ("dry run: candidates = blobs only removed files named", dry["candidates"], e["garbage_blobs"]),
            ("dry run: nothing written or deleted", _writes(s["dry"]), 0),
            ("phase 1: quarantined bytes", p1["quarantined_bytes"], e["garbage_bytes"]),
            (
                "phase 1: blobs copied to quarantine",
                s["phase1"]["requests"]["by_type_and_area"].get("COPY gc/q", 0),
                e["garbage_blobs"],
            ),
            ("phase 2: freed bytes = bytes only removed files named", p2["freed_bytes"], e["garbage_bytes"]),
            ("phase 2: freed blobs", p2["freed_blobs"], e["garbage_blobs"]),
            ("phase 2: restored (no file was written meanwhile)", p2["restored_blobs"], 0),
            ("phase 2: entry GETs (nothing changed since phase 1)", _gets(s["phase2"], "manifest"), 0),
            ("steady state: entry GETs (the mirror answers)", _gets(s["steady"], "manifest"), 0),
            (
                "steady state: nothing quarantined or freed",
                (steady["candidates"], steady["freed_blobs"]),
                (0, 0),
            ),
            ("after new files: entry GETs = new files", _gets(s["new"], "manifest"), e["new_files"]),
            (
                "after new files: nothing quarantined (new blobs are younger than gc_grace)",
                new["candidates"],
                0,
            ),
        ]:
            self.expect(what, measured, expected)
        verify = self.child("verify", {**self.spec("collector"), "task": "verify"})
        self.expect("verify: every remaining file's blobs are present", verify["ok"], True)
        self.expect("verify: files", verify["entries"], e["final_files"])
        self.expect("verify: distinct blobs named", verify["blobs"], e["final_blobs"])
        keys = self.list_keys()
        self.expect("bucket: blobs left = blobs remaining files name", keys.get("blobs", 0), e["final_blobs"])
        self.expect("bucket: nothing left under gc/ (quarantine, runs, lease)", keys.get("gc", 0), 0)
        for c in self.checks:
            print(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']}: {c['measured']}", flush=True)

    def list_keys(self) -> dict[str, int]:
        from tests.support.clients import boto3_client

        client = boto3_client(self.server)
        found: Counter[str] = Counter()
        try:
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/"
            ):
                for o in page.get("Contents", []):
                    found[o["Key"][len(self.prefix) + 1 :].split("/")[0]] += 1
        finally:
            client.close()
        return dict(found)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Stop a writer this harness started, if it is still running (after a failure)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _types(requests: dict[str, Any]) -> str:
    return " ".join(f"{k} {v}" for k, v in requests["by_type"].items() if v) or "no requests"


def _gets(step: dict[str, Any], part: str) -> int:
    return int(step["requests"]["by_type_and_area"].get(f"GET {part}", 0))


def _writes(step: dict[str, Any]) -> int:
    by = step["requests"]["by_type"]
    return int(by.get("PUT", 0) + by.get("COPY", 0) + by.get("DELETE", 0))


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def per_10k(value: float, entries: int) -> float:
    return value * 10_000 / entries


def markdown(
    meta: dict[str, Any],
    config: dict[str, Any],
    expected: dict[str, Any],
    steps: dict[str, dict[str, Any]],
    checks: list[dict[str, Any]],
) -> str:
    n = config["entries"]
    e = expected
    lines = [
        f"Collector benchmark {meta['started']}, cas_store {meta['commit']} ({meta['mode']} mode, "
        f"{meta['endpoint_kind']}; {meta['machine']['cpus']} CPUs; load average before the run "
        f"{meta['load_average']['start'][0]:.2f}, after {meta['load_average']['end'][0]:.2f}).",
        "",
        f"Store: gc_grace {config['gc_grace']:g} s; {e['files']:,} files of "
        f"{config['min_size'] // KiB}-{config['max_size'] // KiB} KiB (log-uniform), "
        f"{e['files_inline']:,} of them inline (<= {config['inline_threshold'] // KiB} KiB), "
        f"{e['distinct_contents']:,} distinct contents, {e['blobs_written']:,} blobs "
        f"({e['blob_bytes_written'] / 2**20:.1f} MiB); {e['removed']:,} files removed, leaving "
        f"{e['live_files']:,} files, {e['live_blobs']:,} live blobs and {e['garbage_blobs']:,} garbage "
        f"blobs ({e['garbage_bytes']:,} bytes); {e['removed_but_still_named']:,} blobs of removed files "
        f"are still named by kept ones. Before the last run {e['new_files']:,} new files were written.",
        "",
        "Requests as the server counted them; DELETE = DeleteObjects requests (up to 1,000 keys "
        "each); time = `collect()` alone, in a fresh process per invocation.",
        "",
        "| invocation | " + " | ".join(KINDS) + " | total | time (s) | did |",
        "|---|" + "---:|" * (len(KINDS) + 2) + "---|",
    ]
    order = ["list", *[k for k, *_ in STEPS]]
    for key in order:
        st = steps.get(key)
        if st is None:
            continue
        by = st["requests"]["by_type"]
        cells = [str(by.get(k, 0)) for k in KINDS]
        did = _did(st) if key != "list" else f"{st['keys']:,} keys listed"
        lines.append(
            f"| {st['label']} | "
            + " | ".join(cells)
            + f" | {st['requests']['total']} | {st['seconds']:.2f} | {did} |"
        )
    lines += [
        "",
        "Where the time went (s; from the collector's progress hooks):",
        "",
        "| invocation | " + " | ".join(SEGMENTS) + " | total |",
        "|---|" + "---:|" * (len(SEGMENTS) + 1),
    ]
    for key, *_ in STEPS:
        if key in steps:
            seg = steps[key].get("segments", {})
            cells = [f"{seg[k]:.2f}" if k in seg else "" for k in SEGMENTS]
            lines.append(
                f"| {steps[key]['label']} | " + " | ".join(cells) + f" | {steps[key]['seconds']:.2f} |"
            )
    if n != 10_000:
        lines += [
            "",
            f"Per 10,000 files written (x {10_000 / n:g}; fixed costs scale too, so these overstate them):",
            "",
            "| invocation | " + " | ".join(KINDS) + " | total | time (s) |",
            "|---|" + "---:|" * (len(KINDS) + 2),
        ]
        for key in order:
            st = steps.get(key)
            if st is None:
                continue
            by = st["requests"]["by_type"]
            cells = [f"{per_10k(by.get(k, 0), n):.0f}" for k in KINDS]
            lines.append(
                f"| {st['label']} | "
                + " | ".join(cells)
                + f" | {per_10k(st['requests']['total'], n):.0f} | {per_10k(st['seconds'], n):.2f} |"
            )
    if "list" in steps and "steady" in steps and steps["list"]["seconds"] > 0:
        lines += [
            "",
            "Time against the reference (listing every key once) in the same run: "
            + ", ".join(
                f"{steps[k]['label']} {steps[k]['seconds'] / steps['list']['seconds']:.1f}x"
                for k, *_ in STEPS
                if k in steps
            )
            + ".",
        ]
    lines += ["", "| check | measured | expected | |", "|---|---|---|---|"]
    for c in checks:
        lines.append(
            f"| {c['check']} | {c['measured']} | {c['expected']} | {'ok' if c['ok'] else '**FAIL**'} |"
        )
    return "\n".join(lines) + "\n"


SEGMENTS = ("start", "phase 2", "list blobs", "mark", "move", "end")


def segments(step: dict[str, Any]) -> dict[str, float]:
    """Where an invocation's time went, from the collector's hook (its steps) and progress calls.

    start: lease, server self-test, the gc/ listings; phase 2: a due run's phase 2 (its mark,
    restores, purge); list blobs; mark: the manifest listing and the entries read; move: the
    copies to quarantine and the deletions; end: the final quarantine listing and the lease.
    A dry run has no hook: its "list blobs" includes the start.
    """
    total = float(step["seconds"])
    hooks: dict[str, list[float]] = {}
    for name, at in step.get("hook_steps") or []:
        hooks.setdefault(name, []).append(float(at))
    if not hooks:
        listed = float(step.get("progress_phases", {}).get("listing blobs", [total])[0])
        return {"list blobs": listed, "mark": total - listed}
    first = min(v[0] for v in hooks.values())
    started, listed, marked = hooks["p1:started"][-1], hooks["p1:listed"][-1], hooks["p1:marked"][-1]
    moved = hooks.get("p1:quarantined", [marked])[-1]
    last = max(v[-1] for v in hooks.values())
    out = {"start": first}
    if "p2:due" in hooks:
        out["phase 2"] = started - hooks["p2:due"][0]
    out.update({"list blobs": listed - started, "mark": marked - listed, "move": moved - marked})
    out["end"] = total - last
    return out


def _did(step: dict[str, Any]) -> str:
    r = step["report"]
    parts = []
    if r["dry_run"]:
        parts.append(f"would quarantine {r['candidates']:,} blobs ({r['candidate_bytes']:,} bytes)")
    else:
        if r["quarantined_blobs"]:
            parts.append(f"quarantined {r['quarantined_blobs']:,} blobs")
        if r["freed_blobs"]:
            parts.append(f"freed {r['freed_blobs']:,} blobs ({r['freed_bytes']:,} bytes)")
        if r["restored_blobs"]:
            parts.append(f"restored {r['restored_blobs']:,}")
    gets = _gets(step, "manifest")
    parts.append(f"{gets:,} entry GETs")
    return "; ".join(parts) if parts else "nothing"


# ----------------------------------------------------------------------------------------------
# Child processes
# ----------------------------------------------------------------------------------------------


def _filesystem(spec: dict[str, Any], **options: Any) -> Any:
    from cas_store.filesystem import CASFileSystem

    return CASFileSystem(
        root=f"s3cas://{spec['bucket']}/{spec['prefix']}",
        key=spec["access_key"],
        secret=spec["secret_key"],
        client_kwargs={"endpoint_url": spec["endpoint"]},
        cache_dir=spec["cache_dir"],
        skip_instance_cache=True,
        **options,
    )


def child(task_path: str) -> int:
    spec = json.loads(Path(task_path).read_text())
    out = Path(spec["out"])
    result: dict[str, Any] = {}
    try:
        task = spec["task"]
        if task == "write":
            fs = _filesystem(spec, inline_threshold=spec["inline_threshold"])
        elif task == "list":
            fs = None
        else:
            fs = _filesystem(spec)
        if task == "init":
            from cas_store.maintenance import init_store

            result = init_store(fs.store(), spec["gc_grace"]).to_dict()
        elif task == "write":
            import concurrent.futures

            root = f"{spec['bucket']}/{spec['prefix']}"

            def write(item: list[Any]) -> None:
                rel, cid, size = item
                fs.pipe_file(f"{root}/{rel}", small_payload(spec["seed"], cid, size))

            with concurrent.futures.ThreadPoolExecutor(spec["threads"]) as pool:
                list(pool.map(write, spec["files"]))
        elif task == "remove":
            fs.store().remove(spec["rels"])
        elif task == "verify":
            from cas_store.maintenance import verify

            report = verify(fs.store())
            result = {
                "ok": report.ok,
                "entries": report.entries,
                "blobs": report.blobs,
                "missing": len(report.missing),
            }
        elif task == "list":
            result = _measured_listing(spec)
        elif task == "collect":
            result = _measured_collect(spec, fs)
        else:
            raise ValueError(f"unknown task {task!r}")
        if fs is not None:
            fs.s3.close()
            fs.cache.close()
    except BaseException:
        result["error"] = traceback.format_exc()
        out.write_text(json.dumps(result, default=str))
        print(result["error"], file=sys.stderr)
        return 1
    out.write_text(json.dumps(result, default=str))
    return 0


def _handshake() -> None:
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "GO":
        raise RuntimeError("the harness did not say GO")


def _measured_collect(spec: dict[str, Any], fs: Any) -> dict[str, Any]:
    from cas_store.maintenance import collect

    store = fs.store()
    assert store.marker() is not None  # loaded before the count starts, as the CLI's open would
    steps: list[tuple[str, float]] = []
    phases: dict[str, list[float]] = {}
    t0 = 0.0

    def hook(step: str, run: str) -> None:
        steps.append((step, time.perf_counter() - t0))

    def progress(phase: str, done: int, total: int | None) -> None:
        at = time.perf_counter() - t0
        phases.setdefault(phase, [at, at])[1] = at

    _handshake()
    t0 = time.perf_counter()
    report = collect(store, dry_run=spec["dry_run"], hook=hook, progress=progress)
    seconds = time.perf_counter() - t0
    print("DONE", flush=True)
    return {"seconds": seconds, "report": report.to_dict(), "hook_steps": steps, "progress_phases": phases}


def _measured_listing(spec: dict[str, Any]) -> dict[str, Any]:
    from tests.support.clients import _client

    client = _client(spec["endpoint"], spec["access_key"], spec["secret_key"], None)
    client.list_objects_v2(Bucket=spec["bucket"], Prefix=f"{spec['prefix']}/", MaxKeys=1)  # connection up
    _handshake()
    t0 = time.perf_counter()
    keys = 0
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=spec["bucket"], Prefix=f"{spec['prefix']}/"
    ):
        keys += len(page.get("Contents", []))
    seconds = time.perf_counter() - t0
    print("DONE", flush=True)
    client.close()
    return {"seconds": seconds, "keys": keys}


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench gc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 files instead of 10,000 (about a minute)")
    parser.add_argument("--entries", type=int, help="files to write (default 10,000; 1,000 with --quick)")
    parser.add_argument("--removed", type=float, help="share of the files removed before collecting (0.3)")
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results", help="default: bench/results/"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds per child process (default 1800)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (debugging)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.entries is not None and args.entries < 10:
        parser.error("--entries: at least 10")
    if args.removed is not None and not 0 < args.removed < 1:
        parser.error("--removed: a share between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args.child)
    from bench.suite import _git_commit, _versions
    from tests.support.moto import MotoServer

    config = dict(QUICK if args.quick else FULL)
    if args.entries is not None:
        config["entries"] = args.entries
    if args.removed is not None:
        config["removed"] = args.removed
    mode = "quick" if args.quick else "full"
    started = dt.datetime.now().astimezone()
    load_before = os.getloadavg()
    commit = _git_commit()
    if load_before[0] > 0.5:
        print(f"note: load average {load_before[0]:.2f} at start: other work on this machine skews timings")
    base = Path(tempfile.mkdtemp(prefix="cas-bench-gc-"))
    print(
        f"collector benchmark, {mode} mode, {config['entries']:,} files; temporary files in {base}",
        flush=True,
    )
    t0 = time.perf_counter()
    server = MotoServer()
    server.start()
    harness = Harness(args, config, base, server)
    try:
        harness.run()
    except Exception as exc:
        harness.errors.append({"where": "run", "error": "".join(traceback.format_exception(exc))})
        print(harness.errors[-1]["error"], file=sys.stderr)
    finally:
        server.stop()
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "mode": mode,
        "endpoint_kind": "moto (in the harness process, 127.0.0.1)",
        "elapsed_s": time.perf_counter() - t0,
        "load_average": {"start": load_before, "end": os.getloadavg()},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "versions": _versions(),
        "commit": commit,
        "commit_at_end": _git_commit(),
        "request_counting": "server: moto's request log (tests.support.requests), between the child's "
        "READY (imports, file system and marker loaded) and DONE",
    }
    expected = getattr(harness, "expected", {})
    table = markdown(meta, config, expected, harness.steps, harness.checks) if expected else ""
    if meta["commit_at_end"] != commit:
        table = f"warning: cas_store changed during the run ({commit} -> {meta['commit_at_end']})\n\n" + table
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"gc-{mode}"
    stem.with_suffix(".json").write_text(
        json.dumps(
            {
                "meta": meta,
                "config": config,
                "expected": expected,
                "steps": harness.steps,
                "setup_seconds": harness.setup,
                "setup_requests": harness.setup_requests,
                "checks": harness.checks,
                "errors": harness.errors,
            },
            indent=1,
            default=str,
        )
    )
    stem.with_suffix(".md").write_text(table)
    print()
    print(table)
    if harness.errors:
        print(
            f"{len(harness.errors)} error(s): "
            + "; ".join(e["error"].splitlines()[0] for e in harness.errors)
        )
    print(f"wrote {stem}.json, .md; {meta['elapsed_s']:.0f} s in all")
    return 1 if harness.errors else 0


if __name__ == "__main__":
    sys.exit(main())
