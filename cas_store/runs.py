"""Chunk runs: how files written on this machine were cut, so that a writer of the same
content can follow the cut instead of running the chunker (see :class:`~cas_store.fileobj.
WriteFile`).

A run is a file's chunk list with, for each chunk, the digest of the content from the
file's start to the chunk's end (its prefix digest). Runs are kept in the local cache's
mirror database, keyed by the hash algorithm, the chunker spec and the file's first chunk,
and the versions of cas_store and of pyfastcdc that cut it, the most recently recorded
:data:`~cas_store.cache.Mirror.RUNS_KEPT` of them.

A run is followed only while the content hashes to its prefix digests, so the content
published is always the content written. Each row carries a checksum (a damaged row is
ignored), and a chunk taken from a run is hashed before its bytes are stored anywhere (see
:meth:`~cas_store.fileobj.ChunkSink.add`): a stale or damaged run costs a lookup. The chunk
*boundaries* are the chunker's only if the run's were: runs are recorded only by
:class:`~cas_store.fileobj.WriteFile` from its own cuts, and the versions in the key keep
a release whose chunker cuts differently from following an earlier release's runs.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from collections.abc import Sequence

import xxhash

from cas_store import __version__
from cas_store.cache import Mirror
from cas_store.chunking import ChunkerSpec
from cas_store.errors import CacheError
from cas_store.fileobj import RunChunk
from cas_store.format import Chunk

log = logging.getLogger(__name__)


def _cutter() -> str:
    try:
        fastcdc = importlib.metadata.version("pyfastcdc")
    except importlib.metadata.PackageNotFoundError:
        fastcdc = "none"
    return f"cas_store {__version__}, pyfastcdc {fastcdc}"


#: What cut the runs recorded by this process (part of their key).
_CUTTER = _cutter()


class ChunkRuns:
    """The runs of one hash algorithm and chunker, in a cache's mirror."""

    def __init__(self, mirror: Mirror, algorithm: str, chunker: ChunkerSpec) -> None:
        self._mirror = mirror
        spec = json.dumps({"name": chunker.name, "params": dict(chunker.params)}, sort_keys=True)
        self._scope = f"{algorithm}|{spec}|{_CUTTER}|"

    def lookup(self, first: Chunk) -> Sequence[RunChunk] | None:
        try:
            raw = self._mirror.get_run(self._scope + first.digest)
        except CacheError as exc:
            log.debug("no chunk run: %s", exc)
            return None
        if raw is None:
            return None
        checksum, _, body = raw.partition(b"\n")
        if xxhash.xxh3_128_hexdigest(body).encode() != checksum:
            log.debug("ignoring a damaged chunk run (checksum mismatch)")
            return None
        try:
            return [
                RunChunk(int(size), str(digest), str(prefix)) for size, digest, prefix in json.loads(body)
            ]
        except (ValueError, TypeError) as exc:  # damaged: only a hint
            log.debug("ignoring a damaged chunk run: %s", exc)
            return None

    def record(self, chunks: Sequence[Chunk], prefixes: Sequence[str]) -> None:
        body = json.dumps(
            [[c.size, c.digest, p] for c, p in zip(chunks, prefixes, strict=True)], separators=(",", ":")
        )
        data = body.encode()
        try:
            self._mirror.put_run(
                self._scope + chunks[0].digest, xxhash.xxh3_128_hexdigest(data).encode() + b"\n" + data
            )
        except CacheError as exc:
            log.debug("could not keep a chunk run: %s", exc)
