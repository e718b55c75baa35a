"""User-caused failures raise specific exceptions whose messages say what to do;
credentials never leak."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from cas_store import (
    BucketNotFoundError,
    CASFileSystem,
    CredentialsError,
    IncompatibleStoreError,
    StoreConfig,
    StoreOfflineError,
)
from tests.integration.conftest import FSFactory
from tests.support.clients import boto3_client, make_bucket
from tests.support.moto import MotoServer
from tests.support.ports import free_ports
from tests.support.seaweed import SeaweedServer


@pytest.fixture
def server(moto: MotoServer) -> MotoServer:
    return moto


def _fs(endpoint_url: str, tmp_path: Path, root: str = "s3cas://b/x", **credentials: str) -> CASFileSystem:
    return CASFileSystem(
        root=root,
        client_kwargs={"endpoint_url": endpoint_url},
        cache_dir=str(tmp_path),
        skip_instance_cache=True,
        **credentials,
    )


def test_missing_bucket(moto: MotoServer, tmp_path: Path) -> None:
    fs = _fs(moto.endpoint_url, tmp_path, "s3cas://no-such-bucket-here/x", key="testing", secret="testing")
    with pytest.raises(BucketNotFoundError, match=r"bucket 'no-such-bucket-here' does not exist.*create it"):
        fs.pipe("s3cas://no-such-bucket-here/x/f", b"1")
    with pytest.raises(BucketNotFoundError, match="'no-such-bucket-here'"):
        fs.ls("s3cas://no-such-bucket-here/x")


def test_unknown_profile_is_a_credentials_error(moto: MotoServer, tmp_path: Path) -> None:
    fs = _fs(moto.endpoint_url, tmp_path, profile="nope")
    with pytest.raises(CredentialsError, match=r"profile 'nope' is not defined.*aws configure"):
        fs.ls("s3cas://b/x")


def test_closed_port_says_to_check_the_endpoint(tmp_path: Path) -> None:
    port = free_ports(1)[0]  # nothing listens there
    fs = _fs(f"http://127.0.0.1:{port}", tmp_path, key="k", secret="s")
    with pytest.raises(StoreOfflineError, match=r"refused the connection.*check endpoint_url"):
        fs.ls("s3cas://b/x")


def test_reading_a_foreign_prefix_is_not_an_empty_store(
    fs: CASFileSystem, root: str, s3client: Any, bucket: str
) -> None:
    s3client.put_object(Bucket=bucket, Key="store/someone-elses-data.csv", Body=b"a,b")
    with pytest.raises(IncompatibleStoreError, match="not a cas_store store"):
        fs.ls(root)
    with pytest.raises(IncompatibleStoreError, match="not a cas_store store"):
        fs.cat(f"{root}/someone-elses-data.csv")


def test_incompatible_marker(fs: CASFileSystem, root: str, s3client: Any, bucket: str) -> None:
    marker = {"format": "cas_store", "version": 7, "hash_algorithm": "xxh128"}
    s3client.put_object(Bucket=bucket, Key="store/cas-store.json", Body=json.dumps(marker).encode())
    with pytest.raises(IncompatibleStoreError, match=r"version 7.*upgrade"):
        fs.pipe(f"{root}/f", b"x")
    with pytest.raises(IncompatibleStoreError):
        fs.cat(f"{root}/f")


def test_foreign_prefix_is_not_taken_over(fs: CASFileSystem, root: str, s3client: Any, bucket: str) -> None:
    s3client.put_object(Bucket=bucket, Key="store/someone-elses-data.csv", Body=b"a,b")
    with pytest.raises(IncompatibleStoreError, match="empty prefix"):
        fs.pipe(f"{root}/f", b"x")
    assert s3client.list_objects_v2(Bucket=bucket, Prefix="store/")["KeyCount"] == 1


def test_configured_algorithm_must_match_the_store(
    make_fs: FSFactory, root: str, s3client: Any, bucket: str, tmp_path: Path
) -> None:
    make_fs(hash_algorithm="sha256").pipe(f"{root}/f", os.urandom(50_000))
    keys = [o["Key"] for o in s3client.list_objects_v2(Bucket=bucket, Prefix="store/blobs/")["Contents"]]
    assert keys[0].startswith("store/blobs/sha256/")
    assert make_fs().cat(f"{root}/f")  # no algorithm configured: the store's is used
    with pytest.raises(IncompatibleStoreError, match=r"sha256.*xxh128"):
        make_fs(hash_algorithm="xxh128", cache_dir=str(tmp_path / "other")).pipe(f"{root}/g", b"x")


@pytest.mark.parametrize("algorithm", ["blake3", "sha256"])
def test_cryptographic_algorithms_work_end_to_end(
    make_fs: FSFactory, root: str, algorithm: str, tmp_path: Path
) -> None:
    data = os.urandom(200_000)
    make_fs(hash_algorithm=algorithm).pipe(f"{root}/f", data)
    cold = make_fs(cache_dir=str(tmp_path / "cold"))
    assert cold.cat(f"{root}/f") == data
    assert cold.info(f"{root}/f")["algorithm"] == algorithm


def test_bad_options_are_rejected_with_guidance(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unknown cas_store option 'cache_sise'"):
        CASFileSystem(root="s3cas://b", cache_sise=1, cache_dir=str(tmp_path), skip_instance_cache=True)
    with pytest.raises(ValueError, match="unknown hash algorithm"):
        StoreConfig(hash_algorithm="md5")
    with pytest.raises(ValueError, match="1 MiB"):
        StoreConfig(chunk_size=1024)
    with pytest.raises(ValueError, match="both"):
        StoreConfig(aws_access_key_id="only-the-key")


SECRET = "SEKRET-do-not-leak-9f8e7d"


@pytest.mark.seaweedfs
def test_wrong_credentials_and_no_leaks(
    seaweedfs: SeaweedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SeaweedFS checks signatures (moto does not): a wrong secret is a CredentialsError,
    and the secret appears in no log record, error, repr, cache file or bucket object."""
    caplog.set_level(logging.DEBUG)
    bucket = "creds-test"
    make_bucket(seaweedfs.endpoint_url, bucket, seaweedfs.access_key, seaweedfs.secret_key)
    cache = tmp_path / "cache"
    wrong = CASFileSystem(
        root=f"s3cas://{bucket}/s",
        key=seaweedfs.access_key,
        secret=SECRET,
        client_kwargs={"endpoint_url": seaweedfs.endpoint_url},
        cache_dir=str(cache),
        skip_instance_cache=True,
    )
    with pytest.raises(CredentialsError, match="check the credentials") as excinfo:
        wrong.pipe(f"s3cas://{bucket}/s/f", b"x")
    errors = [str(excinfo.value), repr(excinfo.value), repr(wrong.config)]

    # A working store with the secret in its options, exercised, must not leak it either.
    good_secret_fs = CASFileSystem(
        root=f"s3cas://{bucket}/s",
        key=seaweedfs.access_key,
        secret=seaweedfs.secret_key,
        client_kwargs={"endpoint_url": seaweedfs.endpoint_url},
        cache_dir=str(cache),
        skip_instance_cache=True,
    )
    good_secret_fs.pipe(f"s3cas://{bucket}/s/f", os.urandom(100_000))
    good_secret_fs.cat(f"s3cas://{bucket}/s/f")
    errors.append(repr(good_secret_fs.config))

    haystacks = [caplog.text, *errors]
    for path in cache.rglob("*"):
        if path.is_file():
            haystacks.append(path.read_bytes().decode("latin-1"))
    client = boto3_client(seaweedfs)
    for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        haystacks.append(client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode("latin-1"))
    for secret in (SECRET, seaweedfs.secret_key):
        assert not any(secret in h for h in haystacks)
