"""cas_store demo: a ZenML pipeline on an ``s3cas`` stack, run twice, explained as it goes.

    python -m demo.run_demo [--embedding-mib 48] [--keep]    # from the repository root

What it does, all on this machine:

1. starts an embedded S3 server (moto) on 127.0.0.1, in this process;
2. creates a throw-away ZenML configuration (``ZENML_CONFIG_PATH`` in a temporary
   directory; the user's own ZenML configuration, ``ZENML_*`` variables and ``~/.aws``
   are never read or written) and registers the ``s3cas`` flavor, a ZenML secret with the
   S3 keys, an ``s3cas`` artifact store and a stack;
3. runs the pipeline of demo_pipeline.py twice with ZenML step caching off, as re-runs on
   unchanged data do: every step runs and every output is written again, to new paths;
4. shows, per output of each run, its size and what it added to the bucket; a load of the
   largest output from an empty local cache (from S3) next to the same load from the
   cache; and ``cas-store stats`` and a ``cas-store gc`` dry run on the store.

Nothing keeps running afterwards (the S3 server is a thread of this process and is
stopped), and the temporary directory is removed unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cas_store.sizes import format_size

if TYPE_CHECKING:
    from cas_store.maintenance import RunUsage

LOOPBACK = "127.0.0.1"
BUCKET = "cas-demo"
PREFIX = "zenml"
ACCESS_KEY = "cas-demo-key"
SECRET_KEY = "cas-demo-secret"
STORE_NAME = "cas_demo_store"


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
        name=STORE_NAME,
        flavor="s3cas",
        component_type=StackComponentType.ARTIFACT_STORE,
        configuration=configuration,
    )
    client.create_stack(
        name="cas_demo",
        components={
            StackComponentType.ARTIFACT_STORE: STORE_NAME,
            StackComponentType.ORCHESTRATOR: "default",
        },
    )
    client.activate_stack("cas_demo")
    return root


def say(text: str) -> None:
    """Print an indented triple-quoted block as it reads in the source, after a blank line."""
    print("\n" + textwrap.dedent(text).strip("\n"), flush=True)


def seconds(start: float) -> float:
    return time.perf_counter() - start


def run_pipeline(number: int, embedding_mib: int) -> tuple[str, float]:
    """Run the pipeline once; (run id, wall time). Raises if the run did not complete."""
    from demo.demo_pipeline import demo_pipeline

    print(f"run {number} ... ", end="", flush=True)
    start = time.perf_counter()
    run = demo_pipeline(embedding_mib=embedding_mib)
    took = seconds(start)
    assert run is not None
    status = str(run.status)
    print(f"{status} in {took:.1f} s", flush=True)
    if status != "completed":
        raise SystemExit(f"run {number} ended {status}: see ZenML's log above")
    return str(run.id), took


def output_table(usages: list[RunUsage]) -> None:
    """Per output: its size, and what each run added to the bucket for it."""
    first = usages[0]
    header = ["output", "step", "size", *(f"run {n} added" for n in range(1, len(usages) + 1))]
    rows = [header]
    by_output = [{(a.step, a.name): a for a in u.artifacts} for u in usages]
    for artifact in sorted(first.artifacts, key=lambda a: -a.logical_bytes):
        added = [format_size(outputs[artifact.step, artifact.name].added_bytes) for outputs in by_output]
        rows.append([artifact.name, artifact.step, format_size(artifact.logical_bytes), *added])
    rows.append(
        ["total", "", format_size(first.logical_bytes), *(format_size(u.added_bytes) for u in usages)]
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        left = "  ".join(c.ljust(w) for c, w in zip(row[:2], widths, strict=False))
        right = "  ".join(c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True))
        print(f"  {left}  {right}")


def timed_load(artifact_id: str) -> float:
    from zenml.client import Client

    start = time.perf_counter()
    Client().get_artifact_version(artifact_id).load()
    return seconds(start)


def cas_store_command(*args: str, note: str = "") -> int:
    """Run the cas-store command as a user would type it, and show its output."""
    print(f"\n$ cas-store {' '.join(args)}" + (f"    # {note}" if note else ""), flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "cas_store.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    for line in (result.stdout + result.stderr).rstrip().splitlines():
        print(f"  {line}")
    return result.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedding-mib", type=int, default=48, help="size of the numpy output (MiB)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="cas-store-demo-"))
    workdir = base / "work"  # a fresh working directory: no stray .zen/ can change the stack
    workdir.mkdir()
    isolate_environment(base)
    old_cwd = os.getcwd()
    os.chdir(workdir)
    ok = False
    try:
        with s3_server() as endpoint:
            s3_client(endpoint).create_bucket(Bucket=BUCKET)
            from zenml.client import Client

            from cas_store.maintenance import run_usage, zenml_run
            from cas_store.zenml import S3CASArtifactStore

            root = register_stack(endpoint, base / "cache")
            say(
                f"""
                cas_store demo
                ==============
                An S3 server runs on this machine ({endpoint}, moto); ZenML's configuration
                and cas_store's local cache are in {base}.
                The ZenML stack 'cas_demo' has an artifact store of flavor s3cas at {root}.

                The pipeline (demo/demo_pipeline.py) makes a feature table, a {args.embedding_mib} MiB
                embedding matrix and a few statistics, then trains on them. It runs twice.
                ZenML step caching is off for it (@pipeline(enable_cache=False)), as for any
                pipeline whose inputs may have changed: so run 2 executes every step again and
                writes every output again, to new paths, although the data did not change. A
                plain S3 artifact store would keep a second full copy; cas_store stores each
                distinct content once, so run 2 adds next to nothing to the bucket.
                """
            )
            print(flush=True)
            run_ids = [run_pipeline(n, args.embedding_mib)[0] for n in (1, 2)]

            store = Client().active_stack.artifact_store
            assert isinstance(store, S3CASArtifactStore)
            usages = [run_usage(store.filesystem.store(), zenml_run(run_id)) for run_id in run_ids]
            say(
                """
                What each output added to the bucket
                ------------------------------------"""
            )
            output_table(usages)
            wrote, added = format_size(usages[1].logical_bytes), format_size(usages[1].added_bytes)
            say(
                f"""
                Run 2 wrote {wrote} and added {added} to the bucket: only its small files
                (up to 16 KiB each, which are stored whole every time). The same shows per file in
                each step's logs ("... written, 0 B added to the bucket"), and
                `cas-store --zenml-store {STORE_NAME} stats --zenml-run RUN` prints this table
                for any run.
                """
            )

            largest = max(usages[1].artifacts, key=lambda a: a.logical_bytes)
            size = format_size(largest.logical_bytes)
            title = f"Loading '{largest.name}' ({size}) of run 2, as a notebook would"
            say(f"{title}\n{'-' * len(title)}")
            cas_store_command("--zenml-store", STORE_NAME, "cache", "clear", note="empty the local cache")
            cold = timed_load(largest.id)
            warm = timed_load(largest.id)
            print(f"\n  load with an empty local cache (from S3)  {cold:6.2f} s")
            faster = f"{cold / warm:.0f}x faster, and works offline"
            print(f"  load again (from the local cache)         {warm:6.2f} s   {faster}")

            say(
                """
                The store, as the cas-store command sees it
                -------------------------------------------"""
            )
            stats_rc = cas_store_command("--zenml-store", STORE_NAME, "stats")
            say(
                """
                  ('logical' is what the files add up to, 'stored' what the bucket holds; a blob
                  is one stored piece of file content, shared by every file that contains it.)"""
            )
            gc_rc = cas_store_command(
                "--zenml-store", STORE_NAME, "gc", root, note="a dry run: nothing is deleted without --yes"
            )
            say(
                """
                  Nothing to free: every stored piece belongs to a file of run 1 or run 2. Once old
                  artifacts are deleted, `cas-store gc ROOT --yes` reclaims what no file uses any
                  more, safely while pipelines keep writing (docs/gc.md)."""
            )
            ok = usages[1].added_blobs == 0 and stats_rc == 0 and gc_rc == 0
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
