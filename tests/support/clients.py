"""boto3 clients, buckets and s3fs options for a loopback S3 endpoint, isolated from ``~/.aws``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import boto3  # type: ignore[import-untyped,unused-ignore]
import botocore.session  # type: ignore[import-untyped,unused-ignore]
from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]
from botocore.exceptions import ClientError  # type: ignore[import-untyped,unused-ignore]

from tests.support.env import REGION

__all__ = ["S3Endpoint", "boto3_client", "make_bucket", "s3fs_options"]


def _isolated_botocore_session() -> Any:
    """A botocore session that never reads ``~/.aws`` nor ``AWS_PROFILE``.

    ``session_vars`` is botocore's public hook to override where each setting comes from;
    with a profile of ``None`` and ``os.devnull`` config files, a stray ``AWS_PROFILE``
    cannot raise ``ProfileNotFound`` and ``~/.aws/config`` cannot change addressing style,
    retries or endpoints.
    """
    return botocore.session.Session(
        session_vars={
            "profile": (None, None, None, None),
            "config_file": (None, None, os.devnull, None),
            "credentials_file": (None, None, os.devnull, None),
        }
    )


class S3Endpoint(Protocol):
    """What the client helpers need from a server."""

    @property
    def endpoint_url(self) -> str: ...

    @property
    def access_key(self) -> str: ...

    @property
    def secret_key(self) -> str: ...


def _client(endpoint_url: str, access_key: str, secret_key: str, config: Config | None) -> Any:
    base = Config(
        region_name=REGION,
        s3={"addressing_style": "path"},
        connect_timeout=5,
        read_timeout=60,
        retries={"mode": "standard", "max_attempts": 3},
    )
    session = boto3.session.Session(
        botocore_session=_isolated_botocore_session(),
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
    )
    return session.client(
        "s3",
        endpoint_url=endpoint_url,
        config=base if config is None else base.merge(config),
    )


def boto3_client(server: S3Endpoint, config: Config | None = None) -> Any:
    """A boto3 S3 client for ``server`` (path-style, us-east-1, ``~/.aws`` ignored).

    ``config`` is merged over the defaults, e.g. ``Config(retries={"max_attempts": 1},
    connect_timeout=1)`` for offline tests or
    ``Config(request_checksum_calculation="when_required")``.
    """
    return _client(server.endpoint_url, server.access_key, server.secret_key, config)


def make_bucket(
    endpoint_url: str,
    bucket: str,
    access_key: str,
    secret_key: str,
    *,
    exist_ok: bool = True,
) -> None:
    """Create ``bucket`` in us-east-1.

    The region comes from the client config and no ``LocationConstraint`` is sent: S3 and
    moto reject ``LocationConstraint=us-east-1``.
    """
    client = _client(endpoint_url, access_key, secret_key, None)
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if not (exist_ok and code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")):
            raise
    finally:
        client.close()


def s3fs_options(server: S3Endpoint) -> dict[str, Any]:
    """``storage_options`` for ``s3fs.S3FileSystem`` talking to ``server``.

    No ``region_name`` in ``client_kwargs``: s3fs would then send a LocationConstraint on
    bucket creation, which us-east-1 rejects (set ``AWS_DEFAULT_REGION`` instead).
    """
    return {
        "key": server.access_key,
        "secret": server.secret_key,
        "client_kwargs": {"endpoint_url": server.endpoint_url},
        "skip_instance_cache": True,
    }


def worker_environ(server: S3Endpoint, cache: Path) -> dict[str, str]:
    """The environment of a worker process (a subprocess of a test) on ``server``: endpoint and
    credentials in the AWS variables, ``cache`` as its cache directory, the repo importable."""
    return {
        **os.environ,
        "AWS_ENDPOINT_URL": server.endpoint_url,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "CAS_STORE_CACHE_DIR": str(cache),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
