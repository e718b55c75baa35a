"""Blobs in the bucket: immutable objects keyed by the hash of their content."""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable

from cas_store.backend.base import ObjectStore, Sink, gather_limited
from cas_store.layout import Root

log = logging.getLogger(__name__)


class Blobs:
    """Reads and writes the blobs of one store root.

    Blobs are only ever created, never modified: an upload is a conditional create
    (``If-None-Match: *``) where the server supports it, and a 412 answer means the
    identical blob is already there. Servers that ignore the header overwrite the
    blob with identical bytes, which is harmless: the key is a function of the bytes.
    """

    def __init__(
        self, objects: ObjectStore, root: Root, concurrency: int, clock: Callable[[], float]
    ) -> None:
        self.objects = objects
        self.root = root
        self.concurrency = concurrency
        self.clock = clock

    def key(self, algorithm: str, digest: str) -> str:
        return self.root.blob_key(algorithm, digest)

    def store(self, algorithm: str, digest: str, data: bytes) -> concurrent.futures.Future[float]:
        """Start making ``data`` (whose hash is ``digest``) durable as a blob; don't wait.

        The future's result is the proof time of the blob (gc-protocol.md, rule W1): when
        the request that proved it present at its key was *sent*. Asks first (one HEAD)
        and uploads only if the blob is missing: the bytes of a conditional PUT would
        travel even when it is answered 412.
        """
        key = self.key(algorithm, digest)

        async def work() -> float:
            sent = self.clock()
            if await self.objects.head(key) is not None:
                return sent
            sent = self.clock()
            result = await self.objects.put(key, data, if_absent=True)
            if not result.created:
                log.debug("blob %s was stored concurrently by another writer", key)
            return sent

        return self.objects.submit(f"uploading blob {digest}", work)

    def download(self, algorithm: str, digest: str, size: int, part_size: int, sink: Sink) -> None:
        """Stream the blob to ``sink`` with parallel ranged GETs of ``part_size`` bytes.

        Memory stays below ``concurrency * part_size``; the caller verifies the digest.
        Blobs are one chunk each, so more than one range matters only for blobs larger
        than the part size. Raises :class:`~cas_store.errors.ObjectNotFoundError` if the
        blob is not in the bucket.
        """
        key = self.key(algorithm, digest)
        ranges = [(s, min(s + part_size, size)) for s in range(0, size, part_size)] or [(0, 0)]
        self.objects.run(
            f"downloading blob {digest}",
            lambda: gather_limited(
                self.concurrency, [self.objects.get_range(key, s, e, sink) for s, e in ranges]
            ),
        )
