"""An s3cas:// URL works on its own: its store root is found from the URL (no ``root`` option)."""

from __future__ import annotations

import uuid
from typing import Any

import pandas as pd
import pytest

from cas_store import CASFileSystem, IncompatibleStoreError
from tests.integration.conftest import FSFactory
from tests.support.clients import S3Endpoint, make_bucket
from tests.support.moto import MotoServer


def _reader_options(server: S3Endpoint, tmp_path: Any) -> dict[str, Any]:
    """What a reader needs: endpoint and credentials only (and its own cache)."""
    return {
        "key": server.access_key,
        "secret": server.secret_key,
        "client_kwargs": {"endpoint_url": server.endpoint_url},
        "cache_dir": str(tmp_path / "reader-cache"),
        "skip_instance_cache": True,
    }


def test_pandas_reads_a_url_below_a_nested_root(
    make_fs: FSFactory, bucket: str, server: S3Endpoint, tmp_path: Any
) -> None:
    writer = make_fs(root=f"s3cas://{bucket}/team/store")
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    with writer.open(f"s3cas://{bucket}/team/store/data/x.parquet", "wb") as f:
        df.to_parquet(f)
    url = f"s3cas://{bucket}/team/store/data/x.parquet"
    got = pd.read_parquet(url, storage_options=_reader_options(server, tmp_path))
    assert got.equals(df)


def test_discovery_costs_requests_once(moto: MotoServer, tmp_path: Any) -> None:
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    make_bucket(moto.endpoint_url, bucket, moto.access_key, moto.secret_key)
    writer = CASFileSystem(root=f"s3cas://{bucket}/a/b", **_reader_options(moto, tmp_path / "w"))
    for name in ("one", "two"):
        writer.pipe(f"s3cas://{bucket}/a/b/d/{name}.txt", name.encode())
    reader = CASFileSystem(**_reader_options(moto, tmp_path))
    with moto.record() as log:
        assert reader.cat(f"s3cas://{bucket}/a/b/d/one.txt") == b"one"
    probes = [r for r in log if r.method == "HEAD" and r.path.endswith("cas-store.json")]
    # Concurrent HEADs of every candidate: bucket root, a, a/b, a/b/d and the path itself
    # (a directory path may be a root; the probe cannot tell a file from a directory).
    assert len(probes) == 5
    with moto.record() as log:
        assert reader.cat(f"s3cas://{bucket}/a/b/d/two.txt") == b"two"
    # The directory's answer is remembered; only the new path itself might still be a root.
    assert [r.path for r in log if r.path.endswith("cas-store.json")] == [
        f"/{bucket}/a/b/d/two.txt/cas-store.json"
    ]
    with moto.record() as log:
        assert reader.cat(f"s3cas://{bucket}/a/b/d/two.txt") == b"two"
    assert not [r for r in log if r.path.endswith("cas-store.json")]
    # Another process with the same cache: the mirror remembers the root.
    again = CASFileSystem(**_reader_options(moto, tmp_path))
    with moto.record() as log:
        assert again.cat(f"s3cas://{bucket}/a/b/d/one.txt") == b"one"
    assert not [r for r in log if r.method == "HEAD" and r.path.endswith("cas-store.json")]


def test_a_url_under_no_store_is_the_bucket_root_store(make_fs: FSFactory, bucket: str) -> None:
    fs = make_fs(root=None)
    fs.pipe(f"s3cas://{bucket}/x/y.txt", b"data")
    assert fs.cat(f"s3cas://{bucket}/x/y.txt") == b"data"
    assert fs.store(f"{bucket}/x/y.txt").root.prefix == ""


def test_a_root_beside_a_path_already_located(
    make_fs: FSFactory, bucket: str, server: S3Endpoint, tmp_path: Any
) -> None:
    """Knowing that ``a/`` holds no marker must not hide a store rooted at ``a/store``."""
    writer = make_fs(root=f"s3cas://{bucket}/a/store")
    writer.pipe(f"s3cas://{bucket}/a/store/x.txt", b"x")
    reader = CASFileSystem(**_reader_options(server, tmp_path))
    # A path in no store: the bucket root holds other objects but no marker, and says so.
    with pytest.raises(IncompatibleStoreError, match=r"a/store/cas-store\.json"):
        reader.info(f"s3cas://{bucket}/a/elsewhere.txt")
    assert reader.ls(f"s3cas://{bucket}/a/store", detail=False) == [f"{bucket}/a/store/x.txt"]
    assert reader.store(f"{bucket}/a/store").root.prefix == "a/store"
