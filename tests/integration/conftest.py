"""Fixtures: real S3 endpoints on 127.0.0.1 (moto, SeaweedFS) and file systems over them.

Each server is started once per session, by the first test that needs it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cas_store import CASFileSystem
from tests.support.clients import S3Endpoint, boto3_client, make_bucket
from tests.support.faults import FaultInjector
from tests.support.moto import MotoServer
from tests.support.seaweed import SeaweedServer


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


@pytest.fixture
def faults(moto: MotoServer) -> Iterator[FaultInjector]:
    """The wire-fault injector in front of the shared moto server, switched off afterwards."""
    try:
        yield moto.faults
    finally:
        moto.faults.off()
        moto.faults.clear_records()
