"""fsspec's own abstract test suite (``fsspec.tests.abstract``) against ``s3cas`` on moto.

Derived as s3fs derives it (``s3fs/tests/derived``): one fixture class, then a few lines per
suite. As in S3, directories are implied by their files (``mkdir`` does nothing, an empty
directory does not exist): the suite allows for that through ``supports_empty_directories``.
What s3cas deliberately lacks is a strict xfail, so that supporting it shows up.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fsspec.tests import abstract

from cas_store import CASFileSystem
from tests.support.clients import make_bucket
from tests.support.moto import MotoServer


class CASFixtures(abstract.AbstractFixtures):  # type: ignore[misc]
    """One bucket and one file system per test class; each test cleans up its own paths."""

    @pytest.fixture(scope="class")
    @classmethod
    def fs(cls, moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CASFileSystem]:
        bucket = f"abstract-{uuid.uuid4().hex[:12]}"
        make_bucket(moto.endpoint_url, bucket, moto.access_key, moto.secret_key)
        fs = CASFileSystem(
            root=f"s3cas://{bucket}/store",
            key=moto.access_key,
            secret=moto.secret_key,
            client_kwargs={"endpoint_url": moto.endpoint_url},
            cache_dir=str(tmp_path_factory.mktemp("cache")),
            skip_instance_cache=True,
        )
        yield fs
        fs.close()

    @pytest.fixture
    def fs_path(self, fs: CASFileSystem) -> str:
        # Without the scheme, as fsspec names paths: the suite compares names with it.
        return f"{fs.store().root.path}/abstract"

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return False


class TestCASCopy(abstract.AbstractCopyTests, CASFixtures):  # type: ignore[misc]
    def test_move_directory_recursive(
        self, fs: CASFileSystem, fs_join: Any, fs_path: str, fs_target: str
    ) -> None:
        # Not in fsspec's suite: a recursive mv copies with on_error="raise", and the paths
        # it copies include the directories.
        source = fs_join(fs_path, "mv-source")
        fs.pipe({fs_join(source, "file"): b"1", fs_join(source, "subdir", "subfile"): b"2"})
        fs.mv(source, fs_target, recursive=True)
        assert fs.find(fs_target) == [fs_join(fs_target, "file"), fs_join(fs_target, "subdir", "subfile")]
        assert not fs.exists(source)


class TestCASGet(abstract.AbstractGetTests, CASFixtures):  # type: ignore[misc]
    pass


class TestCASPut(abstract.AbstractPutTests, CASFixtures):  # type: ignore[misc]
    pass


class TestCASPipe(abstract.AbstractPipeTests, CASFixtures):  # type: ignore[misc]
    pass


class TestCASOpen(abstract.AbstractOpenTests, CASFixtures):  # type: ignore[misc]
    pass
