"""cas_store as a user installs it: the built wheel, with its ``zenml`` extra, in a fresh venv.

The module fixture builds a regular (non-editable) wheel from a copy of the files git
tracks, installs ``cas_store-*.whl[zenml]`` under ``constraints.txt`` into a new virtual
environment (tests/support/venv.py: ``uv pip`` when uv is installed, else pip), and then,
in that venv only, with its own ZenML configuration, ``HOME`` and working directories
outside the repository, against moto on 127.0.0.1:

1. registers the flavor, a secret, an ``s3cas`` artifact store and a stack with the ZenML
   CLI (as docs/zenml.md shows) and sets the stack active;
2. runs a small pipeline (a dict, a numpy array and bytes; step caching off) from its
   own directory;
3. loads the artifacts back with ``python -c`` from another directory, one without
   ``.zen`` and without the pipeline's file. ZenML (0.98.0) loads every stack component's
   flavor from a bare import path and first wants a source root for it: the ``.zen``
   repository, else the directory of ``__main__.__file__``, which ``python -c`` lacks.
   This failed with "Unable to determine source root", editable install or not.

Also: ``cas-store --help`` works as a console script, and ``fsspec.filesystem("s3cas")``
resolves through the ``fsspec.specs`` entry point without cas_store being imported first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import make_bucket
from tests.support.moto import MotoServer
from tests.support.venv import (
    Venv,
    WheelContents,
    build_wheel,
    copy_tracked_files,
    create_venv,
)
from tests.support.zenml import zenml_environ

#: With uv the module takes ~40 s; with pip ~110 s (its install alone 35-55 s).
pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
PREFIX = "zenml"
SECRET_KEY = f"cas-wheel-secret-{uuid.uuid4().hex}"

#: Written to the pipeline's directory and run from there.
PIPELINE = """\
import json
import sys
from typing import Annotated

import numpy as np
from zenml import pipeline, step


@step
def produce() -> tuple[
    Annotated[dict, "summary"],
    Annotated[np.ndarray, "matrix"],
    Annotated[bytes, "payload"],
]:
    summary = {"name": "wheel-e2e", "values": [1, 2, 3], "nested": {"ok": True}}
    matrix = np.arange(24, dtype=np.int32).reshape(4, 6)
    payload = bytes(range(256)) * 64
    return summary, matrix, payload


@pipeline(enable_cache=False)
def wheel_pipeline() -> None:
    produce()


if __name__ == "__main__":
    from zenml.client import Client

    run = Client().get_pipeline_run(wheel_pipeline().id)
    outputs = run.steps["produce"].outputs
    record = {
        "status": str(run.status),
        "artifacts": {name: str(versions[0].id) for name, versions in outputs.items()},
        "uris": {name: versions[0].uri for name, versions in outputs.items()},
        "materializers": {name: versions[0].materializer.import_path for name, versions in outputs.items()},
        "artifact_store": type(Client().active_stack.artifact_store).__name__,
    }
    with open(sys.argv[1], "w") as out:
        json.dump(record, out)
"""

#: Run as ``python -c LOAD RUN.json OUT.json`` from a directory without ``.zen``.
LOAD = """\
import hashlib, json, sys
from zenml.client import Client
run = json.load(open(sys.argv[1]))
client = Client()
loaded = {name: client.get_artifact_version(aid).load() for name, aid in run["artifacts"].items()}
matrix, payload = loaded["matrix"], loaded["payload"]
json.dump({
    "repository": str(Client.find_repository()),
    "summary": loaded["summary"],
    "matrix": {"type": type(matrix).__name__, "dtype": str(matrix.dtype), "values": matrix.tolist()},
    "payload": {"type": type(payload).__name__, "sha256": hashlib.sha256(payload).hexdigest()},
}, open(sys.argv[2], "w"))
"""

#: Run as ``python -c PROBE ENDPOINT BUCKET OUT.json``: where cas_store comes from, and
#: the fsspec entry point (resolved before anything imports cas_store).
PROBE = """\
import json, sys, sysconfig
from importlib import metadata
import fsspec
endpoint, bucket, out = sys.argv[1:]
imported_before = "cas_store" in sys.modules
cls = fsspec.get_filesystem_class("s3cas")
fs = fsspec.filesystem(
    "s3cas", root=f"s3cas://{bucket}/fsspec", key="k", secret="s",
    client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True,
)
fs.pipe_file(f"s3cas://{bucket}/fsspec/hello.txt", b"hello from the wheel")
import cas_store
dist = metadata.distribution("cas_store")
json.dump({
    "imported_before": imported_before,
    "class": f"{cls.__module__}.{cls.__qualname__}",
    "read": fs.cat_file(f"s3cas://{bucket}/fsspec/hello.txt").decode(),
    "file": cas_store.__file__,
    "purelib": sysconfig.get_paths()["purelib"],
    "prefix": sys.prefix,
    "direct_url": dist.read_text("direct_url.json"),
    "sys_path": sys.path,
}, open(out, "w"))
"""


@dataclass
class WheelE2E:
    base: Path
    venv: Venv
    server: MotoServer
    bucket: str
    wheel: WheelContents
    seconds: dict[str, float] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    results: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return self.venv.environ(
            zenml_environ(
                self.base / "zenml-config",
                HOME=str(self.base / "home"),
                XDG_CONFIG_HOME=str(self.base / "home" / ".config"),
                CAS_STORE_CACHE_DIR=str(self.base / "cache"),
            )
        )

    def run(self, args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """Run ``args`` with the venv's environment; the result (stdout and stderr in one)."""
        start = time.perf_counter()
        result = subprocess.run(
            args,
            cwd=cwd,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        label = " ".join([Path(args[0]).name, *(a.splitlines()[0][:20] for a in args[1:3])])
        self.seconds[label] = time.perf_counter() - start
        self.outputs.append(result.stdout)
        return result

    def check(self, args: list[str], cwd: Path) -> str:
        """Run ``args`` (a step the later ones depend on); its output, if it succeeded."""
        result = self.run(args, cwd)
        assert result.returncode == 0, f"{' '.join(args[:4])} failed in {cwd}:\n{result.stdout[-6000:]}"
        return result.stdout

    def zenml(self, *args: str) -> str:
        return self.check([str(self.venv.bin / "zenml"), *args], cwd=self.base / "pipeline")

    def python_c(self, name: str, code: str, *args: str) -> None:
        """``python -c code args`` from the directory that is neither the repository nor the
        pipeline's, kept as ``results[name]`` for the tests to check."""
        self.results[name] = self.run([str(self.venv.python), "-c", code, *args], cwd=self.elsewhere)

    @property
    def elsewhere(self) -> Path:
        return self.base / "elsewhere"

    def result_json(self, name: str) -> Any:
        """The JSON file the ``python -c`` run ``name`` wrote; fails with its output if it failed."""
        result = self.results[name]
        assert result.returncode == 0, (
            f"{name} (python -c, in {self.elsewhere}) failed:\n{result.stdout[-6000:]}"
        )
        return json.loads((self.base / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def wheel_e2e(
    tmp_path_factory: pytest.TempPathFactory, moto: MotoServer, pytestconfig: pytest.Config
) -> Iterator[WheelE2E]:
    start = time.perf_counter()
    base = tmp_path_factory.mktemp("wheel-install")
    assert not base.resolve().is_relative_to(REPO), "the venv must not run inside the repository"
    for name in ("src", "dist", "home", "pipeline", "elsewhere"):
        (base / name).mkdir()
    seconds: dict[str, float] = {}

    copy_tracked_files(REPO, base / "src")
    try:
        wheel = build_wheel(base / "src", base / "dist")
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    seconds["build"] = time.perf_counter() - start
    # The pins of the tox environment that runs the test (tox -e zenml-lowest: the lowest ZenML).
    constraints = Path(os.environ.get("PIP_CONSTRAINT") or base / "src" / "constraints.txt")
    venv = create_venv(base / "venv", f"{wheel}[zenml]", constraints, cwd=base / "elsewhere")
    seconds.update(venv.seconds)

    bucket = f"wheel-{uuid.uuid4().hex[:10]}"
    make_bucket(moto.endpoint_url, bucket, moto.access_key, moto.secret_key)
    state = WheelE2E(base, venv, moto, bucket, WheelContents.read(wheel), seconds)
    (base / "pipeline" / "wheel_pipeline.py").write_text(PIPELINE)

    state.zenml("artifact-store", "flavor", "register", "cas_store.zenml.S3CASArtifactStoreFlavor")
    state.zenml(
        "secret", "create", "cas-wheel-aws",
        f"--aws_access_key_id={moto.access_key}", f"--aws_secret_access_key={SECRET_KEY}",
    )  # fmt: skip
    state.zenml(
        "artifact-store", "register", "cas_wheel", "--flavor=s3cas", f"--path=s3cas://{bucket}/{PREFIX}",
        "--authentication_secret=cas-wheel-aws",
        f"--client_kwargs={json.dumps({'endpoint_url': moto.endpoint_url})}",
    )  # fmt: skip
    state.zenml("stack", "register", "cas_wheel_stack", "-a", "cas_wheel", "-o", "default")
    state.zenml("stack", "set", "cas_wheel_stack")
    state.check([str(venv.python), "wheel_pipeline.py", str(base / "run.json")], cwd=base / "pipeline")
    # Each checked by its own test: one failing does not hide the others.
    state.python_c("load", LOAD, str(base / "run.json"), str(base / "load.json"))
    state.results["help"] = state.run([str(venv.bin / "cas-store"), "--help"], cwd=state.elsewhere)
    state.python_c("probe", PROBE, moto.endpoint_url, bucket, str(base / "probe.json"))
    seconds["total"] = time.perf_counter() - start
    timings = ", ".join(f"{name} {value:.1f}s" for name, value in seconds.items())
    reporter = pytestconfig.pluginmanager.getplugin("terminalreporter")
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nwheel install e2e ({venv.installer}): {timings}")
    yield state
    shutil.rmtree(venv.path, ignore_errors=True)  # up to 1 GB (pip); the logs and JSON stay


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def test_wheel_holds_the_package_and_its_entry_points(wheel_e2e: WheelE2E) -> None:
    wheel = wheel_e2e.wheel
    modules = {n for n in wheel.names if n.endswith(".py")}
    for module in ("__init__", "zenml", "zenml_scheme", "filesystem", "store", "cli/__init__"):
        assert f"cas_store/{module}.py" in modules, sorted(modules)
    assert all(n.startswith(("cas_store/", "cas_store-")) for n in wheel.names), wheel.names
    assert not any("__editable__" in n or n.endswith(".pth") for n in wheel.names), "an editable wheel"
    assert wheel.entry_points["fsspec.specs"] == {"s3cas": "cas_store.filesystem:CASFileSystem"}
    assert wheel.entry_points["zenml.init_hooks"] == {"s3cas": "cas_store.zenml_scheme:register_scheme"}
    assert wheel.entry_points["console_scripts"] == {"cas-store": "cas_store.cli:main"}
    assert "Provides-Extra: zenml" in wheel.metadata


def test_installed_from_the_wheel_not_from_the_repository(wheel_e2e: WheelE2E) -> None:
    probe = wheel_e2e.result_json("probe")
    venv = wheel_e2e.venv.path.resolve()
    assert Path(probe["prefix"]).resolve() == venv
    assert Path(probe["file"]).resolve() == Path(probe["purelib"]).resolve() / "cas_store" / "__init__.py"
    assert Path(probe["file"]).resolve().is_relative_to(venv)
    direct_url = json.loads(probe["direct_url"])
    assert direct_url["url"].endswith(".whl") and "dir_info" not in direct_url, direct_url
    assert not any(str(REPO) in entry for entry in probe["sys_path"]), probe["sys_path"]


def test_fsspec_resolves_s3cas_through_the_entry_point(wheel_e2e: WheelE2E) -> None:
    probe = wheel_e2e.result_json("probe")
    assert probe["imported_before"] is False
    assert probe["class"] == "cas_store.filesystem.CASFileSystem"
    assert probe["read"] == "hello from the wheel"


def test_console_script_runs(wheel_e2e: WheelE2E) -> None:
    result = wheel_e2e.results["help"]
    assert result.returncode == 0, result.stdout
    help_text = result.stdout
    assert "cas-store" in help_text
    assert "gc" in help_text


def test_flavor_and_stack_registered_through_the_cli(wheel_e2e: WheelE2E) -> None:
    flavor, secret, store, stack, active = wheel_e2e.outputs[:5]
    assert "Successfully registered new flavor 's3cas'" in flavor
    assert "successfully created" in secret
    assert "Successfully registered artifact_store `cas_wheel`" in store
    assert "cas_wheel_stack" in stack and "cas_wheel_stack" in active


def test_pipeline_runs_on_the_s3cas_stack(wheel_e2e: WheelE2E) -> None:
    run = _json(wheel_e2e.base / "run.json")
    assert run["status"] == "completed"
    assert run["artifact_store"] == "S3CASArtifactStore"
    assert set(run["artifacts"]) == {"summary", "matrix", "payload"}
    for uri in run["uris"].values():
        assert uri.startswith(f"s3cas://{wheel_e2e.bucket}/{PREFIX}/")
    # ZenML's own materializers: nothing the load needs from the pipeline's source tree.
    assert all(path.startswith("zenml.") for path in run["materializers"].values()), run["materializers"]
    assert not (wheel_e2e.base / "pipeline" / ".zen").exists()


def test_artifacts_load_with_python_c_from_another_directory(wheel_e2e: WheelE2E) -> None:
    loaded = wheel_e2e.result_json("load")
    assert loaded["repository"] == "None"  # no .zen above that directory: no source root from it
    assert loaded["summary"] == {"name": "wheel-e2e", "values": [1, 2, 3], "nested": {"ok": True}}
    assert loaded["matrix"] == {
        "type": "ndarray",
        "dtype": "int32",
        "values": [list(range(row * 6, row * 6 + 6)) for row in range(4)],
    }
    assert loaded["payload"] == {
        "type": "bytes",
        "sha256": hashlib.sha256(bytes(range(256)) * 64).hexdigest(),
    }
    assert not (wheel_e2e.base / "elsewhere" / ".zen").exists()


def test_secret_never_reaches_output(wheel_e2e: WheelE2E) -> None:
    for output in wheel_e2e.outputs:
        assert SECRET_KEY not in output
