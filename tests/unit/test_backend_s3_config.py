"""How the s3fs backend names its endpoint (store ids and messages); no server needed."""

from __future__ import annotations

import pytest

from cas_store.backend.s3 import safe_endpoint
from cas_store.config import StoreConfig


def test_endpoint_comes_from_client_kwargs_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert safe_endpoint(StoreConfig()) == "AWS S3"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert safe_endpoint(StoreConfig()) == "http://127.0.0.1:9000"  # what botocore will use too
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9001")
    assert safe_endpoint(StoreConfig()) == "http://127.0.0.1:9001"
    explicit = StoreConfig(client_kwargs={"endpoint_url": "http://user:pw@127.0.0.1:9002/"})
    assert safe_endpoint(explicit) == "http://127.0.0.1:9002"  # no credentials in ids or messages
