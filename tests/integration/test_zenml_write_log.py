"""The flavor's log_writes lines: one per file a step writes, with what it added to the bucket."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytest

from cas_store.zenml import S3CASArtifactStore, S3CASArtifactStoreConfig
from tests.support.clients import make_bucket
from tests.support.moto import MotoServer
from tests.support.zenml import make_component

LOGGER = "cas_store.zenml.writes"


def _store(moto: MotoServer, tmp_path: Path, **overrides: object) -> tuple[S3CASArtifactStore, str]:
    bucket = f"w-{uuid.uuid4().hex[:12]}"
    make_bucket(moto.endpoint_url, bucket, moto.access_key, moto.secret_key)
    root = f"s3cas://{bucket}/zenml"
    config = S3CASArtifactStoreConfig(
        path=root,
        aws_access_key_id=moto.access_key,
        aws_secret_access_key=moto.secret_key,
        client_kwargs={"endpoint_url": moto.endpoint_url},
        cache_dir=str(tmp_path / "cache"),
        **overrides,
    )
    return make_component(S3CASArtifactStore, config, "s3cas"), root


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_each_written_file_is_logged_with_what_it_added(
    moto: MotoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, root = _store(moto, tmp_path)
    data = os.urandom(3 * 2**20)
    caplog.set_level(logging.INFO, logger=LOGGER)
    for run in ("run1", "run2"):
        with store.open(f"{root}/train/model/{run}/data.bin", "wb") as f:
            f.write(data)
    with store.open(f"{root}/train/summary/run2/data.json", "w") as f:
        f.write('{"loss": 0.1}')
    with store.open(f"{root}/logs/steps/run2/log.txt", "w") as f:  # ZenML's own step logs
        f.write("a log line")
    assert _lines(caplog) == [
        "cas_store: train/model/run1/data.bin: 3.0 MiB written, 3.0 MiB added to the bucket (new content)",
        "cas_store: train/model/run2/data.bin: 3.0 MiB written, 0 B added to the bucket "
        "(all of it was stored already)",
        "cas_store: train/summary/run2/data.json: 13 B written, 13 B added to the bucket "
        "(a small file: stored whole each time)",
    ]


def test_a_file_sharing_part_of_its_content_says_how_much(
    moto: MotoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, root = _store(moto, tmp_path, chunker="fixed", chunk_size=2**20)
    head, tail = os.urandom(3 * 2**20), os.urandom(2**20)
    caplog.set_level(logging.INFO, logger=LOGGER)
    store.filesystem.pipe(f"{root}/a.bin", head)
    caplog.clear()
    with store.open(f"{root}/b.bin", "wb") as f:
        f.write(head + tail)
    assert _lines(caplog) == [
        "cas_store: b.bin: 4.0 MiB written, 1.0 MiB added to the bucket (75% of it was stored already)"
    ]


def test_log_writes_false_logs_nothing(
    moto: MotoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, root = _store(moto, tmp_path, log_writes=False)
    caplog.set_level(logging.INFO, logger=LOGGER)
    with store.open(f"{root}/x/data.bin", "wb") as f:
        f.write(os.urandom(2**20))
    assert store.exists(f"{root}/x/data.bin")
    assert _lines(caplog) == []
