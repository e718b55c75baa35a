"""The benchmark suite: cas_store against its peers, in one run, on one S3 endpoint.

    python -m bench [--quick] [--repeat N] [--out DIR]
                    [--endpoint URL --access-key K --secret-key S [--bucket B]]

See bench/README.md. Every measurement that depends on process state runs in a fresh
child process (``bench.worker``, ``bench.pipeline_app``) with fresh temporary cache
directories; the S3 server (moto, in this process, on 127.0.0.1) only serves. Everything
created (temporary directories, bucket objects, the bucket, the server) is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import report
from bench.common import PEERS, REPO, GiB, MiB, child_environ, range_length, write_random_file

FULL = {
    "large_size": 256 * MiB,
    "small_n": 1000,
    "small_size": 4 * 1024,
    "mem_sizes": [256 * MiB, 1 * GiB],
    "chunk": 8 * MiB,
    "mem_write_chunk": 16 * MiB,
    "warm_iters": 5,
    "embedding_mib": 64,
    # S2-S4 at the sizes of their goals in both modes (at 256 MiB, 10 edits of ~2 MiB chunks
    # are 4 times the share); ZenML's S3 flavor (a full copy: 100%) in full mode only.
    "versions_size": 1 * GiB,
    "csv_size": 256 * MiB,
    "version_peers": ["cas", "s3"],
    "repeat": 3,
}
QUICK = {
    **FULL,
    "large_size": 64 * MiB,
    "small_n": 200,
    "mem_sizes": [64 * MiB, 256 * MiB],
    "embedding_mib": 16,
    "version_peers": ["cas"],
    "repeat": 1,
}
GROUPS = ("files", "memory", "versions", "pipeline")


@dataclasses.dataclass(frozen=True)
class Endpoint:
    endpoint_url: str
    access_key: str
    secret_key: str


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 repetition, 64 MiB file, 200 small files, 256 MiB memory test, S2-S4 for "
        "cas_store only (< 3 min)",
    )
    parser.add_argument("--endpoint", help="an S3-compatible endpoint instead of the built-in moto server")
    parser.add_argument("--access-key", help="access key for --endpoint")
    parser.add_argument("--secret-key", help="secret key for --endpoint")
    parser.add_argument("--bucket", help="existing bucket to use (default: a new bucket, deleted at the end)")
    parser.add_argument("--repeat", type=int, help="repetitions (default: 3; 1 with --quick)")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "results",
        help="output directory (default: bench/results/)",
    )
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated subset of {', '.join(GROUPS)} (default: all)",
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds per child process (default: 1800)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (debugging)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample cas_store's child processes with py-spy (all threads); folded stacks and a "
        "summary go to OUT/profiles/ (timings then include the sampling overhead)",
    )
    args = parser.parse_args(argv)
    if args.endpoint and not (args.access_key and args.secret_key):
        parser.error("--endpoint needs --access-key and --secret-key")
    unknown = set(args.only.split(",")) - set(GROUPS)
    if unknown:
        parser.error(f"--only: unknown group(s) {', '.join(sorted(unknown))}")
    return args


class Suite:
    def __init__(
        self,
        args: argparse.Namespace,
        config: dict[str, Any],
        endpoint: Endpoint,
        bucket: str,
        base: Path,
        server: Any,
    ) -> None:
        self.args = args
        self.config = config
        self.endpoint = endpoint
        self.bucket = bucket
        self.base = base
        self.server = server
        self.repeat = config["repeat"]
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.workdir = base / "work"
        self.workdir.mkdir()
        (base / "tasks").mkdir()
        self.env = child_environ(base, base / "zenml-workers")
        self.raw: dict[str, dict[str, list[float | None]]] = {}
        self.info: dict[str, Any] = {}
        self.errors: list[dict[str, str]] = []
        self.sources: dict[int, tuple[str, str]] = {}

    # -- bookkeeping ----------------------------------------------------------------------

    def put(self, metric: str, peer: str, rep: int, value: float | None) -> None:
        self.raw.setdefault(metric, {}).setdefault(peer, [None] * self.repeat)[rep] = value

    def error(self, where: str, message: str) -> None:
        print(f"    ERROR in {where}:\n      " + message.strip().replace("\n", "\n      "), flush=True)
        self.errors.append({"where": where, "error": message})

    def source(self, size: int) -> tuple[str, str]:
        """A file of ``size`` random bytes (written once, in chunks): (path, xxh3-128 digest)."""
        if size not in self.sources:
            path = self.base / f"source-{size}.bin"
            digest = write_random_file(path, size, seed=f"{self.prefix}/{size}")
            self.sources[size] = (str(path), digest)
        return self.sources[size]

    def spec(self, peer: str, rep: int, prefix: str, cache: str) -> dict[str, Any]:
        cache_dir = self.base / "caches" / f"r{rep}-{peer}-{cache}"
        return {
            "peer": peer,
            "endpoint": self.endpoint.endpoint_url,
            "access_key": self.endpoint.access_key,
            "secret_key": self.endpoint.secret_key,
            "bucket": self.bucket,
            "prefix": f"{self.prefix}/r{rep}/{peer}/{prefix}",
            "cache_dir": str(cache_dir),
            "local_root": str(self.base / "local" / f"r{rep}" / prefix),
            "chunk": self.config["chunk"],
        }

    def child(self, name: str, task: dict[str, Any]) -> dict[str, Any]:
        """Run ``bench.worker`` on ``task`` in a fresh process; its (possibly partial) result."""
        path = self.base / "tasks" / f"{name}.json"
        out = self.base / "tasks" / f"{name}.out.json"
        path.write_text(json.dumps({**task, "out": str(out)}))
        command = [sys.executable, "-m", "bench.worker", str(path)]
        folded = None
        if self.args.profile and task["peer"] == "cas":
            folded = self.args.out / "profiles" / f"{name}.folded"
            folded.parent.mkdir(parents=True, exist_ok=True)
            command = [_py_spy(), "record", "--rate", "200", "--format", "raw", "--output", str(folded),
                       "--nonblocking", "--", *command]  # fmt: skip
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                command,
                cwd=self.workdir,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=self.args.timeout,
                check=False,
            )
            failed = proc.returncode != 0
            stderr = proc.stderr
        except subprocess.TimeoutExpired as exc:
            failed, stderr = True, f"timed out after {exc.timeout:.0f} s"
        result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"metrics": {}, "info": {}}
        shown = ", ".join(f"{k}={_show(k, v)}" for k, v in result.get("metrics", {}).items())
        print(f"  {name:<28} {time.perf_counter() - start:6.1f} s  {shown}", flush=True)
        if failed:
            self.error(name, result.get("error") or stderr[-3000:])
        if folded is not None and folded.exists():
            folded.with_suffix(".txt").write_text(profile_summary(folded.read_text()))
        if "cache_dir" in task:
            shutil.rmtree(task["cache_dir"], ignore_errors=True)
        return result

    # -- workloads ------------------------------------------------------------------------

    def files(self, rep: int, order: list[str]) -> None:
        c = self.config
        src, digest = self.source(c["large_size"])
        common = {
            "large_src": src,
            "large_size": c["large_size"],
            "large_digest": digest,
            "small_n": c["small_n"],
            "small_size": c["small_size"],
            "small_seed": f"{self.prefix}/small",
            "warm_iters": c["warm_iters"],
        }
        for task in ("writer", "reader", "lister"):
            for peer in order:
                result = self.child(
                    f"r{rep}-{task}-{peer}", {**self.spec(peer, rep, "files", task), **common, "task": task}
                )
                for metric, value in result.get("metrics", {}).items():
                    self.put(metric, peer, rep, value)
                if result.get("info"):
                    self.info.setdefault(f"r{rep}-{task}-{peer}", result["info"])

    def memory(self, rep: int, order: list[str]) -> None:
        for size in self.config["mem_sizes"]:
            src, digest = self.source(size)
            for peer in order:
                for task in ("mem_write", "mem_read"):
                    spec = self.spec(peer, rep, f"mem{size}", task)
                    if task == "mem_write":
                        spec["chunk"] = self.config["mem_write_chunk"]
                    result = self.child(
                        f"r{rep}-{task}-{size // MiB}M-{peer}",
                        {**spec, "task": task, "src": src, "digest": digest, "size": size},
                    )
                    value = result.get("metrics", {}).get("hwm_growth")
                    self.put(f"mem.{task.split('_')[1]}.{size}", peer, rep, value)
                    self.info[f"r{rep}-{task}-{size}-{peer}"] = result.get("info")
                shutil.rmtree(spec["local_root"], ignore_errors=True)

    def pipeline(self) -> None:
        c = self.config
        base = self.base / "pipeline"
        workdir = base / "work"
        workdir.mkdir(parents=True)
        app = workdir / "pipeline_app.py"
        shutil.copy(REPO / "bench" / "pipeline_app.py", app)
        env = child_environ(self.base, base / "zenml-config")
        stacks = []
        for rep in range(self.repeat):
            for flavor, peer in (("s3cas", "cas"), ("s3", "s3")):
                stacks.append(
                    {
                        "name": f"bench-{peer}-r{rep}",
                        "flavor": flavor,
                        "peer": peer,
                        "rep": rep,
                        "path": f"{flavor}://{self.bucket}/{self.prefix}/pipeline-r{rep}-{peer}",
                        "cache_dir": str(base / f"cache-r{rep}"),
                    }
                )
        config = {
            "endpoint": self.endpoint.endpoint_url,
            "access_key": self.endpoint.access_key,
            "secret_key": self.endpoint.secret_key,
            "bucket": self.bucket,
            "embedding_mib": c["embedding_mib"],
            "stacks": stacks,
        }
        config_path = base / "config.json"
        config_path.write_text(json.dumps(config))

        def run(name: str, *args: str) -> subprocess.CompletedProcess[str] | None:
            start = time.perf_counter()
            try:
                proc = subprocess.run(
                    [sys.executable, str(app), *args],
                    cwd=workdir,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=self.args.timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                self.error(name, f"timed out after {exc.timeout:.0f} s")
                return None
            print(f"  {name:<28} {time.perf_counter() - start:6.1f} s", flush=True)
            if proc.returncode != 0:
                self.error(name, (proc.stdout + proc.stderr)[-3000:])
                return None
            return proc

        if run("pipeline-setup", "setup", str(config_path)) is None:
            return
        for rep in range(self.repeat):
            reps = [s for s in stacks if s["rep"] == rep]
            for stack in reps if rep % 2 == 0 else reversed(reps):
                peer = stack["peer"]
                for phase in ("run1", "rerun"):
                    name = f"r{rep}-pipeline-{phase}-{peer}"
                    out = base / f"{name}.json"
                    with self.recording() as log:
                        proc = run(name, "run", str(config_path), stack["name"], str(out))
                    if proc is None or not out.exists():
                        continue
                    record = json.loads(out.read_text())
                    if record["status"] != "completed":
                        self.error(name, f"pipeline run status {record['status']}")
                        continue
                    self.put(f"pipe.{phase}.seconds", peer, rep, record["seconds"])
                    self.put(f"pipe.{phase}.requests", peer, rep, record["requests"])
                    if phase == "rerun":
                        self.put("pipe.rerun.upload_bytes", peer, rep, record["upload_bytes"])
                        if peer == "cas":
                            self.put("pipe.rerun.blob_upload_bytes", peer, rep, record["blob_upload_bytes"])
                    server: dict[str, Any] = {}
                    if log is not None:
                        server = self.server_counts(log, stack["path"].split("://", 1)[1].split("/", 1)[1])
                        self.put(f"pipe.{phase}.requests_server", peer, rep, server["requests"])
                    print(
                        f"    {record['seconds']:.1f} s, {record['requests']} requests (client)"
                        + (f", {server['requests']} (moto log)" if server else "")
                        + f", {record['upload_bytes'] / MiB:.1f} MiB uploaded"
                        + (f", {record['blob_upload_bytes']} blob bytes" if peer == "cas" else ""),
                        flush=True,
                    )
                    self.info[name] = {**record, "server": server}

    def versions(self, rep: int, order: list[str]) -> None:
        """S2, S2b, S3 (what a second version adds to the bucket) and S4 (what 1 MiB read at an
        offset of an uncached file fetches), once per run: the bytes do not vary."""
        c = self.config
        size = c["versions_size"]
        offset = size // 2 + 12345  # the middle, not a multiple of any chunk size
        for peer in [p for p in order if p in c["version_peers"]]:
            common = {"size": size, "csv_size": c["csv_size"], "offset": offset}
            writer = self.child(
                f"r{rep}-versions-{peer}",
                {**self.spec(peer, rep, "versions", "writer"), **common, "task": "versions"},
            )
            for metric, value in writer.get("metrics", {}).items():
                self.put(metric, peer, rep, value)
            self.info[f"r{rep}-versions-{peer}"] = writer.get("info")
            digest = writer.get("info", {}).get("s4_digest")
            if digest is None:
                continue
            spec = self.spec(peer, rep, "versions", "reader")
            with self.recording() as log:
                reader = self.child(
                    f"r{rep}-versions_read-{peer}",
                    {**spec, "task": "versions_read", "offset": offset, "digest": digest},
                )
            metrics = reader.get("metrics", {})
            for metric, value in metrics.items():
                self.put(metric, peer, rep, value)
            info = reader.get("info") or {}
            if log is not None and metrics:
                data = spec["prefix"] + ("/blobs/" if peer == "cas" else "/versions/")
                gets = log.filter("GET", bucket=self.bucket, key_prefix=data)
                ranges = [range_length(r.range) for r in gets]
                fetched = [n for n in ranges if n is not None]
                server = {
                    "gets": len(gets),
                    "range_bytes": sum(fetched) if len(fetched) == len(ranges) else None,
                }
                self.put("ver.s4.gets_server", peer, rep, server["gets"])
                info["server"] = server
                print(f"    moto log: {server['gets']} GETs, {server['range_bytes']} bytes in their ranges")
            self.info[f"r{rep}-versions_read-{peer}"] = info

    @contextlib.contextmanager
    def recording(self) -> Iterator[Any]:
        if self.server is None:
            yield None
            return
        with self.server.record() as log:
            yield log

    def server_counts(self, log: Any, prefix: str) -> dict[str, Any]:
        requests = log.requests
        uploads = [r for r in requests if r.method in ("PUT", "POST")]
        blobs = [r for r in uploads if r.key and r.key.startswith(f"{prefix}/blobs/")]
        return {
            "requests": len(requests),
            "upload_bytes": sum(r.content_length or 0 for r in uploads),
            "blob_upload_bytes": sum(r.content_length or 0 for r in blobs),
        }

    # -- cleanup ------------------------------------------------------------------------

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` in the bucket; returns how many."""
        from tests.support.clients import boto3_client

        client = boto3_client(self.endpoint)
        deleted = 0
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                    deleted += len(keys)
        finally:
            client.close()
        return deleted


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy: pip install py-spy (or the 'bench' extra)")
    return found


def profile_summary(folded: str, top: int = 40) -> str:
    """Self and inclusive sample counts per function from py-spy's folded stacks."""
    self_count: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";")]
        self_count[frames[-1]] = self_count.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    lines = [f"{total} samples (py-spy, all threads, idle excluded)", "", "self time:"]
    for frame, n in sorted(self_count.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * n / max(total, 1):5.1f}%  {frame}")
    lines += ["", "inclusive time (functions in cas_store, s3fs, aiobotocore, botocore, diskcache, fsspec):"]
    ours = ("cas_store/", "s3fs/", "aiobotocore/", "botocore/", "diskcache/", "fsspec/", "bench/")
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1]):
        if any(o in frame for o in ours) and len(lines) < 2 * top + 6:
            lines.append(f"  {100 * n / max(total, 1):5.1f}%  {frame}")
    return "\n".join(lines) + "\n"


def _frame(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (module path without line)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", f"{REPO}/", "/lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name


def _show(key: str, value: Any) -> str:
    if key.startswith("hwm") or key == "ver.s4.fetched":
        return f"{value / MiB:.1f}MiB"
    if key.endswith(".added"):
        return f"{value:.2%}"
    if key.startswith("ver."):
        return str(value)
    return f"{value:.3f}s" if isinstance(value, float) else str(value)


def _versions() -> dict[str, str]:
    out = {}
    for name in (
        "cas_store",
        "zenml",
        "s3fs",
        "fsspec",
        "aiobotocore",
        "boto3",
        "moto",
        "diskcache",
        "xxhash",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def _git_commit() -> str | None:
    """``<HEAD>`` of the source, ``+dirty:<hash of cas_store/*.py>`` if cas_store has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "cas_store"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except OSError:
        head, dirty = "", ""
    if dirty or not head:
        import xxhash

        digest = xxhash.xxh3_64()
        for path in sorted((REPO / "cas_store").rglob("*.py")):
            digest.update(path.read_bytes())
        return f"{head or 'unknown'}+dirty:{digest.hexdigest()[:8]}"
    return head


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = dict(QUICK if args.quick else FULL)
    if args.repeat is not None:
        config["repeat"] = max(1, args.repeat)
    groups = args.only.split(",")
    started = dt.datetime.now().astimezone()
    load_before = os.getloadavg()
    commit_before = _git_commit()
    if load_before[0] > 0.5:
        print(f"note: load average {load_before[0]:.2f} at start: other work on this machine skews timings")
    t0 = time.perf_counter()
    from tests.support.clients import make_bucket
    from tests.support.moto import MotoServer

    base = Path(tempfile.mkdtemp(prefix="cas-bench-"))
    server = None
    own_bucket = args.bucket is None
    suite: Suite | None = None
    try:
        if args.endpoint:
            endpoint = Endpoint(args.endpoint.rstrip("/"), args.access_key, args.secret_key)
            kind = f"S3 endpoint {endpoint.endpoint_url}"
        else:
            server = MotoServer()
            server.start()
            endpoint = Endpoint(server.endpoint_url, server.access_key, server.secret_key)
            kind = "moto (in the harness process, 127.0.0.1)"
        bucket = args.bucket or f"cas-bench-{uuid.uuid4().hex[:10]}"
        config["server_counts"] = server is not None
        print(
            f"cas_store benchmark, {'quick' if args.quick else 'full'} mode, "
            f"{config['repeat']} repetition(s), "
            f"on {kind}, bucket {bucket}; temporary files in {base}",
            flush=True,
        )
        make_bucket(
            endpoint.endpoint_url, bucket, endpoint.access_key, endpoint.secret_key, exist_ok=not own_bucket
        )
        suite = Suite(args, config, endpoint, bucket, base, server)
        try:
            for rep in range(config["repeat"]):
                order = list(PEERS[rep % len(PEERS) :] + PEERS[: rep % len(PEERS)])  # rotate who goes first
                print(f"repetition {rep + 1}/{config['repeat']} (order: {', '.join(order)})", flush=True)
                if "files" in groups:
                    suite.files(rep, order)
                if "memory" in groups:
                    suite.memory(rep, order)
                if "versions" in groups and rep == 0:
                    suite.versions(rep, order)
                suite.delete_prefix(f"{suite.prefix}/r{rep}/")  # bounds the server's memory and disk
                shutil.rmtree(base / "local" / f"r{rep}", ignore_errors=True)
            if "pipeline" in groups:
                print("ZenML pipeline (s3cas vs s3 flavor)", flush=True)
                suite.pipeline()
        finally:
            with contextlib.suppress(Exception):
                suite.delete_prefix(f"{suite.prefix}/")
            if own_bucket:
                from tests.support.clients import boto3_client

                client = boto3_client(endpoint)
                with contextlib.suppress(Exception):
                    client.delete_bucket(Bucket=bucket)
                client.close()
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    elapsed = time.perf_counter() - t0
    mode = "quick" if args.quick else "full"
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "mode": mode,
        "repeat": config["repeat"],
        "groups": groups,
        "endpoint_kind": kind,
        "elapsed_s": elapsed,
        "load_average": {"start": load_before, "end": os.getloadavg()},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "versions": _versions(),
        "commit": commit_before,
        "commit_at_end": _git_commit(),
        "source": str(REPO),
        "profiled": bool(args.profile),
        "request_counting": "client: every HTTP request botocore/aiobotocore sends to the endpoint "
        "(Endpoint._send, retries included) in the pipeline process; on moto also the server's "
        "request log (tests.support.requests.RequestLog)",
    }
    summary = report.summarise(suite.raw, config)
    goal_rows = report.goals(summary, config)
    table = report.markdown(summary, goal_rows, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"results-{mode}"
    stem.with_suffix(".json").write_text(
        json.dumps(
            {
                "meta": meta,
                "config": config,
                "raw": suite.raw,
                "summary": summary,
                "goals": goal_rows,
                "errors": suite.errors,
                "details": suite.info,
            },
            indent=1,
            default=str,
        )
    )
    stem.with_suffix(".md").write_text(table)
    try:
        report.chart(summary, config, meta, stem.with_suffix(".png"))
    except Exception as exc:  # the numbers matter more than the picture
        suite.errors.append({"where": "chart", "error": repr(exc)})
        print(f"chart failed: {exc!r}")
    if meta["commit_at_end"] != commit_before:
        warning = (
            f"warning: cas_store changed during the run ({commit_before} -> {meta['commit_at_end']}): "
            "child processes may have measured different versions\n"
        )
        table = warning + "\n" + table
    print()
    print(table)
    if suite.errors:
        print(f"{len(suite.errors)} error(s): " + ", ".join(e["where"] for e in suite.errors))
    print(f"wrote {stem}.json, .md, .png; {elapsed:.0f} s in all")
    return 1 if suite.errors else 0
