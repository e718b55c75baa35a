"""Blobs in S3: immutable objects keyed by the hash of their content."""

from __future__ import annotations

import concurrent.futures
import logging
import os

from cas_store.format import DEFAULT_CHUNK_SIZE
from cas_store.layout import Root
from cas_store.s3 import S3, gather_limited, is_not_implemented, is_precondition_failed

log = logging.getLogger(__name__)

_STREAM_READ = 1 * 2**20


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

    async def _exists(self, key: str) -> bool:
        try:
            await self.s3.fs._call_s3("head_object", Bucket=self.root.bucket, Key=key)
        except FileNotFoundError:
            return False
        return True

    async def _put(self, key: str, data: bytes) -> None:
        condition = {"IfNoneMatch": "*"} if self._conditional else {}
        try:
            await self.s3.fs._call_s3(
                "put_object",
                Bucket=self.root.bucket,
                Key=key,
                Body=data,
                ContentType="application/octet-stream",
                **condition,
            )
        except Exception as exc:
            if is_precondition_failed(exc):
                log.debug("blob %s was stored concurrently by another writer", key)
            elif condition and is_not_implemented(exc):
                log.info("S3 (%s) ignores If-None-Match: uploading unconditionally", self.s3.endpoint)
                self._conditional = False
                await self._put(key, data)
            else:
                raise

    def store(self, algorithm: str, digest: str, data: bytes) -> concurrent.futures.Future[None]:
        """Start making ``data`` (whose hash is ``digest``) durable as a blob; don't wait.

        Asks first (one HEAD) and uploads only if the blob is missing: the bytes of a
        conditional PUT would travel even when it is answered 412.
        """
        key = self.root.blob_key(algorithm, digest)

        async def work() -> None:
            if not await self._exists(key):
                await self._put(key, data)

        return self.s3.submit(f"uploading blob {digest}", work)

    def download(self, algorithm: str, digest: str, size: int, dest: str) -> None:
        """Write the blob to the local file ``dest`` with parallel ranged GETs.

        Memory stays below ``max_concurrency * chunk_size``; the caller verifies the digest.
        Blobs are one chunk each, so a range per request matters only for blobs larger than
        the chunk size (written with a larger one).
        """
        key = self.root.blob_key(algorithm, digest)
        config = self.s3.config
        part = config.chunk_size or DEFAULT_CHUNK_SIZE
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
