"""Fixtures: real S3 endpoints on 127.0.0.1 (moto, SeaweedFS) and file systems over them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from s3servers import MotoServer, S3Endpoint, SeaweedServer, boto3_client, isolated_aws_environ, make_bucket

from cas_store import CASFileSystem


@pytest.fixture(scope="session", autouse=True)
def _isolated_aws() -> Iterator[None]:
    """Never read the developer's ~/.aws, AWS_PROFILE or proxy settings."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(isolated_aws_environ(saved))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedServer]:
    with SeaweedServer() as server:
        yield server


@pytest.fixture(params=["moto", pytest.param("seaweedfs", marks=pytest.mark.seaweedfs)])
def server(request: pytest.FixtureRequest) -> S3Endpoint:
    """The S3 endpoint for conformance tests: each runs on moto and on SeaweedFS."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture
def bucket(server: S3Endpoint) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    make_bucket(server.endpoint_url, name, server.access_key, server.secret_key)
    return name


@pytest.fixture
def s3client(server: S3Endpoint) -> Any:
    return boto3_client(server)


FSFactory = Callable[..., CASFileSystem]


@pytest.fixture
def make_fs(server: S3Endpoint, bucket: str, tmp_path: Path) -> FSFactory:
    """Build a CASFileSystem on the test's bucket; keyword arguments override the defaults."""

    def factory(**overrides: Any) -> CASFileSystem:
        options: dict[str, Any] = {
            "root": f"s3cas://{bucket}/store",
            "key": server.access_key,
            "secret": server.secret_key,
            "client_kwargs": {"endpoint_url": server.endpoint_url},
            "cache_dir": str(tmp_path / "cache"),
            "skip_instance_cache": True,
        }
        options.update(overrides)
        return CASFileSystem(**options)

    return factory


@pytest.fixture
def fs(make_fs: FSFactory) -> CASFileSystem:
    return make_fs()


@pytest.fixture
def root(bucket: str) -> str:
    """The store root URI of ``fs``."""
    return f"s3cas://{bucket}/store"
