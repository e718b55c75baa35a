"""Blobs in S3: immutable objects keyed by the hash of their content."""

from __future__ import annotations

import logging
import os
from typing import Any

from cas_store.layout import Root
from cas_store.s3 import S3, gather_limited, is_not_implemented, is_precondition_failed

log = logging.getLogger(__name__)

_STREAM_READ = 1 * 2**20
_MAX_PARTS = 10_000


class BlobStore:
    """Reads and writes the blobs of one store root.

    Blobs are only ever created, never modified: an upload is a conditional create
    (``If-None-Match: *``) where the server supports it, and a 412 answer means the
    identical blob is already there. Servers that ignore the header overwrite the
    blob with identical bytes, which is harmless: the key is a function of the bytes.
    """

    def __init__(self, s3: S3, root: Root) -> None:
        self.s3 = s3
        self.root = root
        self._conditional = True  # cleared if the server answers 501 to If-None-Match

    def exists(self, algorithm: str, digest: str) -> bool:
        """One HEAD request: is the blob in the bucket?"""
        key = self.root.blob_key(algorithm, digest)
        try:
            self.s3.call(f"checking blob {digest}", "head_object", Bucket=self.root.bucket, Key=key)
        except FileNotFoundError:
            return False
        return True

    def upload(self, algorithm: str, digest: str, local_path: str) -> None:
        """Store ``local_path`` (whose content hashes to ``digest``) as a blob.

        Large files go up as a parallel multipart upload holding at most
        ``max_concurrency * part_size`` bytes in memory.
        """
        path = self.root.s3_path(self.root.blob_key(algorithm, digest))
        config = self.s3.config
        # S3 allows at most 10,000 parts: very large files need larger parts.
        part_size = max(config.part_size, -(-os.path.getsize(local_path) // _MAX_PARTS))
        what = f"uploading blob {digest}"

        def put(mode: str) -> Any:
            return self.s3.run(
                what,
                lambda: self.s3.fs._put_file(
                    local_path,
                    path,
                    chunksize=part_size,
                    max_concurrency=config.max_concurrency,
                    mode=mode,
                    ContentType="application/octet-stream",
                ),
            )

        try:
            put("create" if self._conditional else "overwrite")
        except Exception as exc:
            if is_precondition_failed(exc):
                log.debug("blob %s was stored concurrently by another writer", digest)
                return
            if self._conditional and is_not_implemented(exc):
                log.info(
                    "S3 (%s) does not implement If-None-Match; uploading unconditionally", self.s3.endpoint
                )
                self._conditional = False
                put("overwrite")
                return
            raise

    def download(self, algorithm: str, digest: str, size: int, dest: str) -> None:
        """Write the blob to the local file ``dest`` with parallel ranged GETs.

        Memory stays below ``max_concurrency * part_size``; the caller verifies the digest.
        """
        key = self.root.blob_key(algorithm, digest)
        config = self.s3.config
        part = config.part_size
        fs = self.s3.fs
        bucket = self.root.bucket

        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size)

            async def fetch(start: int, end: int) -> None:
                extra = {"Range": f"bytes={start}-{end - 1}"} if size > part else {}
                resp = await fs._call_s3("get_object", Bucket=bucket, Key=key, **extra)
                body = resp["Body"]
                offset = start
                try:
                    while True:
                        data = await body.read(_STREAM_READ)
                        if not data:
                            break
                        os.pwrite(fd, data, offset)
                        offset += len(data)
                finally:
                    body.close()
                if offset != end:
                    raise OSError(f"short read of blob {digest}: got {offset - start} of {end - start} bytes")

            ranges = [(s, min(s + part, size)) for s in range(0, size, part)] or [(0, 0)]
            self.s3.run(
                f"downloading blob {digest}",
                lambda: gather_limited(config.max_concurrency, [fetch(s, e) for s, e in ranges]),
            )
        finally:
            os.close(fd)
