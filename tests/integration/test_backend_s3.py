"""The s3fs ObjectStore keeps the backend contract on real S3 servers over HTTP (moto, SeaweedFS)."""

from __future__ import annotations

import pytest

from cas_store.backend.s3 import S3Connection, S3ObjectStore
from cas_store.config import StoreConfig
from tests.support.clients import S3Endpoint
from tests.support.objectstore_contract import ObjectStoreContract


def connection(server: S3Endpoint, **overrides: object) -> S3Connection:
    return S3Connection(
        StoreConfig(
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            client_kwargs={"endpoint_url": server.endpoint_url},
            **overrides,  # type: ignore[arg-type]
        )
    )


class TestS3Contract(ObjectStoreContract):
    @pytest.fixture
    def objects(self, server: S3Endpoint, bucket: str) -> S3ObjectStore:
        return connection(server).bucket(bucket)
