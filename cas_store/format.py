"""Bucket format v1: the format marker and manifest entries, as bytes.

Pure encoding/decoding and validation, no I/O. ``docs/format.md`` is the normative
description of these documents; a change here that is not reflected there is a bug.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from cas_store.chunking import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, ChunkerSpec
from cas_store.errors import IncompatibleStoreError, IntegrityError
from cas_store.hashing import check_algorithm, is_valid_digest

__all__ = ["DEFAULT_CHUNK_SIZE", "MAX_CHUNK_SIZE", "MIN_CHUNK_SIZE", "Chunk", "Entry", "Marker"]

FORMAT_NAME = "cas_store"
FORMAT_VERSION = 1
ENTRY_VERSION = 1


@dataclass(frozen=True)
class Marker:
    """The store's format marker (``<root>/cas-store.json``)."""

    version: int
    hash_algorithm: str
    chunk_size: int | None = None  # None in markers that predate the field
    created_by: str = ""

    @property
    def chunker_spec(self) -> ChunkerSpec:
        """Version 1 stores cut at fixed offsets: ``chunk_size``, 8 MiB if the marker predates it."""
        return ChunkerSpec("fixed", {"size": self.chunk_size or DEFAULT_CHUNK_SIZE})

    def encode(self) -> bytes:
        doc: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": self.version,
            "hash_algorithm": self.hash_algorithm,
            "created_by": self.created_by,
        }
        if self.chunk_size is not None:
            doc["chunk_size"] = self.chunk_size
        return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes, where: str) -> Marker:
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
                raise ValueError("not a cas_store marker")
            version = doc["version"]
            algorithm = doc["hash_algorithm"]
        except (ValueError, KeyError, TypeError) as exc:
            raise IncompatibleStoreError(
                f"{where} is not a valid cas_store format marker ({exc}); "
                "this prefix is not a cas_store store: point the root at another prefix"
            ) from exc
        if version != FORMAT_VERSION:
            raise IncompatibleStoreError(
                f"the store at {where} uses bucket format version {version}, and this cas_store "
                f"reads version {FORMAT_VERSION} only; upgrade cas_store or use another root"
            )
        try:
            check_algorithm(algorithm)
        except ValueError as exc:
            raise IncompatibleStoreError(f"the store at {where}: {exc}") from exc
        chunk_size = doc.get("chunk_size")
        if chunk_size is not None and (
            type(chunk_size) is not int or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE
        ):
            raise IncompatibleStoreError(
                f"the store at {where} declares chunk_size {chunk_size!r}; cas_store writes chunks of "
                f"{MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes: use another root"
            )
        return cls(version, algorithm, chunk_size, str(doc.get("created_by", "")))


@dataclass(frozen=True)
class Chunk:
    """A contiguous run of a file's bytes, stored as one blob."""

    digest: str
    size: int


@dataclass(frozen=True)
class Entry:
    """A manifest entry: what one logical path holds.

    ``digest`` is the hash of the whole content. The content is either ``inline``
    (tiny files) or the concatenation of ``chunks``, each a blob keyed by its own
    digest (writers cut files at fixed offsets; readers accept any cut).
    """

    size: int
    algorithm: str
    digest: str
    chunks: tuple[Chunk, ...] = ()
    inline: bytes | None = field(default=None, repr=False)

    def encode(self) -> bytes:
        doc: dict[str, Any] = {
            "v": ENTRY_VERSION,
            "size": self.size,
            "algorithm": self.algorithm,
            "digest": self.digest,
            "chunks": [{"digest": c.digest, "size": c.size} for c in self.chunks],
        }
        if self.inline is not None:
            doc["inline"] = base64.b64encode(self.inline).decode("ascii")
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes, where: str) -> Entry:
        try:
            doc = json.loads(data)
            version = doc["v"]
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"manifest entry {where} is not valid JSON ({exc})") from exc
        if version != ENTRY_VERSION:
            raise IncompatibleStoreError(
                f"manifest entry {where} has entry version {version}; this cas_store reads "
                f"version {ENTRY_VERSION}: upgrade cas_store"
            )
        try:
            inline = doc.get("inline")
            entry = cls(
                size=int(doc["size"]),
                algorithm=str(doc["algorithm"]),
                digest=str(doc["digest"]),
                chunks=tuple(Chunk(str(c["digest"]), int(c["size"])) for c in doc["chunks"]),
                inline=None if inline is None else base64.b64decode(inline, validate=True),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"manifest entry {where} is malformed ({exc!r})") from exc
        entry.validate(where)
        return entry

    def validate(self, where: str) -> None:
        """Check the structural rules of docs/format.md (not the content hashes)."""
        problems = []
        if self.size < 0:
            problems.append("negative size")
        try:
            check_algorithm(self.algorithm)
        except ValueError as exc:
            raise IncompatibleStoreError(f"manifest entry {where}: {exc}") from exc
        if not is_valid_digest(self.algorithm, self.digest):
            problems.append("bad digest")
        if self.inline is not None:
            if self.chunks:
                problems.append("inline entry with chunks")
            if len(self.inline) != self.size:
                problems.append("inline data length differs from size")
        else:
            if sum(c.size for c in self.chunks) != self.size:
                problems.append("chunk sizes do not add up to size")
            if any(not is_valid_digest(self.algorithm, c.digest) or c.size <= 0 for c in self.chunks):
                problems.append("bad chunk")
        if problems:
            raise IntegrityError(f"manifest entry {where} is malformed: {', '.join(problems)}")
