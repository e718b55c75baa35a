"""Filesystem semantics of CASFileSystem (the fsspec contract), on moto and on SeaweedFS."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import fsspec
import pytest

from cas_store import CASFileSystem, InvalidPathError
from tests.integration.conftest import FSFactory


def test_write_then_read_round_trips(fs: CASFileSystem, root: str) -> None:
    with fs.open(f"{root}/a/b.bin", "wb") as f:
        f.write(b"hello ")
        f.write(bytearray(b"world"))
    assert fs.cat(f"{root}/a/b.bin") == b"hello world"
    assert fs.size(f"{root}/a/b.bin") == 11
    assert fs.isfile(f"{root}/a/b.bin") and not fs.isdir(f"{root}/a/b.bin")
    assert fs.isdir(f"{root}/a") and not fs.isfile(f"{root}/a")


def test_empty_file(fs: CASFileSystem, root: str) -> None:
    fs.touch(f"{root}/empty")
    assert fs.cat(f"{root}/empty") == b""
    assert fs.info(f"{root}/empty")["size"] == 0
    assert fs.ls(root, detail=False) == [f"{root[len('s3cas://') :]}/empty"]


def test_text_modes(fs: CASFileSystem, root: str) -> None:
    with fs.open(f"{root}/t.txt", "w", encoding="utf-8") as f:
        f.write("grüße\nzweite Zeile\n")
    with fs.open(f"{root}/t.txt", "r", encoding="utf-8") as f:
        assert f.readline() == "grüße\n"
        assert f.read() == "zweite Zeile\n"


def test_multipart_sized_file_seek_and_ranges(make_fs: FSFactory, root: str) -> None:
    fs = make_fs(chunk_size=5 * 2**20, inline_threshold=0)
    data = os.urandom(12 * 2**20 + 123)  # 3 chunks: exercises chunked upload and reads across chunks
    fs.pipe(f"{root}/big.bin", data)
    cold = make_fs(cache_dir=str(Path(fs.config.resolved_cache_dir).parent / "cold"))
    with cold.open(f"{root}/big.bin", "rb") as f:
        assert f.seekable()
        f.seek(7 * 2**20)
        assert f.read(10) == data[7 * 2**20 : 7 * 2**20 + 10]
        f.seek(-5, io.SEEK_END)
        assert f.read() == data[-5:]
        assert f.tell() == len(data)
    assert cold.cat_file(f"{root}/big.bin", start=100, end=200) == data[100:200]
    assert cold.cat_file(f"{root}/big.bin", start=-10) == data[-10:]
    assert cold.cat(f"{root}/big.bin") == data


def test_unicode_spaces_and_deep_trees(fs: CASFileSystem, root: str) -> None:
    names = [
        "dir with space/fïlé ünïcödé.txt",
        "日本/データ.bin",
        "a/b/c/d/e/f/g/h/i/j/deep.txt",
        "x+y=z&(1).txt",
    ]
    for i, name in enumerate(names):
        fs.pipe(f"{root}/{name}", f"content {i}".encode())
    for i, name in enumerate(names):
        assert fs.cat(f"{root}/{name}") == f"content {i}".encode()
    stripped = root[len("s3cas://") :]
    assert sorted(fs.find(root)) == sorted(f"{stripped}/{n}" for n in names)
    assert fs.ls(f"{root}/a/b/c/d/e/f/g/h/i/j", detail=False) == [f"{stripped}/a/b/c/d/e/f/g/h/i/j/deep.txt"]


def test_ls_find_walk_glob(fs: CASFileSystem, root: str) -> None:
    for name in ["top.txt", "d1/a.txt", "d1/b.csv", "d1/sub/c.txt", "d2/d.txt"]:
        fs.pipe(f"{root}/{name}", name.encode())
    s = root[len("s3cas://") :]
    assert fs.ls(root, detail=False) == [f"{s}/d1", f"{s}/d2", f"{s}/top.txt"]
    detail = {i["name"]: i for i in fs.ls(f"{root}/d1")}
    assert detail[f"{s}/d1/a.txt"]["type"] == "file" and detail[f"{s}/d1/a.txt"]["size"] == len("d1/a.txt")
    assert detail[f"{s}/d1/sub"]["type"] == "directory"
    assert fs.find(f"{root}/d1") == [f"{s}/d1/a.txt", f"{s}/d1/b.csv", f"{s}/d1/sub/c.txt"]
    assert fs.find(f"{root}/d1", maxdepth=1) == [f"{s}/d1/a.txt", f"{s}/d1/b.csv"]
    assert f"{s}/d1/sub" in fs.find(root, withdirs=True)
    assert fs.find(f"{root}/top.txt") == [f"{s}/top.txt"]
    assert fs.find(f"{root}/nope") == []
    walked = {d: (sorted(dirs), sorted(files)) for d, dirs, files in fs.walk(root)}
    assert walked[s] == (["d1", "d2"], ["top.txt"])
    assert walked[f"{s}/d1/sub"] == ([], ["c.txt"])
    assert sorted(fs.glob(f"{root}/**/*.txt")) == sorted(
        [f"{s}/top.txt", f"{s}/d1/a.txt", f"{s}/d1/sub/c.txt", f"{s}/d2/d.txt"]
    )
    assert fs.glob(f"{root}/d1/*.csv") == [f"{s}/d1/b.csv"]
    assert fs.du(f"{root}/d1") == len("d1/a.txt") + len("d1/b.csv") + len("d1/sub/c.txt")


def test_missing_paths_raise_file_not_found(fs: CASFileSystem, root: str) -> None:
    fs.pipe(f"{root}/exists.txt", b"x")
    for call in (fs.info, fs.cat, fs.ls, fs.size):
        with pytest.raises(FileNotFoundError):
            call(f"{root}/missing/thing")
    assert not fs.exists(f"{root}/missing")
    with pytest.raises(FileNotFoundError):
        fs.rm(f"{root}/missing")
    with pytest.raises(IsADirectoryError):
        fs.open(f"{root}", "rb")


def test_mkdir_and_makedirs_are_implied_like_s3fs(fs: CASFileSystem, root: str) -> None:
    fs.makedirs(f"{root}/made/deep", exist_ok=True)
    fs.mkdir(f"{root}/made2")
    # As with s3fs: a directory exists once a file is in it.
    assert not fs.exists(f"{root}/made/deep")
    fs.pipe(f"{root}/made/deep/f", b"1")
    assert fs.isdir(f"{root}/made/deep") and fs.isdir(f"{root}/made")
    assert fs.ls(f"{root}/made", detail=False) == [f"{root[len('s3cas://') :]}/made/deep"]


def test_rm_file_and_recursive(fs: CASFileSystem, root: str, s3client: Any, bucket: str) -> None:
    for name in ["keep.txt", "tree/a", "tree/b/c", "tree/b/d"]:
        fs.pipe(f"{root}/{name}", os.urandom(64 * 1024))  # above the inline threshold: real blobs
    blobs_before = _keys(s3client, bucket, "store/blobs/")
    fs.rm_file(f"{root}/keep.txt")
    assert not fs.exists(f"{root}/keep.txt")
    with pytest.raises(IsADirectoryError):
        fs.rm(f"{root}/tree")
    fs.rm(f"{root}/tree", recursive=True)
    assert not fs.exists(f"{root}/tree")
    assert fs.ls(root, detail=False) == []
    # docs/design.md O3: removing paths deletes manifest entries only, never blobs.
    assert _keys(s3client, bucket, "store/blobs/") == blobs_before
    assert _keys(s3client, bucket, "store/manifest/") == []


def test_copy_is_manifest_only_and_mv(fs: CASFileSystem, root: str, s3client: Any, bucket: str) -> None:
    data = os.urandom(100_000)
    fs.pipe(f"{root}/src/one.bin", data)
    fs.pipe(f"{root}/src/two.bin", data[::-1])
    blobs = _keys(s3client, bucket, "store/blobs/")
    fs.copy(f"{root}/src/one.bin", f"{root}/copy.bin")
    fs.copy(f"{root}/src", f"{root}/tree-copy", recursive=True)
    assert _keys(s3client, bucket, "store/blobs/") == blobs  # no bytes moved
    assert fs.cat(f"{root}/copy.bin") == data
    assert fs.cat(f"{root}/tree-copy/two.bin") == data[::-1]
    fs.mv(f"{root}/copy.bin", f"{root}/moved.bin")
    assert not fs.exists(f"{root}/copy.bin")
    assert fs.cat(f"{root}/moved.bin") == data
    with pytest.raises(FileNotFoundError):
        fs.copy(f"{root}/nothing", f"{root}/x")


def test_put_and_get(fs: CASFileSystem, root: str, tmp_path: Path) -> None:
    local = tmp_path / "local.bin"
    local.write_bytes(os.urandom(300_000))
    fs.put(str(local), f"{root}/up/local.bin")
    out = tmp_path / "out.bin"
    fs.get(f"{root}/up/local.bin", str(out))
    assert out.read_bytes() == local.read_bytes()
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "x.txt").write_text("x")
    fs.put(str(tmp_path / "tree"), f"{root}/uptree", recursive=True)
    assert fs.cat(f"{root}/uptree/sub/x.txt") == b"x"


def test_overwrite_replaces_content(fs: CASFileSystem, root: str) -> None:
    fs.pipe(f"{root}/f", b"first")
    fs.pipe(f"{root}/f", b"second version")
    assert fs.cat(f"{root}/f") == b"second version"
    assert fs.size(f"{root}/f") == len(b"second version")


def test_unsupported_modes_and_bad_paths(fs: CASFileSystem, root: str, bucket: str) -> None:
    fs.pipe(f"{root}/f", b"x")
    with pytest.raises(ValueError, match="not supported"):
        fs.open(f"{root}/f", "ab")
    with pytest.raises(InvalidPathError, match=r"\.\."):
        fs.open(f"{root}/a/../../escape", "wb")
    with pytest.raises(InvalidPathError, match="outside the store root"):
        fs.pipe(f"s3cas://{bucket}/elsewhere/f", b"x")
    with pytest.raises(InvalidPathError, match="scheme"):
        fs.cat(f"s3://{bucket}/store/f")


def test_fsspec_open_by_url_and_pandas(fs: CASFileSystem, root: str, make_fs: FSFactory) -> None:
    pd = pytest.importorskip("pandas")
    options = {k: v for k, v in fs.storage_options.items() if k != "skip_instance_cache"}
    with fsspec.open(f"{root}/via-url.txt", "wt", **options) as f:
        f.write("opened by URL")
    with fsspec.open(f"{root}/via-url.txt", "rt", **options) as f:
        assert f.read() == "opened by URL"
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    df.to_parquet(f"{root}/df.parquet", storage_options=options)
    assert pd.read_parquet(f"{root}/df.parquet", storage_options=options).equals(df)


def test_interrupted_write_leaves_no_visible_path(
    fs: CASFileSystem, root: str, s3client: Any, bucket: str
) -> None:
    def produce() -> None:
        with fs.open(f"{root}/partial.bin", "wb") as f:
            f.write(os.urandom(200_000))
            raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError, match="producer failed"):
        produce()
    assert not fs.exists(f"{root}/partial.bin")
    assert _keys(s3client, bucket, "store/manifest/") == []
    assert _keys(s3client, bucket, "store/blobs/") == []  # nothing uploaded before close()
    assert list(Path(fs.cache.tmp_dir).iterdir()) == []  # nothing left half-written

    def produce_text() -> None:
        with fs.open(f"{root}/partial.txt", "w") as f:
            f.write("half a line")
            raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError, match="producer failed"):
        produce_text()
    assert not fs.exists(f"{root}/partial.txt")
    f2 = fs.open(f"{root}/abandoned.bin", "wb")
    f2.write(b"never closed")
    f2.discard()
    assert not fs.exists(f"{root}/abandoned.bin")


def _keys(client: Any, bucket: str, prefix: str) -> list[str]:
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return sorted(out)


def test_entry_ttl_trusts_confirmed_entries_for_a_while(
    make_fs: FSFactory, root: str, tmp_path: Path
) -> None:
    writer = make_fs()
    writer.pipe(f"{root}/f", b"version 1" * 5000)
    strict = make_fs(cache_dir=str(tmp_path / "strict"))
    relaxed = make_fs(cache_dir=str(tmp_path / "relaxed"), entry_ttl=0.5)
    assert strict.cat(f"{root}/f") == relaxed.cat(f"{root}/f") == b"version 1" * 5000
    writer.pipe(f"{root}/f", b"version 2" * 5000)
    assert strict.cat(f"{root}/f") == b"version 2" * 5000  # entry_ttl=0: asks S3 every time
    assert relaxed.cat(f"{root}/f") == b"version 1" * 5000  # within the TTL: the confirmed entry
    time.sleep(0.6)
    assert relaxed.cat(f"{root}/f") == b"version 2" * 5000


def test_a_failed_write_poisons_the_file(
    make_fs: FSFactory, root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a chunk cannot be stored, closing the file anyway (as fsspec.open's wrapper does
    on an exception) must publish nothing rather than an entry with a chunk missing."""
    fs = make_fs(chunk_size=2**20)
    fs.pipe(f"{root}/warmup", b"x")
    calls = {"n": 0}
    real_put_blob = fs.cache.put_blob

    def put_blob_failing_once(*args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real_put_blob(*args)

    monkeypatch.setattr(fs.cache, "put_blob", put_blob_failing_once)
    f = fs.open(f"{root}/poisoned.bin", "wb")
    f.write(os.urandom(2**20))
    with pytest.raises(OSError, match="No space left"):
        f.write(os.urandom(2**20))
    with pytest.raises(OSError, match="earlier write"):
        f.write(b"more")
    with pytest.raises(OSError, match="nothing was published"):
        f.close()
    assert not fs.exists(f"{root}/poisoned.bin")
