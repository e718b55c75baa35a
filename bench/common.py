"""Shared pieces of the benchmark suite: the peers, the I/O loops, child-process environments.

The suite (``bench.suite``) runs every measurement that depends on process state in a
child process (``bench.worker``, ``bench.pipeline_app``); both sides import this module.
It never imports zenml at module level: the harness does not need it, and ZenML must be
isolated (``ZENML_CONFIG_PATH``) before its first import.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.support.zenml import make_component, zenml_environ

MiB = 2**20
GiB = 2**30
REPO = Path(__file__).resolve().parent.parent

#: The peers, in table order. ``cas`` first: every ratio is cas_store against one of the others.
PEERS = ("cas", "s3", "filecache", "local")
PEER_LABELS = {
    "cas": "cas_store (ZenML s3cas)",
    "s3": "ZenML S3 (s3fs)",
    "filecache": "fsspec filecache::s3",
    "local": "local disk",
}
#: Peers that talk to S3 (and so need the server and a bucket).
REMOTE_PEERS = ("cas", "s3", "filecache")


# --------------------------------------------------------------------------------------
# Environments of child processes
# --------------------------------------------------------------------------------------


def child_environ(base: Path, zenml_config: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every child: no real AWS identity, no developer ZenML setup.

    ``~/.aws`` is ignored, loopback bypasses proxies, every ``ZENML_*`` variable is dropped
    and ZenML gets a private config directory with analytics off, so nothing but the S3
    endpoint is ever contacted (``tests.support.zenml.zenml_environ``); HOME points into the
    benchmark's temporary directory and ``bench`` (and ``tests.support``) is importable.
    """
    env = zenml_environ(zenml_config, environ)
    for name in [n for n in env if n.startswith("CAS_STORE_")]:
        del env[name]
    home = base / "home"
    home.mkdir(exist_ok=True)
    env.update(
        {
            "ZENML_LOGGING_VERBOSITY": "WARN",
            "ZENML_ENABLE_RICH_TRACEBACK": "false",
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            # A cas_store without an explicit cache_dir must not touch the user's cache.
            "CAS_STORE_CACHE_DIR": str(base / "stray-cas-cache"),
            "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])]),
            "PYTHONUNBUFFERED": "1",
            "MPLBACKEND": "Agg",
        }
    )
    return env


# --------------------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------------------


class Peer:
    """One way of storing files, reduced to what the workloads call.

    ``path(rel)`` is the full path the peer's own API takes; ``open`` returns a file
    object for ``rb``/``wb``.
    """

    name = ""

    def path(self, rel: str) -> str:
        raise NotImplementedError

    def open(self, path: str, mode: str) -> Any:
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def listdir(self, path: str) -> list[Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _check_endpoint(kind: str, configured: Any, endpoint: str) -> None:
    # ZenML rewrites 127.0.0.1 to host.docker.internal when it believes it runs in a
    # container; the benchmark must only ever talk to the endpoint it was given.
    got = (configured or {}).get("endpoint_url")
    if got != endpoint:
        raise RuntimeError(f"{kind}: ZenML changed the endpoint {endpoint!r} to {got!r}; refusing to run")


class ZenMLPeer(Peer):
    """An artifact store (``cas`` = cas_store's ``S3CASArtifactStore``, ``s3`` = ZenML's
    ``S3ArtifactStore``) used through ZenML's ``BaseArtifactStore`` interface."""

    def __init__(self, name: str, store: Any, root: str) -> None:
        self.name = name
        self.store = store
        self.root = root

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def open(self, path: str, mode: str) -> Any:
        return self.store.open(path, mode)

    def exists(self, path: str) -> bool:
        return bool(self.store.exists(path))

    def listdir(self, path: str) -> list[Any]:
        return list(self.store.listdir(path))

    def close(self) -> None:
        self.store.cleanup()


class FileCachePeer(Peer):
    """fsspec's ``filecache::`` (WholeFileCacheFileSystem) over s3fs."""

    name = "filecache"

    def __init__(self, spec: Mapping[str, Any]) -> None:
        import fsspec

        self.fs = fsspec.filesystem(
            "filecache",
            target_protocol="s3",
            target_options={
                "key": spec["access_key"],
                "secret": spec["secret_key"],
                "client_kwargs": {"endpoint_url": spec["endpoint"]},
                "skip_instance_cache": True,
            },
            cache_storage=spec["cache_dir"],
            skip_instance_cache=True,
        )
        self.root = f"{spec['bucket']}/{spec['prefix']}"

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def open(self, path: str, mode: str) -> Any:
        return self.fs.open(path, mode)

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def listdir(self, path: str) -> list[Any]:
        return list(self.fs.ls(path, detail=False))


class LocalPeer(Peer):
    """Plain files on local disk: the ceiling for a cache hit."""

    name = "local"

    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def open(self, path: str, mode: str) -> Any:
        if "w" in mode:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        return open(path, mode)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def listdir(self, path: str) -> list[Any]:
        return os.listdir(path)


def make_peer(spec: Mapping[str, Any]) -> Peer:
    """Build the peer a task spec names. Every cache directory is the spec's (fresh) one."""
    name = spec["peer"]
    if name == "cas":
        from cas_store.zenml import S3CASArtifactStore, S3CASArtifactStoreConfig

        root = f"s3cas://{spec['bucket']}/{spec['prefix']}"
        config = S3CASArtifactStoreConfig(
            path=root,
            aws_access_key_id=spec["access_key"],
            aws_secret_access_key=spec["secret_key"],
            client_kwargs={"endpoint_url": spec["endpoint"]},
            cache_dir=spec["cache_dir"],
        )
        _check_endpoint("s3cas", config.client_kwargs, spec["endpoint"])
        store = make_component(S3CASArtifactStore, config, "s3cas", name_prefix="bench-")
        return ZenMLPeer("cas", store, root)
    if name == "s3":
        from zenml.integrations.s3.artifact_stores import S3ArtifactStore
        from zenml.integrations.s3.flavors import S3ArtifactStoreConfig

        root = f"s3://{spec['bucket']}/{spec['prefix']}"
        s3_config = S3ArtifactStoreConfig(
            path=root,
            key=spec["access_key"],
            secret=spec["secret_key"],
            client_kwargs={"endpoint_url": spec["endpoint"]},
        )
        _check_endpoint("s3", s3_config.client_kwargs, spec["endpoint"])
        s3_store = make_component(S3ArtifactStore, s3_config, "s3", name_prefix="bench-")
        return ZenMLPeer("s3", s3_store, root)
    if name == "filecache":
        return FileCachePeer(spec)
    if name == "local":
        return LocalPeer(spec["local_root"])
    raise ValueError(f"unknown peer {name!r}")


# --------------------------------------------------------------------------------------
# I/O loops and measurements
# --------------------------------------------------------------------------------------


def copy_in(src_path: str, dst: Any, chunk: int, buffer: bytearray | None = None) -> int:
    """Stream ``src_path`` into the open file ``dst`` in ``chunk``-byte writes.

    The harness never holds the file: at most one chunk is alive (``del`` before the next
    read). With ``buffer`` (allocated by the caller before a memory baseline), every chunk
    is read into it and written as a view, so the harness allocates nothing per chunk; the
    ``io`` contract lets a writer use the data only during ``write()``.
    """
    total = 0
    with open(src_path, "rb", buffering=0) as src:
        if buffer is not None:
            view = memoryview(buffer)
            while n := src.readinto(view):
                dst.write(view[:n])
                total += n
            return total
        while True:
            data = src.read(chunk)
            if not data:
                break
            dst.write(data)
            total += len(data)
            del data
    return total


def drain(f: Any, chunk: int, hasher: Any = None, buffer: bytearray | None = None) -> int:
    """Read ``f`` to the end in ``chunk``-byte reads (``readinto`` ``buffer`` if given);
    optionally hash what comes out."""
    total = 0
    if buffer is not None:
        view = memoryview(buffer)
        while n := f.readinto(view):
            if hasher is not None:
                hasher.update(view[:n])
            total += n
        return total
    while True:
        data = f.read(chunk)
        if not data:
            break
        if hasher is not None:
            hasher.update(data)
        total += len(data)
        del data
    return total


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def proc_status() -> dict[str, int]:
    """VmRSS/VmHWM/VmPeak of this process, in bytes (Linux ``/proc/self/status``)."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "VmPeak"):
                out[name] = int(value.split()[0]) * 1024
    return out


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0: ``clear_refs`` value 5).

    Without it, a peak reached earlier (imports, warm-up) would hide growth below it.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class SentRequest:
    """One HTTP request a client of this process sent, and the length of its response body."""

    method: str
    path: str  # percent-decoded URL path: ``/bucket/key`` (path-style) or ``/key``
    range: str | None  # the request's Range header
    response_bytes: int | None  # the response's Content-Length, if it came

    @property
    def asked_bytes(self) -> int:
        """What the request asked for: its range's length, else the response's length (a
        request cancelled before its response, such as read-ahead at close, still counts)."""
        asked = range_length(self.range)
        return asked if asked is not None else self.response_bytes or 0


def range_length(header: str | None) -> int | None:
    """The length of a ``bytes=a-b`` range; None for anything else."""
    if not header or not header.startswith("bytes="):
        return None
    start, _, end = header.removeprefix("bytes=").partition("-")
    return int(end) - int(start) + 1 if start.isdigit() and end.isdigit() else None


class RequestCounter:
    """Every HTTP request botocore or aiobotocore sends to ``endpoint`` from now on.

    Counted at ``Endpoint._send`` (each attempt, retries included, from any thread), as
    ``bench.pipeline_app`` counts them, with the Range asked for and the response's length.
    Installing patches the two classes (once per process); clients created before count too.
    """

    _active: list[RequestCounter] = []
    _installed = False

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._lock = threading.Lock()
        self._requests: list[SentRequest] = []
        _install_counting()
        RequestCounter._active.append(self)

    @property
    def requests(self) -> list[SentRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def _note(self, request: Any, response: Any) -> None:
        url = str(request.url)
        if not url.startswith(self.endpoint):
            return
        length = _text(getattr(response, "headers", {}).get("content-length"))
        sent = SentRequest(
            str(_text(request.method)).upper(),
            unquote(urlsplit(url).path),
            _text(request.headers.get("Range")),
            int(length) if length is not None else None,
        )
        with self._lock:
            self._requests.append(sent)


def _text(value: Any) -> str | None:
    """A header value as text (botocore keeps some as bytes)."""
    if value is None:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _install_counting() -> None:
    if RequestCounter._installed:
        return
    import aiobotocore.endpoint
    import botocore.endpoint

    sync_send = botocore.endpoint.Endpoint._send
    async_send = aiobotocore.endpoint.AioEndpoint._send

    def note(request: Any, response: Any) -> None:
        for counter in RequestCounter._active:
            counter._note(request, response)

    def counting_send(self: Any, request: Any) -> Any:
        response = None
        try:
            response = sync_send(self, request)
            return response
        finally:
            note(request, response)

    async def counting_async_send(self: Any, request: Any) -> Any:
        response = None
        try:
            response = await async_send(self, request)
            return response
        finally:
            note(request, response)

    botocore.endpoint.Endpoint._send = counting_send
    aiobotocore.endpoint.AioEndpoint._send = counting_async_send
    RequestCounter._installed = True


def small_payload(seed: str, index: int, size: int) -> bytes:
    """Deterministic, incompressible content of small file ``index``."""
    import random

    return random.Random(f"{seed}/{index}").randbytes(size)


def write_random_file(path: Path, size: int, seed: str, chunk: int = 8 * MiB) -> str:
    """Write ``size`` pseudo-random bytes to ``path`` in chunks; returns their xxh3-128 digest."""
    import random

    import xxhash

    rng = random.Random(seed)
    hasher = xxhash.xxh3_128()
    with open(path, "wb") as f:
        left = size
        while left:
            data = rng.randbytes(min(chunk, left))
            hasher.update(data)
            f.write(data)
            left -= len(data)
    return hasher.hexdigest()
