"""The ``cas-store`` command line against moto: output, ``--json``, exit codes, offline use."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cas_store import CASFileSystem
from cas_store.cli import main
from cas_store.cli._output import parse_size
from cas_store.config import MiB
from cas_store.sizes import format_size
from tests.support.clients import boto3_client, make_bucket
from tests.support.moto import MotoServer

C = 1 * MiB
Run = Callable[..., Result]


@dataclass
class Populated:
    """A store at ``root``: a.bin (3 chunks), copy/a.bin (the same), tiny.txt (inline),
    gone.bin (removed: two unreferenced blobs)."""

    server: MotoServer
    bucket: str
    root: str
    fs: CASFileSystem
    a: bytes
    gone: bytes

    def blob_key(self, rel: str, index: int) -> str:
        store = self.fs.store()
        record = store.resolve(rel)
        assert record is not None
        return store.blobs.key(record.entry.algorithm, record.entry.chunks[index].digest)


def _populate(server: MotoServer, tmp_path: Path) -> Populated:
    bucket = f"cli-{uuid.uuid4().hex[:12]}"
    make_bucket(server.endpoint_url, bucket, server.access_key, server.secret_key)
    root = f"s3cas://{bucket}/store"
    fs = CASFileSystem(
        root=root,
        key=server.access_key,
        secret=server.secret_key,
        client_kwargs={"endpoint_url": server.endpoint_url},
        cache_dir=str(tmp_path / "writer"),
        chunk_size=C,
        skip_instance_cache=True,
    )
    rng = random.Random(5)
    a, gone = rng.randbytes(2 * C + 10), rng.randbytes(C + 1)
    fs.pipe(f"{root}/a.bin", a)
    fs.pipe(f"{root}/copy/a.bin", a)
    fs.pipe(f"{root}/tiny.txt", b"hello")
    fs.pipe(f"{root}/gone.bin", gone)
    fs.rm(f"{root}/gone.bin")
    return Populated(server, bucket, root, fs, a, gone)


@pytest.fixture
def populated(moto: MotoServer, tmp_path: Path) -> Populated:
    return _populate(moto, tmp_path)


def _runner(server: MotoServer, tmp_path: Path) -> Run:
    def run(*args: str, cache: str = "cli-cache") -> Result:
        return CliRunner().invoke(
            main,
            ["--endpoint-url", server.endpoint_url, "--cache-dir", str(tmp_path / cache), *args],
            catch_exceptions=False,
        )

    return run


@pytest.fixture
def cli(moto: MotoServer, tmp_path: Path) -> Run:
    return _runner(moto, tmp_path)


def _json(result: Result) -> Any:
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


# -- stats, ls, du -----------------------------------------------------------------------


def test_stats(cli: Run, populated: Populated) -> None:
    doc = _json(cli("--json", "stats", populated.root))
    assert doc["entries"] == 3
    assert doc["logical_bytes"] == 2 * len(populated.a) + 5
    assert doc["blobs"] == 5 and doc["referenced_blobs"] == 3
    assert doc["stored_bytes"] == len(populated.a) + len(populated.gone) + 5
    assert doc["reclaimable_bytes"] == doc["unreferenced_bytes"] == len(populated.gone)
    assert doc["deduplicated_bytes"] == len(populated.a) + 5  # random bytes: nothing compressed
    assert doc["dedup_ratio"] == round(doc["logical_bytes"] / doc["deduplicated_bytes"], 4)
    assert doc["compression_ratio"] == 1.0
    assert doc["space_ratio"] == round(doc["logical_bytes"] / doc["stored_bytes"], 4)

    result = cli("stats", populated.root)
    assert result.exit_code == 0, result.output
    assert "dedup ratio" in result.stdout and "2 unreferenced" in result.stdout
    assert "deduplicated" in result.stdout and "compression" in result.stdout
    assert result.stderr == ""  # no progress bars: stderr is not a terminal


def test_ls_and_du(cli: Run, populated: Populated) -> None:
    root = populated.root
    assert cli("ls", root).stdout.split() == ["a.bin", "copy/", "tiny.txt"]
    assert cli("ls", f"{root}/copy/a.bin").stdout.split() == ["a.bin"]
    long = cli("ls", "-l", root).stdout.splitlines()
    assert len(long) == 3 and f"{len(populated.a):,}" in long[0] and "xxh128:" in long[0]
    doc = _json(cli("--json", "ls", f"{root}/copy"))
    assert doc["url"] == f"{root}/copy"
    assert [(e["name"], e["size"], e["type"]) for e in doc["entries"]] == [
        (f"{root}/copy/a.bin", len(populated.a), "file")
    ]

    du = _json(cli("--json", "du", root))
    assert (du["files"], du["inline_files"], du["chunks"]) == (3, 1, 3)
    assert du["logical_bytes"] == 2 * len(populated.a) + 5
    assert du["stored_bytes"] == du["deduplicated_bytes"] == len(populated.a) + 5
    assert du["cached_chunks"] == 0  # the CLI's own cache is empty
    assert "cached" in cli("du", f"{root}/copy").stdout


def test_errors_are_one_line_and_exit_3(cli: Run, populated: Populated) -> None:
    for args, message in [
        (["ls", f"{populated.root}/nothing"], "no such file or directory"),
        (["stats", "s3cas://no-such-bucket-for-cli/x"], "bucket 'no-such-bucket-for-cli' does not exist"),
        (["stats", f"s3cas://{populated.bucket}/elsewhere"], "no cas_store store at"),
        (["du", "s3://not/ours"], "uses the scheme 's3'"),
    ]:
        result = cli(*args)
        assert result.exit_code == 3, (args, result.output)
        assert result.stdout == ""
        assert result.stderr.startswith("cas-store: error: ") and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_usage_errors_exit_2(cli: Run, populated: Populated) -> None:
    assert cli("verify", populated.root, "--sample", "10").exit_code == 2  # needs --deep
    assert cli("verify", populated.root, "--deep", "--sample", "0").exit_code == 2
    result = cli("cache", "prune", "--to", "lots")
    assert result.exit_code == 2 and "is not a size" in result.stderr


# -- verify ------------------------------------------------------------------------------


def test_verify_exit_codes(cli: Run, populated: Populated) -> None:
    ok = cli("verify", "--deep", populated.root)
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.splitlines()[-1] == "ok"

    key = populated.blob_key("a.bin", 1)
    client = boto3_client(populated.server)
    try:
        client.delete_object(Bucket=populated.bucket, Key=key)
    finally:
        client.close()
    result = cli("--json", "verify", populated.root)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    digest = key.rsplit("/", 1)[1]
    assert doc["ok"] is False and doc["missing"] == {"a.bin": [digest], "copy/a.bin": [digest]}
    human = cli("verify", populated.root)
    assert human.exit_code == 1 and f"copy/a.bin: {digest}" in human.stdout and "FAILED" in human.stdout

    sampled = _json(cli("--json", "verify", "--deep", "--sample", "50", "--seed", "4", populated.root))
    assert sampled["blobs_hashed"] == 1  # 50 % of the two blobs left


# -- cache -------------------------------------------------------------------------------


def test_cache_commands(cli: Run, populated: Populated) -> None:
    assert cli("prefetch", f"{populated.root}/a.bin").exit_code == 0
    info = _json(cli("--json", "cache", "info"))
    assert info["blobs"] == 3 and info["blob_bytes"] == len(populated.a)
    assert info["eviction_policy"] == "least-recently-stored" and info["directory"].endswith("cli-cache")
    pruned = _json(cli("--json", "cache", "prune", "--to", str(info["size_bytes"] - 1)))
    assert pruned["removed_blobs"] == 1 and pruned["size_after"] < info["size_bytes"]
    assert cli("cache", "clear").stdout.strip() == "removed 2 blobs"
    assert _json(cli("--json", "cache", "info"))["blobs"] == 0
    assert "size limit" in cli("cache", "info").stdout


# -- prefetch and offline ----------------------------------------------------------------


@pytest.fixture
def private_moto() -> Iterator[MotoServer]:
    """A server of its own, so that stopping it disturbs no other test."""
    with MotoServer() as server:
        yield server


def test_prefetched_files_read_with_s3_stopped(private_moto: MotoServer, tmp_path: Path) -> None:
    populated = _populate(private_moto, tmp_path)
    cli = _runner(private_moto, tmp_path)
    root = populated.root
    doc = _json(cli("--json", "prefetch", f"{root}/copy", f"{root}/tiny.txt"))
    assert (doc["files"], doc["inline_files"], doc["chunks"], doc["downloaded_chunks"]) == (2, 1, 3, 3)
    assert doc["downloaded_bytes"] == len(populated.a) and doc["ok"] is True
    again = cli("prefetch", f"{root}/copy")
    assert again.exit_code == 0 and "0 downloaded" in again.stdout and "3 already cached" in again.stdout

    laptop = CASFileSystem(
        client_kwargs={"endpoint_url": private_moto.endpoint_url},
        cache_dir=str(tmp_path / "cli-cache"),
        offline_retry_after=60,
        skip_instance_cache=True,
    )
    private_moto.stop()
    try:
        assert laptop.cat(f"{root}/copy/a.bin") == populated.a
        assert laptop.cat(f"{root}/tiny.txt") == b"hello"
        du = _json(cli("--json", "du", f"{root}/copy"))  # from the mirror
        assert (du["cached_chunks"], du["chunks"]) == (3, 3)
        assert cli("ls", f"{root}/copy").stdout.split() == ["a.bin"]
        offline = cli("prefetch", f"{root}/a.bin", f"{root}/missing")
        assert offline.exit_code == 3 and "unreachable" in offline.stderr
    finally:
        private_moto.start()


# -- as a real process -------------------------------------------------------------------


def test_console_script_and_module(populated: Populated, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "cas-store"
    commands = [[sys.executable, "-m", "cas_store.cli"]]
    if script.exists():  # installed with the package (pip install -e .)
        commands.append([str(script)])
    env = {**os.environ, "AWS_ENDPOINT_URL": populated.server.endpoint_url}
    for command in commands:
        done = subprocess.run(
            [*command, "--cache-dir", str(tmp_path / "proc"), "--json", "stats", populated.root],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["entries"] == 3
    failed = subprocess.run(
        [*commands[-1], "verify", f"s3cas://{populated.bucket}/nowhere"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 3 and failed.stderr.startswith("cas-store: error: there is no cas_store")


# -- sizes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("10GiB", 10 * 2**30),
        ("500M", 500 * 2**20),
        ("1.5 G", 3 * 2**29),
        ("2GB", 2 * 10**9),
        ("7kb", 7000),
        ("3Ki", 3072),
        ("12B", 12),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_bad_sizes_and_formatting() -> None:
    for text in ("", "lots", "10 XB", "-5M", "1.2.3G"):
        with pytest.raises(ValueError, match="not a size"):
            parse_size(text)
    assert [format_size(n) for n in (0, 1023, 1024, 3 * MiB, 5 * 2**40)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "3.0 MiB",
        "5.0 TiB",
    ]
