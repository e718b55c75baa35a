"""cas_store demo: a ZenML pipeline on an ``s3cas`` stack, run twice, then a short report.

    python -m demo.run_demo [--embedding-mib 48] [--keep]    # from the repository root

What it does, all on this machine:

1. starts an embedded S3 server (moto) on 127.0.0.1, in this process;
2. creates a throw-away ZenML configuration (``ZENML_CONFIG_PATH`` in a temporary
   directory; the user's own ZenML configuration, ``ZENML_*`` variables and ``~/.aws``
   are never read or written) and registers the ``s3cas`` flavor, a ZenML secret with the
   S3 keys, an ``s3cas`` artifact store and a stack;
3. runs the pipeline of demo_pipeline.py twice with ZenML step caching off, as re-runs on
   unchanged data do: every output is written again, to new paths;
4. prints logical bytes written vs bytes stored, the dedup ratio, local cache hits and
   both run times.

Nothing keeps running afterwards (the S3 server is a thread of this process and is
stopped), and the temporary directory is removed unless ``--keep`` is given.
"""

import argparse
import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
BUCKET = "cas-demo"
PREFIX = "zenml"
ACCESS_KEY = "cas-demo-key"
SECRET_KEY = "cas-demo-secret"


@dataclasses.dataclass
class RunStats:
    seconds: float
    status: str
    logical: int  # bytes of the files the run wrote, as ZenML sees them
    new_blob_bytes: int  # content the bucket did not hold before the run


def isolate_environment(base: Path) -> None:
    """Point ZenML, boto and cas_store at ``base``; must run before any of them is imported."""
    for name in list(os.environ):
        if name.startswith(("ZENML_", "AWS_")):
            del os.environ[name]
    os.environ.update(
        {
            "ZENML_CONFIG_PATH": str(base / "zenml-config"),
            "ZENML_ANALYTICS_OPT_IN": "false",  # contact nothing but 127.0.0.1
            "ZENML_LOGGING_VERBOSITY": "WARN",
            "ZENML_ENABLE_REPO_INIT_WARNINGS": "false",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "CAS_STORE_CACHE_DIR": str(base / "cache"),
        }
    )
    no_proxy = [h for h in os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")).split(",") if h]
    no_proxy += [LOOPBACK, "localhost"]
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(no_proxy)


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 on 127.0.0.1 (a free port), in a thread of this process."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )


def bucket_usage(client: Any, prefix: str) -> tuple[int, int]:
    """(objects, bytes) under ``prefix``."""
    count = size = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            count += 1
            size += obj["Size"]
    return count, size


def logical_bytes(fs: Any, root: str) -> int:
    """Total size of every file in the store, as ZenML sees it."""
    return sum(info["size"] for info in fs.find(root, detail=True).values())


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def register_stack(endpoint: str, cache_dir: Path) -> str:
    """Flavor, secret, artifact store and stack, as docs/zenml.md describes (Python API)."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    client.create_flavor(
        source="cas_store.zenml.S3CASArtifactStoreFlavor",
        component_type=StackComponentType.ARTIFACT_STORE,
    )
    client.create_secret(
        "cas-demo-s3", {"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY}
    )
    root = f"s3cas://{BUCKET}/{PREFIX}"
    configuration: dict[str, Any] = {
        "path": root,
        "authentication_secret": "cas-demo-s3",
        "client_kwargs": {"endpoint_url": endpoint},
        "cache_dir": str(cache_dir),
    }
    client.create_stack_component(
        name="cas_demo_store",
        flavor="s3cas",
        component_type=StackComponentType.ARTIFACT_STORE,
        configuration=configuration,
    )
    client.create_stack(
        name="cas_demo",
        components={
            StackComponentType.ARTIFACT_STORE: "cas_demo_store",
            StackComponentType.ORCHESTRATOR: "default",
        },
    )
    client.activate_stack("cas_demo")
    return root


def enable_cache_statistics(cache_dir: Path) -> Any:
    """Count hits and misses of the blob cache (diskcache keeps the counters in its database)."""
    import diskcache

    cache = diskcache.Cache(str(cache_dir / "blobs"))
    cache.stats(enable=True, reset=True)
    return cache


def print_report(
    runs: list[RunStats], stored: int, objects: int, hits: int, misses: int, loaded: dict[str, Any]
) -> None:
    written = sum(r.logical for r in runs)
    first, second = runs
    read_back = ", ".join(f"{name} ({type(value).__name__})" for name, value in loaded.items())
    print()
    print("cas_store demo report")
    print("=====================")
    print(f"{'':28}{'run 1':>14}{'run 2':>14}")
    print(f"{'pipeline status':28}{first.status:>14}{second.status:>14}")
    print(f"{'wall time':28}{first.seconds:>12.1f} s{second.seconds:>12.1f} s")
    print(f"{'logical bytes written':28}{human(first.logical):>14}{human(second.logical):>14}")
    print(f"{'new content uploaded':28}{human(first.new_blob_bytes):>14}{human(second.new_blob_bytes):>14}")
    print()
    print(f"logical bytes written (2 runs)  {human(written)}")
    print(f"bytes stored in the bucket      {human(stored)} in {objects} objects (blobs + manifest)")
    print(f"dedup ratio                     {written / stored:.2f}x")
    print(f"local cache                     {hits + misses} blob reads: {hits} hits, {misses} downloads")
    print(f"outputs read back               {read_back}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedding-mib", type=int, default=48, help="size of the numpy output (MiB)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="cas-store-demo-"))
    workdir = base / "work"  # a fresh working directory: no stray .zen/ can change the stack
    workdir.mkdir()
    cache_dir = base / "cache"
    isolate_environment(base)
    old_cwd = os.getcwd()
    os.chdir(workdir)
    try:
        with s3_server() as endpoint:
            print(f"S3 (moto) on {endpoint}; ZenML config and cache in {base}")
            client = s3_client(endpoint)
            client.create_bucket(Bucket=BUCKET)

            from zenml.client import Client

            from cas_store.zenml import S3CASArtifactStore
            from demo.demo_pipeline import demo_pipeline

            root = register_stack(endpoint, cache_dir)
            print(f"stack 'cas_demo': artifact store s3cas -> {root}\n")
            stats_cache = enable_cache_statistics(cache_dir)
            store = Client().active_stack.artifact_store
            assert isinstance(store, S3CASArtifactStore)
            fs = store.filesystem

            runs: list[RunStats] = []
            run_ids = []
            for n in (1, 2):
                blobs_before = bucket_usage(client, f"{PREFIX}/blobs/")
                logical_before = logical_bytes(fs, root)
                print(f"run {n} ...", flush=True)
                start = time.perf_counter()
                run = demo_pipeline(embedding_mib=args.embedding_mib)
                seconds = time.perf_counter() - start
                assert run is not None
                run_ids.append(run.id)
                runs.append(
                    RunStats(
                        seconds=seconds,
                        status=str(run.status),
                        logical=logical_bytes(fs, root) - logical_before,
                        new_blob_bytes=bucket_usage(client, f"{PREFIX}/blobs/")[1] - blobs_before[1],
                    )
                )
            # Read the last run's outputs back, as a notebook or the next pipeline would.
            outputs = Client().get_pipeline_run(run_ids[-1]).steps["make_dataset"].outputs
            loaded = {name: versions[0].load() for name, versions in outputs.items()}
            hits, misses = stats_cache.stats()
            stats_cache.close()

            objects, stored = bucket_usage(client, f"{PREFIX}/")
            print_report(runs, stored, objects, hits, misses, loaded)
            ok = runs[1].new_blob_bytes == 0 and all(r.status == "completed" for r in runs)
    finally:
        os.chdir(old_cwd)
        if args.keep:
            print(f"\nkept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print("\nS3 server stopped; nothing left running." + ("" if args.keep else " Temporary files removed."))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
