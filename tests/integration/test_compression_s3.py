"""Compressed blobs over HTTP (issue 12), on moto and SeaweedFS: what lands in the bucket,
what the entries record, and byte-identical reads from an empty cache and offline.

The bucket is inspected with boto3, outside cas_store.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import zstandard

from cas_store.config import MiB
from cas_store.maintenance import usage, verify
from tests.integration.conftest import FSFactory
from tests.support.clients import S3Endpoint
from tests.support.proxy import BlackholeProxy
from tests.support.workloads import compressible_csv


def _objects(s3client: Any, bucket: str, prefix: str) -> dict[str, int]:
    pages = s3client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def _entry(s3client: Any, bucket: str, rel: str) -> dict[str, Any]:
    body = s3client.get_object(Bucket=bucket, Key=f"store/manifest/{rel}")["Body"].read()
    return json.loads(body)  # type: ignore[no-any-return]


def _blob_sizes(s3client: Any, bucket: str) -> dict[str, int]:
    return {k.rsplit("/", 1)[1]: size for k, size in _objects(s3client, bucket, "store/blobs/").items()}


def test_blobs_are_compressed_where_it_pays_and_read_back_identical(
    make_fs: FSFactory, s3client: Any, bucket: str, root: str, tmp_path: Path, server: S3Endpoint
) -> None:
    text = compressible_csv(6 * MiB, seed=1)
    noise = random.Random(2).randbytes(3 * MiB)
    writer = make_fs()
    writer.pipe(f"{root}/table.csv", text)
    writer.pipe(f"{root}/weights.bin", noise)

    marker = json.loads(s3client.get_object(Bucket=bucket, Key="store/cas-store.json")["Body"].read())
    assert marker["version"] == 3 and marker["compression"]["codec"] == "zstd"
    sizes = _blob_sizes(s3client, bucket)
    text_chunks = _entry(s3client, bucket, "table.csv")["chunks"]
    assert len(text_chunks) >= 2
    for c in text_chunks:  # the entry records the length each blob has in the bucket
        assert c["enc"] == "zstd" and c["stored"] == sizes[c["digest"]] <= c["size"] * 7 / 8
    for c in _entry(s3client, bucket, "weights.bin")["chunks"]:
        assert "enc" not in c and sizes[c["digest"]] == c["size"]
    stored = sum(c["stored"] for c in text_chunks)
    assert stored <= 1.05 * len(zstandard.ZstdCompressor(level=1).compress(text))
    assert sum(sizes.values()) == stored + len(noise)

    with BlackholeProxy(server.endpoint_url) as proxy:  # a laptop's way to the server
        laptop = {
            "cache_dir": str(tmp_path / "laptop"),
            "client_kwargs": {"endpoint_url": proxy.endpoint_url},
        }
        cold = make_fs(**laptop)
        assert cold.cat(f"{root}/table.csv") == text and cold.cat(f"{root}/weights.bin") == noise
        with cold.open(f"{root}/table.csv", "rb") as f:  # a range read: only the covering chunks
            f.seek(3 * MiB)
            assert f.read(100_000) == text[3 * MiB : 3 * MiB + 100_000]
    # Offline (the way is gone: connections refused), in a new filesystem: from the cache.
    assert make_fs(**laptop).cat(f"{root}/table.csv") == text

    u = usage(writer.store())
    assert (u.logical_bytes, u.deduplicated_bytes) == (len(text) + len(noise), len(text) + len(noise))
    assert u.stored_bytes == sum(sizes.values()) and u.compression_ratio > 1.3
    assert verify(writer.store(), deep=True).ok


def test_readers_decode_blobs_their_entry_records_as_raw(
    make_fs: FSFactory, s3client: Any, bucket: str, root: str, tmp_path: Path
) -> None:
    """The record is a hint: a reader that asks for a chunk's size of a shorter (compressed)
    object learns it from the server's answer (Content-Range, or 416 for a range past its
    end) and decodes it. 12 MiB fixed chunks: two ranged GETs per chunk."""
    text = compressible_csv(12 * MiB, seed=3)
    writer = make_fs(chunker="fixed", chunk_size=12 * MiB)
    writer.pipe(f"{root}/t.csv", text)
    doc = _entry(s3client, bucket, "t.csv")
    (chunk,) = doc["chunks"]
    assert chunk["enc"] == "zstd" and chunk["stored"] < 8 * MiB
    doc["chunks"] = [{"digest": chunk["digest"], "size": chunk["size"]}]
    s3client.put_object(Bucket=bucket, Key="store/manifest/raw-record.csv", Body=json.dumps(doc).encode())
    reader = make_fs(cache_dir=str(tmp_path / "reader"))
    assert reader.cat(f"{root}/raw-record.csv") == text
    assert reader.cat(f"{root}/t.csv") == text


def test_a_store_without_compression_is_format_2_with_raw_blobs(
    make_fs: FSFactory, s3client: Any, bucket: str, root: str, tmp_path: Path
) -> None:
    text = compressible_csv(3 * MiB, seed=4)
    make_fs(compression="none").pipe(f"{root}/t.csv", text)
    marker = json.loads(s3client.get_object(Bucket=bucket, Key="store/cas-store.json")["Body"].read())
    assert marker["version"] == 2 and "compression" not in marker
    assert sum(_blob_sizes(s3client, bucket).values()) == len(text)
    assert make_fs(cache_dir=str(tmp_path / "r")).cat(f"{root}/t.csv") == text
