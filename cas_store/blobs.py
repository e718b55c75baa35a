"""Blobs in the bucket: immutable objects keyed by the hash of their content."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
from collections.abc import Callable

from cas_store.backend.base import ObjectStore, Sink, gather_limited, list_all
from cas_store.layout import Root

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Proof:
    """That a blob is in the bucket: when the request that proved it was *sent* (rule W1),
    and the length of its object if the answer told it (raw or compressed, docs/format.md 4.1)."""

    at: float
    stored: int | None = None


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

    def store(
        self,
        algorithm: str,
        digest: str,
        data: bytes,
        ask_first: bool = True,
        uploaded: Callable[[int], None] | None = None,
        encode: Callable[[bytes], bytes] | None = None,
    ) -> concurrent.futures.Future[Proof]:
        """Start making ``data`` durable as the blob of the chunk whose hash is ``digest``;
        don't wait. ``encode``, if given, turns the chunk into what to store (its compressed
        form, or itself); it runs in a worker thread, and only if the blob must be uploaded.

        The future's result is the blob's :class:`Proof` (docs/gc.md, rule W1): when the
        request that proved it present at its key was *sent*, and its object's length. Asks
        first (one HEAD) and uploads only if the blob is missing: the bytes of a conditional
        PUT would travel even when it is answered 412. ``ask_first=False``: the caller just
        saw a 404. ``uploaded`` is called with ``len(data)`` if this call's PUT created the blob.
        """
        key = self.key(algorithm, digest)

        async def work() -> Proof:
            sent = self.clock()
            if ask_first:
                found = await self.objects.head(key)
                if found is not None:
                    return Proof(sent, found.size)
            # Off the event loop and the writer's thread: zstd releases the GIL, so chunks
            # compress in parallel with the cutting and hashing of the next ones.
            body = data if encode is None else await asyncio.to_thread(encode, data)
            sent = self.clock()
            result = await self.objects.put(key, body, if_absent=True)
            if result.created:
                if uploaded is not None:
                    uploaded(len(body))
                return Proof(sent, len(body))
            log.debug("blob %s was stored concurrently by another writer", key)
            # Its bytes may be encoded otherwise than ours: ask how long the object is.
            found = await self.objects.head(key)
            return Proof(sent, None if found is None else found.size)

        return self.objects.submit(f"uploading blob {digest}", work)

    def quarantined(self, algorithm: str, digest: str) -> list[str]:
        """The keys of the blob's quarantine copies (docs/gc.md section 3), one per collector run.

        Object keys only: a server may list a common prefix after its last object is gone.
        """
        return self.objects.run(
            f"looking for blob {digest} in quarantine", lambda: self.quarantined_async(algorithm, digest)
        )

    async def quarantined_async(self, algorithm: str, digest: str) -> list[str]:
        """:meth:`quarantined`, as a coroutine."""
        prefix = self.root.quarantine_prefix(algorithm, digest)
        return [o.key for page in await list_all(self.objects, prefix) for o in page.objects]

    def restore(self, algorithm: str, digest: str, rounds: int = 3) -> float | None:
        """Copy a quarantine copy of the blob back to its main key (rule W3's last resort).

        Returns the proof time (the send time of the request that made or found it present),
        or None if the blob is in neither place. Rounds as for readers (rule R): a copy that
        vanished between the listing and the copy was restored by the collector first.
        """
        key = self.key(algorithm, digest)
        for _ in range(rounds):
            for source in self.quarantined(algorithm, digest):
                sent = self.clock()
                if self.objects.run(
                    f"restoring blob {digest} from quarantine",
                    lambda: self.objects.copy(source, key, if_absent=True),  # noqa: B023 - run waits
                ):
                    log.info("restored blob %s from quarantine copy %s", digest, source)
                    return sent
            sent = self.clock()
            if self.objects.run(f"checking blob {digest}", lambda: self.objects.head(key)) is not None:
                return sent
        return None

    def download(
        self, algorithm: str, digest: str, size: int, part_size: int, sink: Sink, key: str | None = None
    ) -> None:
        """Stream the blob to ``sink`` with parallel ranged GETs of ``part_size`` bytes.

        Memory stays below ``concurrency * part_size``; the caller verifies the digest.
        Blobs are one chunk each, so more than one range matters only for blobs larger
        than the part size. ``key``: another object holding the blob (a quarantine copy).
        Raises :class:`~cas_store.errors.ObjectNotFoundError` if the object does not exist.
        """
        self.objects.run(
            f"downloading blob {digest}",
            lambda: self.download_async(algorithm, digest, size, part_size, sink, key),
        )

    async def download_async(
        self, algorithm: str, digest: str, size: int, part_size: int, sink: Sink, key: str | None = None
    ) -> None:
        """:meth:`download`, as a coroutine."""
        key = key or self.key(algorithm, digest)
        ranges = [(s, min(s + part_size, size)) for s in range(0, size, part_size)] or [(0, 0)]
        await gather_limited(self.concurrency, [self.objects.get_range(key, s, e, sink) for s, e in ranges])
