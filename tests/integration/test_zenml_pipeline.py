"""End to end: real ZenML pipelines on an ``s3cas`` stack over moto on 127.0.0.1.

Registration goes through the ZenML CLI exactly as docs/zenml.md shows it, with
credentials in a ZenML secret. The pipeline (tests/integration/zenml_pipeline_app.py) writes a
DataFrame (Parquet via pyarrow), a numpy array, a dict and a 64 MiB+ array; it runs twice
with step caching off. Every phase is a fresh process with a fresh ``ZENML_CONFIG_PATH``
and working directory, isolated from ``~/.aws`` and ``~/.config/zenml``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import boto3_client, make_bucket
from tests.support.moto import MotoServer
from tests.support.requests import RequestLog
from tests.support.zenml import bucket_objects, files_containing, zenml_environ

APP = Path(__file__).with_name("zenml_pipeline_app.py")
PREFIX = "zenml"
ACCESS_KEY = "cas-e2e-access-key"
SECRET_KEY = f"cas-e2e-secret-{uuid.uuid4().hex}"  # must never reach disk or output
OUTPUTS = ("frame", "matrix", "summary", "large")


@dataclass
class E2E:
    server: MotoServer
    bucket: str
    base: Path
    workdir: Path
    writer_cache: Path
    runs: list[dict[str, Any]] = field(default_factory=list)
    run_files: list[Path] = field(default_factory=list)
    run_logs: list[RequestLog] = field(default_factory=list)
    blobs_after: list[dict[str, int]] = field(default_factory=list)
    manifest_after: list[dict[str, int]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    cli_outputs: list[str] = field(default_factory=list)

    def env(self, cache_dir: Path) -> dict[str, str]:
        return zenml_environ(
            self.base / "zenml-config",
            HOME=str(self.base / "home"),  # nothing reads the developer's ~/.config or ~/.aws
            XDG_CONFIG_HOME=str(self.base / "home" / ".config"),
            CAS_STORE_CACHE_DIR=str(cache_dir),
        )

    def run(self, args: list[str], cache_dir: Path | None = None, timeout: float = 240) -> str:
        result = subprocess.run(
            args,
            cwd=self.workdir,
            env=self.env(cache_dir or self.writer_cache),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = result.stdout + result.stderr
        self.outputs.append(output)
        assert result.returncode == 0, f"{' '.join(args[:4])} failed:\n{output[-4000:]}"
        return output

    def zenml(self, *args: str) -> str:
        output = self.run([str(Path(sys.executable).with_name("zenml")), *args])
        self.cli_outputs.append(output)
        return output

    def app(self, *args: str, cache_dir: Path | None = None) -> str:
        return self.run([sys.executable, str(self.workdir / APP.name), *args], cache_dir=cache_dir)

    def load(self, name: str, cache_dir: Path) -> dict[str, Any]:
        out = self.base / f"{name}.json"
        self.app("load", str(out), *map(str, self.run_files), cache_dir=cache_dir)
        return json.loads(out.read_text())  # type: ignore[no-any-return]

    def blob_keys(self) -> set[str]:
        return set(self.blobs_after[-1])


def _blob_uploads(log: RequestLog, bucket: str) -> list[str]:
    return [
        f"{r.method} {r.key}"
        for r in log.requests
        if r.bucket == bucket
        and r.key
        and r.key.startswith(f"{PREFIX}/blobs/")
        and r.method in ("PUT", "POST")
    ]


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    base = tmp_path_factory.mktemp("zenml-e2e")
    workdir = base / "work"
    (base / "home").mkdir()
    workdir.mkdir()
    shutil.copy(APP, workdir / APP.name)
    server = MotoServer()  # our own: a test stops it
    server.start()
    try:
        bucket = f"e2e-{uuid.uuid4().hex[:10]}"
        make_bucket(server.endpoint_url, bucket, server.access_key, server.secret_key)
        state = E2E(server, bucket, base, workdir, base / "writer-cache")
        # Registration as docs/zenml.md shows it.
        state.zenml("artifact-store", "flavor", "register", "cas_store.zenml.S3CASArtifactStoreFlavor")
        state.zenml(
            "secret", "create", "cas-e2e-aws",
            f"--aws_access_key_id={ACCESS_KEY}", f"--aws_secret_access_key={SECRET_KEY}",
        )  # fmt: skip
        state.zenml(
            "artifact-store", "register", "cas_store", "--flavor=s3cas", f"--path=s3cas://{bucket}/{PREFIX}",
            "--authentication_secret=cas-e2e-aws",
            f"--client_kwargs={json.dumps({'endpoint_url': server.endpoint_url})}",
        )  # fmt: skip
        state.zenml("stack", "register", "cas_stack", "-a", "cas_store", "-o", "default", "--set")
        client = boto3_client(server)
        for i in (1, 2):
            run_file = base / f"run{i}.json"
            with server.record() as log:
                state.app("run", str(run_file))
            state.run_logs.append(log)
            state.run_files.append(run_file)
            state.runs.append(json.loads(run_file.read_text()))
            state.blobs_after.append(bucket_objects(client, bucket, f"{PREFIX}/blobs/"))
            state.manifest_after.append(bucket_objects(client, bucket, f"{PREFIX}/manifest/"))
        yield state
    finally:
        server.stop()


def test_pipeline_runs_twice_on_the_s3cas_stack(e2e: E2E) -> None:
    assert len(e2e.runs) == 2
    for record in e2e.runs:
        assert record["status"] == "completed"
        assert record["artifact_store"] == "S3CASArtifactStore"
        for name in OUTPUTS:
            assert record["uris"][name].startswith(f"s3cas://{e2e.bucket}/{PREFIX}/")
    assert e2e.runs[0]["uris"] != e2e.runs[1]["uris"]  # ZenML writes every run to new paths
    # The credentials came from the ZenML secret (the environment has none).
    for log in e2e.run_logs:
        assert {
            r.headers.get("authorization", "").split("Credential=")[-1].split("/")[0]
            for r in log.requests
            if r.bucket == e2e.bucket
        } == {ACCESS_KEY}
    assert not (e2e.workdir / ".zen").exists()


def test_second_run_uploads_no_new_blob_bytes(e2e: E2E) -> None:
    first, second = e2e.blobs_after
    assert sum(first.values()) > 64 * 2**20  # the large output is there, once
    assert second == first, "run 2 added or changed blobs"
    assert _blob_uploads(e2e.run_logs[1], e2e.bucket) == []
    assert _blob_uploads(e2e.run_logs[0], e2e.bucket) != []
    # Run 2 did publish its files: new manifest entries, no new bytes.
    assert len(e2e.manifest_after[1]) > len(e2e.manifest_after[0])


def test_artifacts_load_back_equal_from_the_local_cache(e2e: E2E) -> None:
    with e2e.server.record() as log:
        result = e2e.load("load-warm", e2e.writer_cache)
    assert len(result["equal"]) == 2 * len(OUTPUTS)
    assert all(result["equal"].values()), result["equal"]
    assert all(result["logs"].values()), "step logs (written from ZenML's log thread) are missing"
    # The writer's cache holds every blob it uploaded: no blob is downloaded again.
    assert log.count("GET", bucket=e2e.bucket, key_prefix=f"{PREFIX}/blobs/") == 0


def test_step_logs_show_what_each_output_added_to_the_bucket(e2e: E2E) -> None:
    """log_writes: one line per file in the step's logs; run 2's outputs added nothing."""
    result = e2e.load("load-savings", e2e.writer_cache)
    first, second = (result["savings"][run["run_id"]] for run in e2e.runs)
    large = [m for m in first if "/large/" in m]
    assert len(large) == 1, first
    assert re.search(r": 64\.0 MiB written, 64\.0 MiB added to the bucket \(new content\)$", large[0]), large
    for name in OUTPUTS:
        lines = [m for m in second if f"/{name}/" in m]
        assert lines, (name, second)
        for line in lines:
            assert re.search(r" written, (0 B|\d+ B) added to the bucket", line), line
    # The large output of run 2 is the same content: it cost the bucket nothing.
    unchanged = "0 B added to the bucket (all of it was stored already)"
    assert any("/large/" in m and m.endswith(unchanged) for m in second), second
    assert not any(m.startswith("cas_store: logs/") for m in first + second)  # ZenML's own log files


def test_fresh_cache_refetches_then_serves_offline(e2e: E2E) -> None:
    fresh = e2e.base / "fresh-cache"
    with e2e.server.record() as log:
        result = e2e.load("load-fresh", fresh)
    assert all(result["equal"].values()), result["equal"]
    fetched = {r.key for r in log.filter("GET", bucket=e2e.bucket, key_prefix=f"{PREFIX}/blobs/")}
    assert fetched == e2e.blob_keys(), "every blob is fetched from S3 into the empty cache"

    e2e.server.stop()
    try:
        offline = e2e.load("load-offline", fresh)
    finally:
        e2e.server.restart()
    assert len(offline["equal"]) == 2 * len(OUTPUTS)
    assert all(offline["equal"].values()), offline["equal"]
    assert all(offline["logs"].values())


def test_credentials_never_reach_disk_or_output(e2e: E2E) -> None:
    needle = SECRET_KEY.encode()
    for cache in (e2e.writer_cache, e2e.base / "fresh-cache"):
        if cache.exists():
            assert files_containing(cache, needle) == []
    assert files_containing(e2e.workdir, needle) == []
    client = boto3_client(e2e.server)
    for key in bucket_objects(client, e2e.bucket):
        assert needle not in client.get_object(Bucket=e2e.bucket, Key=key)["Body"].read(), key
    for output in e2e.outputs:
        assert SECRET_KEY not in output


def test_registration_commands_work_as_documented(e2e: E2E) -> None:
    flavor, _secret, store, _stack = e2e.cli_outputs[:4]
    assert "Successfully registered new flavor 's3cas'" in flavor
    assert "Successfully registered artifact_store `cas_store`" in store
    described = e2e.zenml("artifact-store", "describe", "cas_store")
    assert f"s3cas://{e2e.bucket}/{PREFIX}" in described
    assert e2e.bucket in described


def _failing_run(e2e: E2E, name: str) -> tuple[str, list[str]]:
    """Run the pipeline, which must fail: ZenML's log of the run (the script's own uncaught
    error, ZenML's RuntimeError, is on stderr) and its "Failed to run step" lines."""
    result = subprocess.run(
        [sys.executable, str(e2e.workdir / APP.name), "run", str(e2e.base / f"run-{name}.json")],
        cwd=e2e.workdir,
        env=e2e.env(e2e.base / f"{name}-cache"),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode != 0
    step_log = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    return step_log, [line for line in step_log.splitlines() if "Failed to run step" in line]


def test_pipeline_run_offline_fails_with_one_clear_line(e2e: E2E) -> None:
    """S3 unreachable: the run fails with one line that says so, not pages of traceback."""
    e2e.server.stop()
    try:
        step_log, failed = _failing_run(e2e, "offline")
    finally:
        e2e.server.restart()
    assert len(failed) == 1 and "is unreachable" in failed[0], step_log[-3000:]
    assert "retry once the server is back" in failed[0]
    assert "Traceback" not in step_log, step_log[-3000:]
    assert "aiohttp" not in step_log and "botocore" not in step_log


def test_a_store_on_a_missing_bucket_fails_at_first_use_naming_the_bucket(e2e: E2E) -> None:
    """Registration cannot check the bucket (the registering machine may have no access);
    the first run says which bucket is missing, in one line."""
    missing = f"missing-{uuid.uuid4().hex[:10]}"
    e2e.zenml(
        "artifact-store", "register", "missing_store", "--flavor=s3cas", f"--path=s3cas://{missing}/zenml",
        "--authentication_secret=cas-e2e-aws",
        f"--client_kwargs={json.dumps({'endpoint_url': e2e.server.endpoint_url})}",
    )  # fmt: skip
    e2e.zenml("stack", "register", "missing_stack", "-a", "missing_store", "-o", "default", "--set")
    try:
        step_log, failed = _failing_run(e2e, "missing")
    finally:
        e2e.zenml("stack", "set", "cas_stack")
    assert len(failed) == 1, step_log[-3000:]
    assert f"bucket {missing!r} does not exist" in failed[0], failed[0]
    assert "create it" in failed[0]
    assert "Traceback" not in step_log, step_log[-3000:]
