"""Bad input: each is refused with a specific cas_store exception whose message says what to
do, before anything is sent that could write, and nothing is ever written outside the store root.

Every test lists the bucket afterwards (the server's view, not the client's) and checks that
all keys lie below the store root, and that refused paths left no object at all.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cas_store import CASFileSystem, InvalidPathError
from cas_store.cli import EXIT_ERROR, main
from cas_store.errors import CASStoreError, IncompatibleStoreError
from cas_store.layout import MAX_KEY_BYTES, MAX_PREFIX_BYTES
from tests.integration.conftest import FSFactory
from tests.support.moto import MotoServer

MiB = 2**20


@pytest.fixture
def server(moto: MotoServer) -> MotoServer:
    return moto


def _keys(s3client: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def _writes(log: Any) -> list[str]:
    return [f"{r.method} {r.key}" for r in log.requests if r.method in ("PUT", "POST", "DELETE")]


#: Paths (below the root) that could escape it, and what the refusal must say.
ESCAPING = {
    "dotdot": ("a/../../x", "'..'"),
    "dotdot-alone": ("..", "'..'"),
    "percent-dotdot": ("%2e%2e/x", "%2e%2e"),
    "percent-dotdot-upper": ("a/%2E%2e%2Fx", "%2e%2e"),
    "percent-dot-dot": ("%2e./x", "'..'"),
    "backslash-dotdot": ("a\\..\\x", "backslashes"),
    "backslash-leading": ("..\\x", "backslashes"),
    "nul": ("a\x00b", "control characters"),
    "newline": ("a\nb", "control characters"),
    "del": ("a\x7fb", "control characters"),
    "c1-control": ("a\x85b", "control characters"),
    "surrogate-escape": ("bad-\udcff-name", "not valid Unicode"),
}


@pytest.fixture
def fs(make_fs: FSFactory, root: str) -> CASFileSystem:
    fs = make_fs(chunk_size=MiB)
    fs.pipe(f"{root}/ok.bin", b"fine" * 10_000)  # a store exists, with one file
    return fs


def _entry_points(fs: CASFileSystem, root: str, bad: str) -> dict[str, Callable[[], object]]:
    ok = f"{root}/ok.bin"
    return {
        "open-wb": lambda: fs.open(bad, "wb"),
        "open-rb": lambda: fs.open(bad, "rb"),
        "pipe": lambda: fs.pipe(bad, b"x" * (3 * MiB)),
        "pipe_file": lambda: fs.pipe_file(bad, b"x"),
        "cat": lambda: fs.cat(bad),
        "cat_file-range": lambda: fs.cat_file(bad, 0, 10),
        "info": lambda: fs.info(bad),
        "ls": lambda: fs.ls(bad),
        "find": lambda: fs.find(bad),
        "rm": lambda: fs.rm(bad),
        "rm-recursive": lambda: fs.rm(bad, recursive=True),
        "copy-to": lambda: fs.copy(ok, bad),
        "copy-from": lambda: fs.copy(bad, f"{root}/copy.bin"),
        "mv-to": lambda: fs.mv(ok, bad),
        "makedirs": lambda: fs.makedirs(bad, exist_ok=True),
    }


@pytest.mark.parametrize("case", list(ESCAPING))
def test_escaping_paths_are_refused_by_every_fsspec_entry_point(
    fs: CASFileSystem, moto: MotoServer, root: str, s3client: Any, bucket: str, case: str
) -> None:
    rel, says = ESCAPING[case]
    before = _keys(s3client, bucket)
    with moto.record() as log:
        for name, call in _entry_points(fs, root, f"{root}/{rel}").items():
            with pytest.raises(InvalidPathError) as info:
                call()
            message = str(info.value)
            assert says in message, (name, message)
            assert "give the path without it" in message or "rename" in message or "decode" in message
    # Refused before any request (a copy reads its source first: nothing else).
    assert {f"{r.method} {r.key}" for r in log.requests} <= {"GET store/manifest/ok.bin"}
    assert _keys(s3client, bucket) == before
    assert fs.cat(f"{root}/ok.bin") == b"fine" * 10_000  # the mv-to left the source alone


@pytest.mark.parametrize("case", ["dotdot", "percent-dotdot", "backslash-dotdot", "nul", "surrogate-escape"])
def test_escaping_paths_are_refused_by_the_store_api(
    fs: CASFileSystem, moto: MotoServer, root: str, s3client: Any, bucket: str, case: str
) -> None:
    """The Store API, which takes paths relative to the root and bypasses the file system's
    parsing, refuses them too (a caller, or a name listed from a bucket shared with others)."""
    rel = ESCAPING[case][0]
    store = fs.store()
    ok = store.resolve("ok.bin")
    assert ok is not None
    before = _keys(s3client, bucket)
    calls: dict[str, Callable[[], object]] = {
        "resolve": lambda: store.resolve(rel),
        "stat": lambda: store.stat(rel),
        "open_write": lambda: store.open_write(rel, rel),
        "publish": lambda: store.publish(rel, ok.entry),
        "copy": lambda: store.copy("ok.bin", rel),
        "remove": lambda: store.remove([rel]),
        "list_dir": lambda: store.list_dir(rel),
    }
    with moto.record() as log:
        for name, call in calls.items():
            with pytest.raises(InvalidPathError):
                call()
            assert _writes(log) == [], name
    assert _keys(s3client, bucket) == before


def test_folded_paths_stay_inside_the_root(fs: CASFileSystem, root: str, s3client: Any, bucket: str) -> None:
    """``.``, empty segments and leading slashes are folded (as S3-compatible servers fold
    them); absolute-looking and backslash names without ``..`` are plain names; all land
    below ``<root>/manifest/``."""
    written = {
        "./x/.": "x",
        "//y//z": "y/z",
        "/leading": "leading",
        "C:/windows": "C:/windows",
        "\\\\server\\share": "\\\\server\\share",
        "a..b/c.": "a..b/c.",
        "100%/x": "100%/x",
    }
    for given in written:
        fs.pipe(f"{root}/{given}", given.encode())
    for given, rel in written.items():
        assert fs.cat(f"{root}/{rel}") == given.encode()
    keys = _keys(s3client, bucket)
    assert all(k.startswith("store/") for k in keys), keys
    manifest = {k.removeprefix("store/manifest/") for k in keys if k.startswith("store/manifest/")}
    assert manifest == {*written.values(), "ok.bin"}


# -- malformed URIs ----------------------------------------------------------------------------

#: Store roots that must be refused when the file system is made, and what the message says.
BAD_ROOTS = {
    "s3-scheme": ("s3://{b}/store", "use s3cas://"),
    "http-scheme": ("https://{b}/store", "use s3cas://"),
    "no-bucket": ("s3cas://", "names no bucket"),
    "three-slashes": ("s3cas:///{b}/store", "names no bucket"),
    "host-and-port": ("s3cas://{b}:9000/store", "endpoint_url"),
    "credentials-in-url": ("s3cas://AKIDEXAMPLE:hunter2@{b}/store", "credentials do not go in the URL"),
    "space-in-bucket": ("s3cas://my bucket/store", "not a valid S3 bucket name"),
    "query": ("s3cas://{b}/store?endpoint_url=http://x", "keyword arguments"),
    "fragment": ("s3cas://{b}/store#v2", "keyword arguments"),
    "dotdot": ("s3cas://{b}/store/../other", "'..'"),
    "prefix-too-long": ("s3cas://{b}/" + "p" * (MAX_PREFIX_BYTES + 1), f"at most {MAX_PREFIX_BYTES} bytes"),
}


@pytest.mark.parametrize("case", list(BAD_ROOTS))
def test_malformed_store_roots_are_refused_at_once(
    moto: MotoServer, bucket: str, s3client: Any, tmp_path: Path, case: str
) -> None:
    uri, says = BAD_ROOTS[case]
    uri = uri.format(b=bucket)
    with moto.record() as log, pytest.raises(InvalidPathError, match=None) as info:
        CASFileSystem(
            root=uri,
            client_kwargs={"endpoint_url": moto.endpoint_url},
            cache_dir=str(tmp_path / "cache"),
            skip_instance_cache=True,
        )
    assert says in str(info.value)
    assert "hunter2" not in str(info.value) and "hunter2" not in repr(info.value)
    assert log.requests == []
    assert _keys(s3client, bucket) == []


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("s3cas://{b}:9000/x", "endpoint_url"),
        ("s3cas://user:secret-pw@{b}/x", "credentials do not go in the URL"),
        ("s3cas://bad bucket/x", "not a valid S3 bucket name"),
        ("s3://{b}/x", "use s3cas://"),
    ],
)
def test_malformed_urls_without_a_configured_root(
    make_fs: FSFactory, moto: MotoServer, bucket: str, s3client: Any, url: str, says: str
) -> None:
    """Without a root, a path names its bucket: malformed ones are refused before any request."""
    fs = make_fs(root=None)
    path = url.format(b=bucket)
    with moto.record() as log:
        for call in (lambda: fs.pipe(path, b"x"), lambda: fs.ls(path), lambda: fs.cat(path)):
            with pytest.raises(InvalidPathError) as info:
                call()
            assert says in str(info.value)
            assert "secret-pw" not in str(info.value)
    assert log.requests == []
    assert _keys(s3client, bucket) == []


# -- key length ------------------------------------------------------------------------------


def test_keys_beyond_s3s_limit_are_refused_before_any_request(
    fs: CASFileSystem, moto: MotoServer, root: str, s3client: Any, bucket: str
) -> None:
    """The limit is on the full key: root prefix, ``manifest/`` and the path, in UTF-8 bytes."""
    room = MAX_KEY_BYTES - len("store/manifest/")
    longest = "d/" + "n" * (room - 2)
    fs.pipe(f"{root}/{longest}", b"fits exactly")
    assert fs.cat(f"{root}/{longest}") == b"fits exactly"
    assert f"store/manifest/{longest}" in _keys(s3client, bucket)

    ok = fs.store().resolve("ok.bin")
    assert ok is not None
    ok_entry = ok.entry
    before = _keys(s3client, bucket)
    too_long = {
        "one byte over": "n" * (room + 1),
        "multi-byte characters": "é" * ((room + 2) // 2),  # fewer characters than bytes
    }
    for rel in too_long.values():
        with moto.record() as log:
            path = f"{root}/{rel}"
            refused: list[Callable[[], object]] = [
                functools.partial(fs.pipe, path, b"z" * (3 * MiB)),  # would upload chunks first
                functools.partial(fs.open, path, "wb"),
                functools.partial(fs.cat, path),
                functools.partial(fs.copy, f"{root}/ok.bin", path),
                functools.partial(fs.store().publish, rel, ok_entry),
            ]
            for call in refused:
                with pytest.raises(InvalidPathError, match=rf"too long.*at most {room} bytes"):
                    call()
        assert _writes(log) == []
    assert _keys(s3client, bucket) == before


def test_longest_root_prefix_has_room_for_every_key(
    make_fs: FSFactory, root: str, s3client: Any, bucket: str, tmp_path: Path
) -> None:
    """A root prefix of MAX_PREFIX_BYTES is accepted, and its store works (with sha256's
    64-digit digests, the longest blob keys); one byte more is refused (see BAD_ROOTS)."""
    prefix = "p" * MAX_PREFIX_BYTES
    fs = make_fs(root=f"s3cas://{bucket}/{prefix}", chunk_size=MiB, hash_algorithm="sha256")
    data = b"q" * (2 * MiB + 1)
    fs.pipe(f"s3cas://{bucket}/{prefix}/f", data)
    assert (
        make_fs(root=f"s3cas://{bucket}/{prefix}", cache_dir=str(tmp_path / "cold")).cat(
            f"s3cas://{bucket}/{prefix}/f"
        )
        == data
    )
    keys = _keys(s3client, bucket)
    assert all(k.startswith(prefix + "/") and len(k.encode()) <= MAX_KEY_BYTES for k in keys), keys


# -- names that are not text ------------------------------------------------------------------


def test_bytes_and_undecodable_names_are_refused(
    fs: CASFileSystem, moto: MotoServer, root: str, s3client: Any, bucket: str
) -> None:
    before = _keys(s3client, bucket)
    undecodable = b"\xff\xfename"
    surrogate = undecodable.decode("utf-8", "surrogateescape")  # as os.fsdecode gives it
    with moto.record() as log:
        for path in (f"{root}/ok.bin".encode(), f"{root}/".encode() + undecodable):
            calls: list[Callable[[], object]] = [
                functools.partial(fs.pipe, path, b"x"),
                functools.partial(fs.cat, path),
                functools.partial(fs.open, path, "wb"),
            ]
            for call in calls:
                with pytest.raises(InvalidPathError, match=r"must be a str.*decode it"):
                    call()
        named = f"{root}/{surrogate}"
        for call in (functools.partial(fs.pipe, named, b"x"), functools.partial(fs.ls, named)):
            with pytest.raises(InvalidPathError, match=r"not valid Unicode.*decode the name"):
                call()
    assert log.requests == []
    assert _keys(s3client, bucket) == before


def test_valid_unicode_names_round_trip(fs: CASFileSystem, root: str, s3client: Any, bucket: str) -> None:
    names = ["naïve café.txt", "日本語/ファイル", "emoji-🙂", "nfd-cafe\u0301"]
    for name in names:
        fs.pipe(f"{root}/{name}", name.encode())
    for name in names:
        assert fs.cat(f"{root}/{name}") == name.encode()
    assert {k.removeprefix("store/manifest/") for k in _keys(s3client, bucket) if "/manifest/" in k} == {
        *names,
        "ok.bin",
    }


# -- the CLI ---------------------------------------------------------------------------------


def _cli(moto: MotoServer, tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(
        main,
        ["--endpoint-url", moto.endpoint_url, "--cache-dir", str(tmp_path / "cli-cache"), *args],
        catch_exceptions=False,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["ls", "{root}/a/../../x"],
        ["ls", "-l", "{root}/%2e%2e/x"],
        ["du", "{root}/..\\x"],
        ["prefetch", "{root}/ok.bin", "{root}/../ok.bin"],
        ["verify", "{root}/.."],
        ["stats", "s3cas://{b}:9000/store"],
        ["init", "s3cas://{b}/store?x=1"],
        ["gc", "s3://{b}/store"],
    ],
)
def test_cli_refuses_bad_paths_with_one_line_and_exit_3(
    fs: CASFileSystem,
    moto: MotoServer,
    root: str,
    bucket: str,
    s3client: Any,
    tmp_path: Path,
    command: list[str],
) -> None:
    before = _keys(s3client, bucket)
    args = [a.format(root=root, b=bucket) for a in command]
    result = _cli(moto, tmp_path, *args)
    assert result.exit_code == EXIT_ERROR, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cas-store: error: "), result.stderr
    assert any(w in lines[0] for w in ("'..'", "s3cas://", "endpoint_url", "keyword arguments")), lines[0]
    result = _cli(moto, tmp_path, "--json", *args)
    assert result.exit_code == EXIT_ERROR
    assert _keys(s3client, bucket) == before


# -- stores that are not ours ------------------------------------------------------------------


def test_incompatible_marker_and_foreign_prefix_are_left_alone(
    make_fs: FSFactory, moto: MotoServer, bucket: str, s3client: Any, tmp_path: Path
) -> None:
    """Neither a store of another format version nor a prefix holding foreign objects is
    written to, by the file system or by the CLI's init/upgrade/gc; the errors say why."""
    marker = {"format": "cas_store", "version": 99, "hash_algorithm": "xxh128"}
    s3client.put_object(Bucket=bucket, Key="future/cas-store.json", Body=json.dumps(marker).encode())
    s3client.put_object(Bucket=bucket, Key="foreign/data.csv", Body=b"a,b")
    s3client.put_object(Bucket=bucket, Key="foreign/manifest/x", Body=b"not an entry")
    before = sorted(_keys(s3client, bucket))
    for prefix, says in (
        ("future", r"version 99.*upgrade"),
        ("foreign", "not a cas_store store|empty prefix"),
    ):
        root = f"s3cas://{bucket}/{prefix}"
        fs = make_fs(root=root, cache_dir=str(tmp_path / f"cache-{uuid.uuid4().hex[:6]}"))
        calls: list[Callable[[], object]] = [
            functools.partial(fs.pipe, f"{root}/new", b"x" * 100_000),
            functools.partial(fs.cat, f"{root}/data.csv"),
            functools.partial(fs.ls, root),
            functools.partial(fs.rm, f"{root}/data.csv"),
        ]
        for call in calls:
            with pytest.raises(IncompatibleStoreError, match=says):
                call()
        for command in (["init", root], ["upgrade", root], ["gc", "--yes", root], ["verify", root]):
            result = _cli(moto, tmp_path, *command)
            assert result.exit_code == EXIT_ERROR, (command, result.output)
            assert result.stderr.startswith("cas-store: error: "), (command, result.stderr)
    assert sorted(_keys(s3client, bucket)) == before


def test_every_refusal_is_a_cas_store_error() -> None:
    """The exceptions above are cas_store's (catchable as CASStoreError) and also builtins
    that generic code handles (InvalidPathError is a ValueError)."""
    assert issubclass(InvalidPathError, CASStoreError) and issubclass(InvalidPathError, ValueError)
