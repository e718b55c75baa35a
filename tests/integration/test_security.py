"""Security: credentials never leave botocore, and the local cache is private to its user.

The credential scan runs a workload with distinctive fake credentials (access key, secret
key and session token) and cas_store's own logging at DEBUG: writes, reads, listings, a
copy and a removal, a failure with wrong credentials (SeaweedFS checks signatures; moto
does not), an offline failure, and the CLI with ``--json`` and ``-vv`` (verify, gc, stats,
ls, du, prefetch). Then it searches everything cas_store produced for each secret: log
records, exception messages, reprs and tracebacks with their chained causes, the CLI's
stdout and stderr, every file in the cache directory (bytes, SQLite files included) and
every object in the buckets. botocore's own DEBUG logging is not cas_store's and does show
request headers (docs/security.md); it is left at its default level here.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cas_store import CASFileSystem, CredentialsError, StoreOfflineError
from cas_store.cli import main
from cas_store.fileobj import wait_background
from tests.support.clients import boto3_client, make_bucket
from tests.support.moto import MotoServer
from tests.support.ports import free_ports
from tests.support.seaweed import SeaweedServer

MiB = 2**20

ACCESS_KEY = "AKIAXSECURITYTESTKEY7"
SECRET_KEY = "s3cr3t-KEY-must-never-leak-4c1d"
SESSION_TOKEN = "T0KEN-must-never-leak-session-8e2f"
SECRETS = (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)


def _exception_texts(exc: BaseException) -> Iterator[str]:
    """str, repr and formatted traceback of ``exc`` and of every exception chained to it."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield str(item)
        yield repr(item)
        yield repr(item.args)
        yield "".join(traceback.format_exception(item))
        todo += [item.__cause__, item.__context__]


def _files(directory: Path) -> Iterator[Path]:
    for path in directory.rglob("*"):
        if path.is_file():
            yield path


def _objects(client: Any, bucket: str) -> Iterator[tuple[str, bytes]]:
    for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        yield obj["Key"], client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()


def _leaks(haystacks: dict[str, bytes]) -> list[tuple[str, str]]:
    """(where, which secret) for every secret found, as text or in the bytes of a file."""
    return [(where, s) for where, data in haystacks.items() for s in SECRETS if s.encode() in data]


@pytest.mark.seaweedfs
def test_credentials_appear_nowhere(
    moto: MotoServer,
    seaweedfs: SeaweedServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG, logger="cas_store")
    bucket = "security-scan"
    make_bucket(moto.endpoint_url, bucket, moto.access_key, moto.secret_key)
    cache = tmp_path / "cache"
    root = f"s3cas://{bucket}/store"
    credentials = {"key": ACCESS_KEY, "secret": SECRET_KEY, "token": SESSION_TOKEN}
    texts: dict[str, bytes] = {}

    # The workload, on moto (which takes any credentials).
    fs = CASFileSystem(
        root=root,
        client_kwargs={"endpoint_url": moto.endpoint_url},
        cache_dir=str(cache),
        chunk_size=MiB,
        skip_instance_cache=True,
        **credentials,
    )
    data = os.urandom(3 * MiB + 7)
    fs.pipe(f"{root}/big.bin", data)
    fs.pipe(f"{root}/small.txt", b"inline content")
    assert fs.cat(f"{root}/big.bin") == data
    assert fs.cat_file(f"{root}/big.bin", 10, 20) == data[10:20]
    wait_background()
    fs.ls(root, detail=True)
    fs.info(f"{root}/small.txt")
    fs.copy(f"{root}/big.bin", f"{root}/copy.bin")
    fs.rm(f"{root}/copy.bin")
    texts["repr(config)"] = repr(fs.config).encode()
    texts["repr(fs)"] = repr(fs).encode()

    # Failures: wrong credentials (SeaweedFS checks signatures), and an endpoint that is down.
    make_bucket(seaweedfs.endpoint_url, bucket, seaweedfs.access_key, seaweedfs.secret_key)
    wrong = CASFileSystem(
        root=f"s3cas://{bucket}/store",
        client_kwargs={"endpoint_url": seaweedfs.endpoint_url},
        cache_dir=str(cache),
        skip_instance_cache=True,
        key=seaweedfs.access_key,
        secret=SECRET_KEY,
        token=SESSION_TOKEN,
    )
    with pytest.raises(CredentialsError, match="credentials") as refused:
        wrong.pipe(f"s3cas://{bucket}/store/f", b"x")
    port = free_ports(1)[0]
    down = CASFileSystem(
        root=root,
        client_kwargs={"endpoint_url": f"http://127.0.0.1:{port}"},
        cache_dir=str(tmp_path / "offline-cache"),
        skip_instance_cache=True,
        **credentials,
    )
    with pytest.raises(StoreOfflineError) as offline:
        down.pipe(f"{root}/f", b"x")
    for name, info in (("wrong credentials", refused), ("offline", offline)):
        for i, text in enumerate(_exception_texts(info.value)):
            texts[f"{name} exception {i}"] = text.encode()

    # The CLI, with credentials from the environment, as a user would give them.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    for command in (
        ["stats", root],
        ["ls", "-l", root],
        ["du", root],
        ["verify", "--deep", root],
        ["prefetch", f"{root}/big.bin"],
        ["gc", root],
        ["gc", "--yes", root],
        ["cache", "info"],
    ):
        result = CliRunner().invoke(
            main,
            ["--endpoint-url", moto.endpoint_url, "--cache-dir", str(cache), "--json", "-vv", *command],
        )
        assert result.exit_code == 0, (command, result.output, result.exception)
        texts[f"cli {command} stdout"] = result.stdout.encode()
        texts[f"cli {command} stderr"] = result.stderr.encode()
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            for i, text in enumerate(_exception_texts(result.exception)):
                texts[f"cli {command} exception {i}"] = text.encode()

    # Everything cas_store produced.
    texts["log text"] = caplog.text.encode()
    for i, record in enumerate(caplog.records):
        texts[f"log record {i} args"] = repr(record.args).encode()
        texts[f"log record {i} exc_text"] = (record.exc_text or "").encode()
    assert logging.getLogger("cas_store").isEnabledFor(logging.DEBUG)
    assert any(r.name.startswith("cas_store") for r in caplog.records)  # the offline warning, at least
    for directory in (cache, tmp_path / "offline-cache"):
        for path in _files(directory):
            texts[str(path)] = path.read_bytes()
    assert any(p.name == "mirror.sqlite3" for p in _files(cache))
    for server in (moto, seaweedfs):
        for key, body in _objects(boto3_client(server), bucket):
            texts[f"{server.endpoint_url}/{bucket}/{key}"] = body
    assert any(k.endswith("cas-store.json") for k in texts)  # the scan saw the bucket

    assert _leaks(texts) == []


# -- the cache directory is private -------------------------------------------------------------


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 000: whatever cas_store does not make private explicitly is world-writable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _modes(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): stat.S_IMODE(p.stat().st_mode) for p in directory.rglob("*")}


def _workload(fs: CASFileSystem, root: str) -> None:
    data = os.urandom(3 * MiB + 5)
    fs.pipe(f"{root}/big.bin", data)
    fs.pipe(f"{root}/small.txt", b"tiny")
    assert fs.cat(f"{root}/big.bin") == data  # chunk files, then the whole-file copy
    wait_background()
    fs.ls(root, detail=True)


@pytest.mark.parametrize("existing", [False, True], ids=["created", "existing-0755"])
def test_cache_files_are_private_whatever_the_umask(
    permissive_umask: None, moto: MotoServer, tmp_path: Path, existing: bool
) -> None:
    """Directory 0700 (when cas_store creates it) and everything in it 0700 / 0600 or stricter,
    with umask 000: blob files, whole-file copies, temporary files, both SQLite databases and
    their -wal and -shm files, also those created again after the directory was removed."""
    bucket = "private-cache"
    make_bucket(moto.endpoint_url, bucket, moto.access_key, moto.secret_key)
    cache = tmp_path / "cache"
    if existing:
        cache.mkdir(mode=0o755)
    root = f"s3cas://{bucket}/{'existing' if existing else 'created'}"
    fs = CASFileSystem(
        root=root,
        key=moto.access_key,
        secret=moto.secret_key,
        client_kwargs={"endpoint_url": moto.endpoint_url},
        cache_dir=str(cache),
        chunk_size=MiB,
        skip_instance_cache=True,
    )
    _workload(fs, root)
    fd, spool = fs.cache.temp_file(".probe")  # as a download or a chunk being cached is made
    os.close(fd)
    modes = _modes(cache)
    os.unlink(spool)
    expected_files = {"mirror.sqlite3", "mirror.sqlite3-wal", "mirror.sqlite3-shm", "blobs/cache.db"}
    assert expected_files <= set(modes), sorted(modes)
    assert any(name.startswith("tmp/") for name in modes)
    assert sum(name.endswith(".val") for name in modes) >= 5  # 4 chunks and a whole-file copy
    assert stat.S_IMODE(cache.stat().st_mode) == (0o755 if existing else 0o700)
    assert {n: oct(m) for n, m in modes.items() if m & 0o077} == {}

    # Removed under the live store: what is created again is private too.
    shutil.rmtree(cache)
    _workload(fs, root)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    modes = _modes(cache)
    assert "mirror.sqlite3" in modes and "blobs/cache.db" in modes
    assert {n: oct(m) for n, m in _modes(cache).items() if m & 0o077} == {}
