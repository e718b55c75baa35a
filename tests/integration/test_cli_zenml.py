"""``cas-store``'s ZenML options against real ZenML pipeline runs on moto over HTTP on 127.0.0.1.

One module-scoped fixture (``e2e``, from ``test_zenml_pipeline.py``: two runs of an
identical pipeline on an ``s3cas`` stack whose credentials are a ZenML secret) serves every
test. ``cas-store`` runs as its console script in subprocesses with that fixture's isolated
``ZENML_CONFIG_PATH``, home and working directory, and without ``--endpoint-url``: the
endpoint, credentials and root come from the registered artifact store. The numbers of
``stats --zenml-run`` are checked against the bucket as boto3 lists it.
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cas_store import CASFileSystem
from cas_store.cli import main
from cas_store.config import MiB
from cas_store.format import Entry
from cas_store.maintenance import ZenMLArtifact, ZenMLRun, run_usage, usage_of
from tests.integration import test_zenml_pipeline
from tests.integration.test_zenml_pipeline import ACCESS_KEY, E2E, OUTPUTS, PREFIX, SECRET_KEY
from tests.support.clients import boto3_client, make_bucket
from tests.support.moto import MotoServer
from tests.support.zenml import files_containing

#: The module-scoped fixture of test_zenml_pipeline.py: two runs of the pipeline, one set
#: up per module that uses it.
e2e = test_zenml_pipeline.e2e

STORE = "cas_store"  # the artifact store's name in the fixture's registration
EXIT_ERROR = 3
LARGE_BYTES = 64 * 2**20 + 4096  # zenml_pipeline_app.LARGE_BYTES

#: Loads artifact versions by id in a fresh process and compares them with what the
#: pipeline produced: ``python load_ids.py OUT.json ID...`` in the fixture's workdir (a file:
#: ZenML needs the main module's file as its source root to import materializers).
LOADER = """
import json, sys
import numpy as np
from zenml.client import Client
from zenml_pipeline_app import make_outputs

expected = dict(zip(("frame", "matrix", "summary", "large"), make_outputs()))
out, *ids = sys.argv[1:]
equal = {}
for artifact_id in ids:
    version = Client().get_artifact_version(artifact_id)
    value, want = version.load(), expected[version.name]
    if hasattr(want, "equals"):
        equal[version.name] = bool(want.equals(value))
    elif isinstance(want, np.ndarray):
        equal[version.name] = bool(np.array_equal(value, want) and value.dtype == want.dtype)
    else:
        equal[version.name] = value == want
open(out, "w").write(json.dumps(equal))
"""


@dataclass
class Done:
    code: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> Any:
        assert self.code == 0, self.stderr
        return json.loads(self.stdout)


_outputs: list[str] = []


def cas_store(e2e: E2E, *args: str, cache: str = "cli-cache") -> Done:
    """``cas-store ARGS`` as a process in the fixture's ZenML environment (no endpoint, no
    credentials of its own: the environment's are moto's dummy keys, which the server log
    tells apart from the ZenML secret's)."""
    script = Path(sys.executable).with_name("cas-store")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cas_store.cli"]
    start = time.perf_counter()
    result = subprocess.run(
        [*command, *args],
        cwd=e2e.workdir,
        env=e2e.env(e2e.base / cache),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    _outputs.extend((result.stdout, result.stderr))
    return Done(result.returncode, result.stdout, result.stderr, time.perf_counter() - start)


#: Cheap invocations run in one process (ZenML's import and client cost seconds each time):
#: ``python -c BATCH_DRIVER OUT.json RUN_ID BASE ARGS.json`` runs each argument list through
#: ``cas_store.cli.main`` (click's test runner) and writes exit code, stdout and stderr.
#: ``{run1}`` in an argument becomes the name of run 1, ``{base}`` the fixture's directory.
BATCH_DRIVER = """
import json, sys
from click.testing import CliRunner
from zenml.client import Client
from cas_store.cli import main

out, run_id, base, batch = sys.argv[1:]
name = Client().get_pipeline_run(run_id).name
done = []
for args in json.loads(batch):
    args = [name if a == "{run1}" else a.replace("{base}", base) for a in args]
    result = CliRunner().invoke(main, args)
    error = result.exception if not isinstance(result.exception, SystemExit) else None
    done.append([result.exit_code, result.stdout, result.stderr + (repr(error) if error else "")])
open(out, "w").write(json.dumps(done))
"""
TEXT_STATS = ("--zenml-store", STORE, "stats", "--zenml-run", "{run1}")
ENDPOINT_WINS = ("--zenml-store", STORE, "--endpoint-url", "http://127.0.0.1:9", "stats")
PROFILE_WINS = ("--zenml-store", STORE, "--profile", "no-such-profile", "stats")
CACHE_DIR_WINS = ("--zenml-store", STORE, "--cache-dir", "{base}/flag-cache", "--json", "cache", "info")
ERRORS = [
    (("--zenml-store", "no-such-store", "stats"), "ZenML knows no artifact store 'no-such-store'"),
    (("--zenml-store", "default", "stats"), "has the flavor 'local', not 's3cas'"),
    (("--zenml-store", STORE, "stats", "--zenml-run", "no-such-run"), "no pipeline run 'no-such-run'"),
    (("stats", "--zenml-run", "no-such-run"), "no pipeline run 'no-such-run'"),
    (("--zenml-store", STORE, "prefetch", "--zenml-artifact", "large:99"), "with version '99'"),
    (("--zenml-store", STORE, "prefetch", "--zenml-artifact", "no-such-artifact"), "no artifact"),
]
BATCH = [TEXT_STATS, ENDPOINT_WINS, PROFILE_WINS, CACHE_DIR_WINS, *(args for args, _ in ERRORS)]


@pytest.fixture(scope="module")
def batch(e2e: E2E) -> list[Done]:
    out = e2e.base / "batch.json"
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            BATCH_DRIVER,
            str(out),
            e2e.runs[0]["run_id"],
            str(e2e.base),
            json.dumps(BATCH),
        ],
        cwd=e2e.workdir,
        env=e2e.env(e2e.base / "batch-cache"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    _outputs.extend((result.stdout, result.stderr))
    assert result.returncode == 0, result.stderr[-4000:]
    seconds = time.perf_counter() - start
    done = [Done(code, stdout, stderr, seconds) for code, stdout, stderr in json.loads(out.read_text())]
    _outputs.extend(d.stdout + d.stderr for d in done)
    return done


@dataclass
class BucketView:
    """Entries under ``PREFIX/manifest/`` and blobs, read with boto3 (not through cas_store)."""

    entries: dict[str, Entry]
    blobs: dict[str, int]

    def under(self, uri: str) -> dict[str, Entry]:
        rel = uri.split(f"/{PREFIX}/", 1)[1]
        return {r: e for r, e in self.entries.items() if r == rel or r.startswith(rel + "/")}


def bucket_view(e2e: E2E) -> BucketView:
    client = boto3_client(e2e.server)
    entries: dict[str, Entry] = {}
    blobs: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=e2e.bucket, Prefix=f"{PREFIX}/"):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.startswith(f"{PREFIX}/manifest/"):
                body = client.get_object(Bucket=e2e.bucket, Key=key)["Body"].read()
                entries[key[len(f"{PREFIX}/manifest/") :]] = Entry.decode(body, key)
            elif key.startswith(f"{PREFIX}/blobs/"):
                blobs[key] = obj["Size"]
    return BucketView(entries, blobs)


def _blob_key(entry: Entry, digest: str) -> str:
    return f"{PREFIX}/blobs/{entry.algorithm}/{digest[:2]}/{digest[2:4]}/{digest}"


def _credentials_used(log: Any, bucket: str) -> set[str]:
    return {
        r.headers.get("authorization", "").split("Credential=")[-1].split("/")[0]
        for r in log.requests
        if r.bucket == bucket
    }


# -- --zenml-store: connection, credentials and root ---------------------------------------


def test_zenml_store_gives_endpoint_credentials_and_root(e2e: E2E) -> None:
    with e2e.server.record() as log:
        done = cas_store(e2e, "-vv", "--zenml-store", STORE, "--json", "stats")
    doc = done.json()  # stdout is the JSON alone: ZenML's console logging stays off it
    assert doc["root"] == f"s3cas://{e2e.bucket}/{PREFIX}"
    assert doc["entries"] == len(bucket_view(e2e).entries)
    assert doc["missing_blobs"] == 0
    # The keys of the ZenML secret signed every request, not the environment's dummy keys.
    assert _credentials_used(log, e2e.bucket) == {ACCESS_KEY}


def test_explicit_endpoint_url_wins_over_the_registered_one(batch: list[Done]) -> None:
    done = batch[BATCH.index(ENDPOINT_WINS)]
    assert done.code == EXIT_ERROR, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("cas-store: error: ") and "http://127.0.0.1:9" in done.stderr
    assert done.stderr.count("\n") == 1


def test_explicit_profile_and_cache_dir_win_over_the_registration(e2e: E2E, batch: list[Done]) -> None:
    profile = batch[BATCH.index(PROFILE_WINS)]  # instead of the ZenML secret's keys
    assert profile.code == EXIT_ERROR and "'no-such-profile' is not defined" in profile.stderr, profile.stderr
    cache = batch[BATCH.index(CACHE_DIR_WINS)]
    assert cache.code == 0, cache.stderr
    assert json.loads(cache.stdout)["directory"] == str(e2e.base / "flag-cache")


# -- stats --zenml-run -------------------------------------------------------------------


def _expected(view: BucketView, uris: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per output: files, logical bytes, inline bytes and its blobs (key -> size), from the bucket."""
    out: dict[str, dict[str, Any]] = {}
    for name, uri in uris.items():
        entries = view.under(uri)
        # As the bucket's listing says: compressed where the writer compressed.
        blobs = {
            _blob_key(e, c.digest): view.blobs.get(_blob_key(e, c.digest), -1)
            for e in entries.values()
            for c in e.chunks
        }
        out[name] = {
            "files": len(entries),
            "logical": sum(e.size for e in entries.values()),
            "inline": sum(e.size for e in entries.values() if e.inline is not None),
            "blobs": blobs,
        }
    return out


def test_stats_zenml_run_numbers_match_the_bucket(e2e: E2E) -> None:
    view = bucket_view(e2e)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # two processes, each mostly ZenML's start
        first = pool.submit(
            cas_store, e2e, "--zenml-store", STORE, "--json", "stats", "--zenml-run", e2e.runs[0]["run_id"]
        )
        second = pool.submit(cas_store, e2e, "--json", "stats", "--zenml-run", e2e.runs[1]["run_id"])
    docs = [first.result().json(), second.result().json()]  # the second: the run's own store
    for doc, record in zip(docs, e2e.runs, strict=True):
        assert doc["run"]["id"] == record["run_id"]
        assert doc["root"] == f"s3cas://{e2e.bucket}/{PREFIX}"
        assert {a["name"]: a["uri"] for a in doc["artifacts"]} == record["uris"]
        assert {a["name"]: a["id"] for a in doc["artifacts"]} == record["artifacts"]
        expected = _expected(view, record["uris"])
        for a in doc["artifacts"]:
            want = expected[a["name"]]
            assert a["produced"] is True and a["step"] == "produce"
            assert (a["files"], a["logical_bytes"]) == (want["files"], want["logical"]), a["name"]
            assert a["stored_bytes"] == sum(want["blobs"].values()) + want["inline"], a["name"]
            assert set(want["blobs"]) <= set(view.blobs), "an artifact names a blob the bucket lacks"
        total = doc["total"]
        assert total["artifacts"] == len(OUTPUTS)
        assert total["logical_bytes"] == sum(a["logical_bytes"] for a in doc["artifacts"])
        assert total["added_bytes"] == sum(a["added_bytes"] for a in doc["artifacts"])
        large = next(a for a in doc["artifacts"] if a["name"] == "large")
        assert LARGE_BYTES < large["logical_bytes"] < LARGE_BYTES + 4096  # data.npy: array + header

    run1, run2 = docs
    exp1, exp2 = _expected(view, e2e.runs[0]["uris"]), _expected(view, e2e.runs[1]["uris"])
    # Run 1 wrote into an empty bucket: every blob its artifacts name is its own, each as
    # large as the bucket's listing right after run 1 says.
    blobs1 = {k: s for want in exp1.values() for k, s in want["blobs"].items()}
    inline1 = sum(want["inline"] for want in exp1.values())
    assert run1["total"]["added_blobs"] == len(blobs1)
    assert run1["total"]["added_bytes"] == sum(e2e.blobs_after[0][k] for k in blobs1) + inline1
    assert sum(blobs1.values()) > 64 * MiB
    for a in run1["artifacts"]:
        want = exp1[a["name"]]
        assert a["added_bytes"] == sum(want["blobs"].values()) + want["inline"], a["name"]
    # Run 2 produced identical content: the bucket gained no blob, and the run added only
    # its inline files (which live in the entries it wrote).
    assert e2e.blobs_after[1] == e2e.blobs_after[0]
    assert run2["total"]["added_blobs"] == 0
    assert run2["total"]["added_bytes"] == sum(want["inline"] for want in exp2.values()) < 64 * 1024
    assert run2["total"]["logical_bytes"] == run1["total"]["logical_bytes"]
    _run_totals.update(run1["total"])


_run_totals: dict[str, int] = {}


def test_stats_zenml_run_text_table_with_the_run_by_name(e2e: E2E, batch: list[Done]) -> None:
    text = batch[BATCH.index(TEXT_STATS)]
    assert text.code == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("run    ") and lines[0].endswith(f"({e2e.runs[0]['run_id']})")
    assert lines[1] == f"store  s3cas://{e2e.bucket}/{PREFIX}"
    assert lines[2].split() == ["artifact", "version", "step", "files", "logical", "stored", "added"]
    assert sorted(line.split()[:3] for line in lines[3:7]) == [[n, "1", "produce"] for n in sorted(OUTPUTS)]
    assert lines[7].startswith("total")
    assert lines[8].startswith("added: ")
    if _run_totals:  # the JSON of the same run, when that test ran
        assert f"({_run_totals['added_bytes']:,} bytes), {_run_totals['added_blobs']:,} blobs" in lines[8]


# -- prefetch --zenml-run / --zenml-artifact, then offline -------------------------------


def test_prefetch_zenml_artifact_name_and_version_and_relative_url(e2e: E2E) -> None:
    matrix = e2e.runs[0]["uris"]["matrix"]
    relative = matrix.split(f"/{PREFIX}/", 1)[1]  # relative to the artifact store's root
    done = cas_store(
        e2e, "--zenml-store", STORE, "--json", "prefetch", relative,
        "--zenml-artifact", "large:1", "--zenml-artifact", "summary",
        cache="artifact-cache",
    )  # fmt: skip
    doc = done.json()
    assert doc["artifacts"] == [
        {"name": "large", "version": "1", "uri": e2e.runs[0]["uris"]["large"]},
        {"name": "summary", "version": "2", "uri": e2e.runs[1]["uris"]["summary"]},  # the latest
    ]
    assert doc["ok"] is True and doc["files"] >= 3 and doc["downloaded_bytes"] > LARGE_BYTES + MiB
    fs = CASFileSystem(
        key=e2e.server.access_key,
        secret=e2e.server.secret_key,
        client_kwargs={"endpoint_url": e2e.server.endpoint_url},
        cache_dir=str(e2e.base / "artifact-cache"),
        skip_instance_cache=True,
    )
    try:
        for uri in (matrix, e2e.runs[0]["uris"]["large"], e2e.runs[1]["uris"]["summary"]):
            store, rel = fs.locate(uri)
            held = usage_of(store, rel)
            assert held.files >= 1 and held.cached_chunks == held.chunks, uri
    finally:
        fs.close()


def test_prefetch_zenml_run_then_load_with_s3_stopped(e2e: E2E) -> None:
    cache = "prefetch-run-cache"
    done = cas_store(
        e2e, "--zenml-store", STORE, "--json", "prefetch", "--zenml-run", e2e.runs[0]["run_id"], cache=cache
    )
    doc = done.json()
    assert {a["name"]: a["uri"] for a in doc["artifacts"]} == e2e.runs[0]["uris"]
    assert doc["other_stores"] == []
    assert doc["ok"] is True and doc["downloaded_chunks"] == doc["chunks"] > 0

    out = e2e.base / "offline-load.json"
    ids = [e2e.runs[0]["artifacts"][n] for n in OUTPUTS]
    loader = e2e.workdir / "load_ids.py"
    loader.write_text(LOADER)
    e2e.server.stop()
    try:
        loaded = subprocess.run(
            [sys.executable, str(loader), str(out), *ids],
            cwd=e2e.workdir,
            env=e2e.env(e2e.base / cache),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        e2e.server.restart()
    _outputs.extend((loaded.stdout, loaded.stderr))
    assert loaded.returncode == 0, loaded.stderr[-4000:]
    assert json.loads(out.read_text()) == dict.fromkeys(OUTPUTS, True)


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), ERRORS)
def test_zenml_errors_are_one_line_and_exit_3(batch: list[Done], args: tuple[str, ...], message: str) -> None:
    done = batch[BATCH.index(args)]
    assert done.code == EXIT_ERROR, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr.startswith("cas-store: error: ") and message in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_credentials_never_reach_output_or_cache(e2e: E2E) -> None:
    assert _outputs, "run after the other tests of this module"
    for output in _outputs:
        assert SECRET_KEY not in output
    for cache in e2e.base.glob("*-cache"):
        assert files_containing(cache, SECRET_KEY.encode()) == [], cache


# -- without ZenML, and usage errors (in this process: no ZenML needed) ------------------


def test_without_the_zenml_extra_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "zenml", None)  # import zenml raises ImportError
    result = CliRunner().invoke(main, ["--cache-dir", str(tmp_path), "--zenml-store", "x", "stats"])
    assert result.exit_code == EXIT_ERROR, result.output
    assert result.stderr.startswith("cas-store: error: ")
    assert "pip install 'cas_store[zenml]'" in result.stderr
    assert result.stderr.count("\n") == 1


def test_importing_the_cli_and_maintenance_does_not_import_zenml() -> None:
    code = (
        "import sys, cas_store, cas_store.maintenance, cas_store.cli\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] == 'zenml' or m == 'cas_store.zenml')\n"
        "assert not leaked, leaked\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_lookup_errors_never_repeat_rejected_values() -> None:
    """A pydantic validation error (a secret of the wrong shape, say) names fields, not values."""
    import pydantic

    from cas_store.maintenance import ZenMLLookupError
    from cas_store.maintenance.zenml_runs import _asking

    class Keys(pydantic.BaseModel):
        aws_access_key_id: str
        aws_secret_access_key: int

    with pytest.raises(ZenMLLookupError) as caught, _asking("the credentials of artifact store 'x'"):
        Keys(aws_access_key_id="AKIA", aws_secret_access_key=SECRET_KEY)  # type: ignore[arg-type]
    assert SECRET_KEY not in str(caught.value) and "aws_secret_access_key" in str(caught.value)


def test_root_or_zenml_store_is_required(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--cache-dir", str(tmp_path), "stats"])
    assert result.exit_code == 2 and "give ROOT, or --zenml-store" in result.stderr
    result = CliRunner().invoke(main, ["--cache-dir", str(tmp_path), "prefetch"])
    assert result.exit_code == 2 and "--zenml-run RUN or --zenml-artifact" in result.stderr


# -- the definition of added bytes, on a store written by hand ----------------------------


@pytest.fixture
def hand_written(moto: MotoServer, tmp_path: Path) -> Iterator[CASFileSystem]:
    bucket = f"runs-{uuid.uuid4().hex[:12]}"
    make_bucket(moto.endpoint_url, bucket, moto.access_key, moto.secret_key)
    fs = CASFileSystem(
        root=f"s3cas://{bucket}/store",
        key=moto.access_key,
        secret=moto.secret_key,
        client_kwargs={"endpoint_url": moto.endpoint_url},
        cache_dir=str(tmp_path / "cache"),
        chunk_size=1 * MiB,
        skip_instance_cache=True,
    )
    yield fs
    fs.close()


def test_added_bytes_are_the_blobs_a_run_referenced_first(hand_written: CASFileSystem) -> None:
    fs = hand_written
    root = f"s3cas://{fs.root.path}"
    # Incompressible: the sizes below are the blobs' in the bucket.
    early, cached, new, later = (random.Random(i).randbytes(MiB + 7) for i in range(1, 5))
    fs.pipe(f"{root}/elsewhere/early.bin", early)  # outside the run, older than it
    fs.pipe(f"{root}/old-run/cached/data.bin", cached)  # a cached step's output (an earlier run)
    time.sleep(1.1)  # entry times are whole seconds
    fs.pipe(f"{root}/run/a/data.bin", new)
    fs.pipe(f"{root}/run/a/early-again.bin", early)  # referenced before: not added
    fs.pipe(f"{root}/run/a/cached-again.bin", cached)  # named by a cached output: not added
    fs.pipe(f"{root}/run/b/same.bin", new)  # a's blob again, not older than a's: counted for a
    fs.pipe(f"{root}/run/b/later.bin", later)
    fs.pipe(f"{root}/run/c/tiny.json", b"{}")  # inline: its bytes live in the run's entry
    time.sleep(1.1)
    fs.pipe(f"{root}/elsewhere/copy-of-later.bin", later)  # younger than the run: no effect

    def artifact(name: str, rel: str, produced: bool = True) -> ZenMLArtifact:
        return ZenMLArtifact(name, "1", f"{root}/{rel}", name, None, "step", produced)

    run = ZenMLRun(
        "run",
        "id",
        (
            artifact("a", "run/a"),
            artifact("b", "run/b"),
            artifact("c", "run/c"),
            artifact("cached", "old-run/cached", produced=False),
            ZenMLArtifact("elsewhere", "1", "s3cas://other-bucket/x", "e", None),
        ),
    )
    store = fs.store()
    result = run_usage(store, run)
    by_name = {a.name: a for a in result.artifacts}
    size = MiB + 7
    record = store.resolve("run/a/data.bin")
    assert record is not None
    chunks = len(record.entry.chunks)
    assert [a.name for a in result.other_stores] == ["elsewhere"]
    assert (by_name["a"].files, by_name["a"].logical_bytes) == (3, 3 * size)
    assert (by_name["a"].added_blobs, by_name["a"].added_bytes) == (chunks, size)  # new
    assert by_name["a"].stored_bytes == 3 * size
    assert (by_name["b"].added_blobs, by_name["b"].added_bytes) == (chunks, size)  # later only
    assert by_name["b"].stored_bytes == 2 * size
    assert (by_name["c"].added_blobs, by_name["c"].added_bytes, by_name["c"].stored_bytes) == (0, 2, 2)
    assert (by_name["cached"].added_bytes, by_name["cached"].logical_bytes) == (0, size)
    assert result.added_bytes == 2 * size + 2
    assert result.stored_bytes == 4 * size + 2  # early, cached, new, later, each once; the inline file
    assert result.logical_bytes == 6 * size + 2
    doc = result.to_dict()
    assert doc["total"]["added_bytes"] == result.added_bytes
    assert [a["name"] for a in doc["artifacts"]] == ["a", "b", "c", "cached"]
