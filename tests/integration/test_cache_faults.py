"""The local cache damaged under a live store: the store heals, and S3 writes never fail for it."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

from cas_store import CASFileSystem
from cas_store.fileobj import wait_background
from tests.integration.conftest import FSFactory

MiB = 2**20


def test_cache_directory_removed_under_a_live_store(make_fs: FSFactory, root: str, tmp_path: Path) -> None:
    fs = make_fs(chunk_size=MiB)
    data = random.Random(1).randbytes(3 * MiB + 5)
    fs.pipe(f"{root}/before.bin", data)
    assert fs.cat(f"{root}/before.bin") == data
    wait_background()  # the whole-file copy is assembled after the read; rmtree races live writes
    shutil.rmtree(tmp_path / "cache")  # a user clearing space, a CI cache step
    assert fs.cat(f"{root}/before.bin") == data  # lost files are misses: fetched again
    fs.pipe(f"{root}/after.bin", data[::-1])
    assert fs.cat(f"{root}/after.bin") == data[::-1]
    assert fs.ls(root, detail=False) == [
        f"{root.removeprefix('s3cas://')}/{n}" for n in ("after.bin", "before.bin")
    ]
    assert (tmp_path / "cache" / "tmp").is_dir()
    wait_background()
    shutil.rmtree(tmp_path / "cache")
    with fs.open(f"{root}/before.bin", "rb") as f:
        f.seek(MiB + 1)
        assert f.read(10) == data[MiB + 1 : MiB + 11]


def test_unusable_cache_does_not_fail_an_s3_write(make_fs: FSFactory, root: str, tmp_path: Path) -> None:
    fs = make_fs(chunk_size=MiB)
    fs.pipe(f"{root}/warm-up", b"x")
    tmp = tmp_path / "cache" / "tmp"
    shutil.rmtree(tmp)
    tmp.write_bytes(b"not a directory")  # every cache fill now fails (as ENOSPC or EACCES would)
    data = random.Random(2).randbytes(2 * MiB + 1)
    fs.pipe(f"{root}/written.bin", data)
    fresh: CASFileSystem = make_fs(cache_dir=str(tmp_path / "fresh"))
    assert fresh.cat(f"{root}/written.bin") == data
    assert fs.cat(f"{root}/written.bin") == data  # reads work too: served uncached if need be
    os.unlink(tmp)
