"""The ZenML dashboard's view of an ``s3cas`` artifact store, through a real local ZenML server.

``zenml login --local`` starts ZenML's local server (its daemon: uvicorn on 127.0.0.1 and
a free port, on the SQLite database of an isolated ``ZENML_CONFIG_PATH``). Against that
server a fresh process registers the ``s3cas`` flavor, a secret with the S3 credentials, an
``s3cas`` artifact store over moto (on 127.0.0.1) authenticated by that secret and a stack,
then runs a small pipeline: a DataFrame (two CSV visualizations, pandas metadata), an
HTML report (above the inline threshold: a blob), a dict (JSON) and a str (JSON), plus run
metadata logged by the step. The test then reads what the dashboard shows through the
server's REST API, logged in as the dashboard is (``POST /api/v1/login``, cookie + CSRF
token): artifact versions with their metadata, their visualizations, the step's metadata and
an artifact's download archive.

The server loads the visualizations itself, through the ``s3cas`` flavor (it runs in this
environment, so ``cas_store`` is importable) and the credentials of the ZenML secret: the
test checks the S3 requests it makes (manifest entries and blobs, signed with the secret's
key, not the environment's dummy key), then stops S3: what the server read before comes
from its cas_store cache, a visualization it never read fails. The server is stopped with
``zenml logout --local`` (and killed by its pid if it survives that).
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from cas_store.layout import Root
from tests.support.clients import boto3_client, make_bucket
from tests.support.moto import MotoServer
from tests.support.requests import RequestLog
from tests.support.zenml import bucket_objects, zenml_environ
from tests.support.zenml_server import DashboardSession, LocalZenMLServer

PREFIX = "zenml"
ACCESS_KEY = "cas-dashboard-access-key"
SECRET_KEY = f"cas-dashboard-secret-{uuid.uuid4().hex}"
SECRET_NAME = "cas-dashboard-aws"
#: Read through the server while S3 is up (``note`` is read only once S3 is down).
READ = ("frame", "report", "summary")

# The pipeline, run by the test in a fresh process from an empty working directory (ZenML
# resolves the steps' source from the script there). No `from __future__ import annotations`:
# ZenML reads the output names from the evaluated return annotation.
APP = """
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import pandas as pd
from zenml import log_metadata, pipeline, step
from zenml.client import Client
from zenml.enums import StackComponentType
from zenml.types import HTMLString


def make_report() -> str:
    rows = "".join(f"<tr><td>row-{i}</td><td>{i * i}</td></tr>" for i in range(3000))
    return f"<html><body><h1>cas-dashboard-report</h1><table>{rows}</table></body></html>"


@step
def produce() -> tuple[
    Annotated[pd.DataFrame, "frame"],
    Annotated[HTMLString, "report"],
    Annotated[dict, "summary"],
    Annotated[str, "note"],
]:
    log_metadata(metadata={"cas_step_metric": 0.875})
    log_metadata(metadata={"cas_frame_note": "iris-sample"}, artifact_name="frame", infer_artifact=True)
    frame = pd.DataFrame(
        {"sepal_length": [5.1, 4.9, 6.3, 5.8], "species": ["setosa", "setosa", "virginica", "virginica"]}
    )
    report = HTMLString(make_report())
    summary = {"rows": 4, "name": "cas-dashboard-summary"}
    note = "cas-dashboard-note"
    return frame, report, summary, note


@pipeline(enable_cache=False)
def dashboard_pipeline() -> None:
    produce()


def register() -> None:
    client = Client()
    client.create_flavor(
        source="cas_store.zenml.S3CASArtifactStoreFlavor", component_type=StackComponentType.ARTIFACT_STORE
    )
    client.create_secret(
        name=os.environ["CAS_DASHBOARD_SECRET_NAME"],
        values={
            "aws_access_key_id": os.environ["CAS_DASHBOARD_ACCESS_KEY"],
            "aws_secret_access_key": os.environ["CAS_DASHBOARD_SECRET_KEY"],
        },
    )
    client.create_stack_component(
        name="cas_store",
        flavor="s3cas",
        component_type=StackComponentType.ARTIFACT_STORE,
        configuration={
            "path": os.environ["CAS_DASHBOARD_ROOT"],
            "authentication_secret": os.environ["CAS_DASHBOARD_SECRET_NAME"],
            "client_kwargs": {"endpoint_url": os.environ["CAS_DASHBOARD_ENDPOINT"]},
        },
    )
    client.create_stack(
        name="cas_stack",
        components={
            StackComponentType.ARTIFACT_STORE: "cas_store",
            StackComponentType.ORCHESTRATOR: "default",
        },
    )
    client.activate_stack("cas_stack")


if __name__ == "__main__":
    register()
    result = dashboard_pipeline()
    client = Client()
    run = client.get_pipeline_run(result.id)
    step_run = run.steps["produce"]
    report = make_report().encode()
    record = {
        "run_id": str(run.id),
        "step_id": str(step_run.id),
        "status": str(run.status),
        "server": client.zen_store.url,
        "store_type": str(client.zen_store.type),
        "artifact_store": type(client.active_stack.artifact_store).__name__,
        "artifacts": {name: str(step_run.outputs[name][0].id) for name in step_run.outputs},
        "uris": {name: step_run.outputs[name][0].uri for name in step_run.outputs},
        "report_sha256": hashlib.sha256(report).hexdigest(),
        "report_size": len(report),
    }
    Path(sys.argv[1]).write_text(json.dumps(record, indent=1))
"""


@dataclass
class Dashboard:
    moto: MotoServer
    bucket: str
    base: Path
    server: LocalZenMLServer
    run: dict[str, Any]
    versions: dict[str, Any] = field(default_factory=dict)  # GET /artifact_versions/{id}?hydrate=true
    visualizations: dict[str, list[Any]] = field(default_factory=dict)  # GET .../visualize?index=i
    step: dict[str, Any] = field(default_factory=dict)
    archive: dict[str, bytes] = field(default_factory=dict)  # the frame's download, by member name
    read_log: RequestLog | None = None  # S3 requests while the server answered the reads
    objects: dict[str, int] = field(default_factory=dict)  # the bucket's objects after the reads
    offline_cached: requests.Response | None = None
    offline_unread: requests.Response | None = None
    offline_seconds: float = 0.0

    @property
    def root(self) -> Root:
        return Root.parse(f"s3cas://{self.bucket}/{PREFIX}")

    def vis_uris(self, name: str) -> list[str]:
        return [v["body"]["uri"] for v in self.versions[name]["metadata"]["visualizations"]]


def _read_through_the_server(state: Dashboard, rest: DashboardSession) -> None:
    """What the dashboard fetches for the run's artifacts, while S3 is up."""
    artifacts = state.run["artifacts"]
    for name in READ:
        version = rest.get(f"/artifact_versions/{artifacts[name]}", {"hydrate": "true"})
        state.versions[name] = version
        count = len(version["metadata"]["visualizations"] or [])
        state.visualizations[name] = [
            rest.get(f"/artifact_versions/{artifacts[name]}/visualize", {"index": i}) for i in range(count)
        ]
    state.versions["note"] = rest.get(f"/artifact_versions/{artifacts['note']}", {"hydrate": "true"})
    state.step = rest.get(f"/steps/{state.run['step_id']}", {"hydrate": "true"})
    # The dashboard's download button: a short-lived token, then the archive (no CSRF header).
    token = rest.get(f"/artifact_versions/{artifacts['frame']}/download-token")
    data = rest.http.get(
        f"{rest.url}/api/v1/artifact_versions/{artifacts['frame']}/data",
        params={"token": token},
        timeout=rest.timeout,
    )
    assert data.status_code == 200, data.text[:2000]
    with tarfile.open(fileobj=io.BytesIO(data.content)) as tar:
        for member in tar.getmembers():
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None:
                state.archive[member.name] = extracted.read()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    base = tmp_path_factory.mktemp("zenml-dashboard")
    workdir = base / "work"
    workdir.mkdir()
    (base / "home").mkdir()
    (workdir / "dashboard_app.py").write_text(APP)
    moto = MotoServer()  # our own: the test stops it
    moto.start()
    env = zenml_environ(
        base / "zenml-config",
        HOME=str(base / "home"),
        XDG_CONFIG_HOME=str(base / "home" / ".config"),
        CAS_STORE_CACHE_DIR=str(base / "server-cache"),  # the server daemon inherits this environment
        ZENML_LOGGING_COLORS_DISABLED="true",
    )
    server = LocalZenMLServer(env, workdir)
    try:
        bucket = f"dash-{uuid.uuid4().hex[:10]}"
        make_bucket(moto.endpoint_url, bucket, moto.access_key, moto.secret_key)
        server.start()
        app = subprocess.run(
            [sys.executable, "dashboard_app.py", str(base / "run.json")],
            cwd=workdir,
            env={
                **env,
                "CAS_STORE_CACHE_DIR": str(base / "pipeline-cache"),  # not the server's
                "CAS_DASHBOARD_SECRET_NAME": SECRET_NAME,
                "CAS_DASHBOARD_ACCESS_KEY": ACCESS_KEY,
                "CAS_DASHBOARD_SECRET_KEY": SECRET_KEY,
                "CAS_DASHBOARD_ROOT": f"s3cas://{bucket}/{PREFIX}",
                "CAS_DASHBOARD_ENDPOINT": moto.endpoint_url,
            },
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert app.returncode == 0, (
            f"the pipeline failed:\n{(app.stdout + app.stderr)[-6000:]}\n"
            f"server log:\n{server.read_log()[-3000:]}"
        )
        state = Dashboard(moto, bucket, base, server, json.loads((base / "run.json").read_text()))

        rest = DashboardSession(server.url)
        try:
            with moto.record() as log:
                _read_through_the_server(state, rest)
            state.read_log = log
            state.objects = bucket_objects(boto3_client(moto), bucket)
            # S3 goes away: the server keeps what its cas_store cache holds, and nothing else.
            moto.stop()
            start = time.perf_counter()
            artifacts = state.run["artifacts"]
            state.offline_cached = rest.request(f"/artifact_versions/{artifacts['report']}/visualize")
            state.offline_unread = rest.request(f"/artifact_versions/{artifacts['note']}/visualize")
            state.offline_seconds = time.perf_counter() - start
        finally:
            rest.close()
        yield state
    finally:
        try:
            server.stop()
        finally:
            moto.stop()
    assert not server.running, f"the ZenML server (pid {server.pid}) survived zenml logout --local"


def test_pipeline_ran_on_the_local_server_with_the_s3cas_stack(dashboard: Dashboard) -> None:
    run = dashboard.run
    assert run["status"] == "completed"
    assert run["server"] == dashboard.server.url  # the client talked to the local server
    assert run["store_type"] == "rest"
    assert run["artifact_store"] == "S3CASArtifactStore"
    for name, uri in run["uris"].items():
        assert uri.startswith(f"s3cas://{dashboard.bucket}/{PREFIX}/"), name
    info = DashboardSession(dashboard.server.url)  # the server answers as a local deployment
    try:
        assert info.get("/info")["deployment_type"] == "local"
    finally:
        info.close()


def test_visualizations_load_through_the_server(dashboard: Dashboard) -> None:
    vis = dashboard.visualizations
    assert [v["type"] for v in vis["frame"]] == ["csv", "csv"]
    describe, sample = (v["value"] for v in vis["frame"])
    assert describe.splitlines()[0] == ",sepal_length"  # df.describe() of the numeric column
    assert "mean,5.525" in describe
    assert sample.splitlines() == [
        ",sepal_length,species",
        "0,5.1,setosa",
        "1,4.9,setosa",
        "2,6.3,virginica",
        "3,5.8,virginica",
    ]
    [report] = vis["report"]
    assert report["type"] == "html"
    html = report["value"].encode()
    assert len(html) == dashboard.run["report_size"] > 16 * 1024  # a blob, not an inline entry
    assert hashlib.sha256(html).hexdigest() == dashboard.run["report_sha256"]
    [summary] = vis["summary"]
    assert summary["type"] == "json"
    assert json.loads(summary["value"]) == {"rows": 4, "name": "cas-dashboard-summary"}
    for name in READ:
        assert all(uri.startswith(dashboard.run["uris"][name] + "/") for uri in dashboard.vis_uris(name))


def test_metadata_loads_through_the_server(dashboard: Dashboard) -> None:
    frame = dashboard.versions["frame"]["metadata"]["run_metadata"]
    assert frame["shape"] == [4, 2]
    assert set(frame["dtype"]) == {"sepal_length", "species"}
    assert frame["mean"] == {"sepal_length": 5.525}
    assert frame["min"] == {"sepal_length": 4.9}
    assert frame["max"] == {"sepal_length": 6.3}
    assert frame["cas_frame_note"] == "iris-sample"  # log_metadata(..., artifact_name="frame")
    # ZenML measures the artifact's size through the artifact store (its walk and size).
    files = dashboard.archive
    assert frame["storage_size"] == sum(len(content) for content in files.values())
    assert dashboard.versions["summary"]["metadata"]["run_metadata"]["length"] == 2
    assert (
        dashboard.versions["report"]["metadata"]["run_metadata"]["storage_size"]
        == dashboard.run["report_size"]
    )
    assert dashboard.step["metadata"]["run_metadata"]["cas_step_metric"] == 0.875
    for name in (*READ, "note"):
        body = dashboard.versions[name]["body"]
        assert body["uri"] == dashboard.run["uris"][name]
        assert body["artifact_store_id"]


def test_artifact_download_archive_comes_from_the_store(dashboard: Dashboard) -> None:
    files = dashboard.archive
    assert set(files) == {"describe.csv", "sample.csv", "df.parquet.gzip"}
    assert files["sample.csv"].decode() == dashboard.visualizations["frame"][1]["value"]
    assert files["df.parquet.gzip"].startswith(b"PAR1")


def test_the_server_reads_the_bucket_through_s3cas_with_the_secret(dashboard: Dashboard) -> None:
    log = dashboard.read_log
    assert log is not None
    root = dashboard.root
    requests_ = [r for r in log.requests if r.bucket == dashboard.bucket]
    keys = {r.key for r in requests_ if r.method == "GET" and r.key}
    # Every visualization the server returned was an s3cas manifest entry it fetched...
    for name in READ:
        for uri in dashboard.vis_uris(name):
            assert root.manifest_key(root.relative(uri)) in keys, uri
    # ... the report's content a blob (the other visualizations are inline in their entries).
    assert any(key.startswith(root.key("blobs") + "/") for key in keys), sorted(keys)
    # They are in the bucket under the store's manifest, and nothing lives at the logical
    # paths themselves: only s3cas reads this layout.
    for name in READ:
        for uri in dashboard.vis_uris(name):
            assert root.manifest_key(root.relative(uri)) in dashboard.objects, uri
    assert not any(key.startswith(f"{PREFIX}/produce/") for key in dashboard.objects)
    # Signed with the key from the ZenML secret, not the environment's dummy key.
    signers = {r.headers.get("authorization", "").split("Credential=")[-1].split("/")[0] for r in requests_}
    assert signers == {ACCESS_KEY}
    assert not any(r.method in ("PUT", "POST", "DELETE") for r in requests_), "reads only"
    # The server's own cas_store cache (from the environment it inherited) holds the report.
    assert any((dashboard.base / "server-cache").rglob("*")), "the server's cache directory is empty"


def test_with_s3_down_the_server_serves_what_it_cached_and_fails_the_rest(dashboard: Dashboard) -> None:
    cached, unread = dashboard.offline_cached, dashboard.offline_unread
    assert cached is not None and unread is not None
    assert cached.status_code == 200, cached.text[:2000]
    assert cached.json()["value"] == dashboard.visualizations["report"][0]["value"]
    # The note's entry was never read by the server: with S3 gone it cannot be loaded.
    assert unread.status_code == 500, unread.text[:2000]
    detail = " ".join(map(str, unread.json()["detail"]))
    assert "is unreachable" in detail and dashboard.run["uris"]["note"] in detail, detail  # cas_store's error
    assert "cas-dashboard-note" not in unread.text
    assert dashboard.offline_seconds < 30  # S3 counts as unreachable quickly; no long hang
