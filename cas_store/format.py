"""Bucket format (versions 1 to 3): the format marker and manifest entries, as bytes.

Pure encoding/decoding and validation, no I/O. ``docs/format.md`` is the normative
description of these documents; a change here that is not reflected there is a bug.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from cas_store.chunking import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, ChunkerSpec
from cas_store.compression import ZSTD, Compression
from cas_store.errors import IncompatibleStoreError, IntegrityError
from cas_store.hashing import check_algorithm, is_valid_digest
from cas_store.safety import GCDurations

__all__ = ["DEFAULT_CHUNK_SIZE", "MAX_CHUNK_SIZE", "MIN_CHUNK_SIZE", "Chunk", "Entry", "Marker"]

FORMAT_NAME = "cas_store"
#: The version new stores are created with: 3, version 2 with compressed blobs; a store
#: created without compression is version 2, which cas_store releases before 0.3 read too.
FORMAT_VERSION = 3
#: Versions this cas_store reads and writes. Version 1 stores have no collector, so their
#: writers need no rule W; ``cas-store upgrade`` converts them. Version 3 is the one that
#: releases which cannot read compressed blobs refuse.
SUPPORTED_VERSIONS = (1, 2, 3)
ENTRY_VERSION = 1


@dataclass(frozen=True)
class Marker:
    """The store's format marker (``<root>/cas-store.json``).

    Version 1: ``hash_algorithm`` and ``chunk_size``. Version 2 adds ``store_id``, the
    ``chunker`` spec (which replaces ``chunk_size``) and the ``gc`` durations, and
    ``upgraded_at`` (the writer's clock) when it was converted from version 1. Version 3
    is version 2 with ``compression``: its blobs may hold zstd frames.
    """

    version: int
    hash_algorithm: str
    chunk_size: int | None = None  # version 1 only; None in markers that predate the field
    created_by: str = ""
    store_id: str | None = None
    chunker: ChunkerSpec | None = None
    gc: GCDurations | None = None
    upgraded_at: float | None = None
    compression: Compression | None = None  # version 3 only

    @classmethod
    def new(
        cls,
        hash_algorithm: str,
        chunker: ChunkerSpec,
        gc_grace: float,
        created_by: str,
        compression: Compression | None = None,
    ) -> Marker:
        """The marker of a new store, with a fresh random ``store_id``: version 3 with
        ``compression``, else version 2."""
        return cls(
            3 if compression is not None else 2,
            hash_algorithm,
            created_by=created_by,
            store_id=secrets.token_hex(16),
            chunker=chunker,
            gc=GCDurations.from_grace(gc_grace),
            compression=compression,
        )

    def upgraded(self, gc_grace: float, created_by: str, now: float) -> Marker:
        """This version 1 marker as version 2: same hash and chunker, a new ``store_id``."""
        if self.version != 1:
            raise ValueError(f"only a version 1 marker is upgraded, not version {self.version}")
        new = Marker.new(self.hash_algorithm, self.chunker_spec, gc_grace, created_by)
        return dataclasses.replace(new, upgraded_at=now)

    @property
    def chunker_spec(self) -> ChunkerSpec:
        """How writers cut: version 1 stores at fixed offsets (``chunk_size``, 8 MiB if absent)."""
        if self.chunker is not None:
            return self.chunker
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
        if self.store_id is not None:
            doc["store_id"] = self.store_id
        if self.chunker is not None:
            doc["chunker"] = {"name": self.chunker.name, "params": dict(self.chunker.params)}
        if self.gc is not None:
            doc["gc"] = self.gc.to_dict()
        if self.upgraded_at is not None:
            doc["upgraded_at"] = self.upgraded_at
        if self.compression is not None:
            doc["compression"] = self.compression.to_dict()
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
        if version not in SUPPORTED_VERSIONS or type(version) is not int:
            raise IncompatibleStoreError(
                f"the store at {where} uses bucket format version {version}, and this cas_store "
                f"reads versions {', '.join(map(str, SUPPORTED_VERSIONS))}: upgrade cas_store or use "
                "another root"
            )
        try:
            check_algorithm(algorithm)
        except ValueError as exc:
            raise IncompatibleStoreError(f"the store at {where}: {exc}") from exc
        created_by = str(doc.get("created_by", ""))
        if version == 1:
            chunk_size = doc.get("chunk_size")
            if chunk_size is not None and (
                type(chunk_size) is not int or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE
            ):
                raise IncompatibleStoreError(
                    f"the store at {where} declares chunk_size {chunk_size!r}; cas_store writes chunks "
                    f"of {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes: use another root"
                )
            return cls(version, algorithm, chunk_size, created_by)
        return cls(
            version,
            algorithm,
            created_by=created_by,
            store_id=_store_id(doc.get("store_id"), where),
            chunker=_chunker(doc.get("chunker"), where),
            gc=GCDurations.from_dict(doc.get("gc"), where),
            upgraded_at=_optional_time(doc.get("upgraded_at"), where),
            compression=_compression(doc.get("compression"), where) if version == 3 else None,
        )


def _store_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{32}", value):
        raise IncompatibleStoreError(
            f"the store at {where} has no valid store_id in its marker ({value!r}): restore the marker"
        )
    return value


def _chunker(value: Any, where: str) -> ChunkerSpec:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise IncompatibleStoreError(
            f"the store at {where} has no valid chunker in its marker ({value!r}): restore the marker"
        )
    params = value.get("params", {})
    if not isinstance(params, dict):
        raise IncompatibleStoreError(f"the store at {where} has malformed chunker params ({params!r})")
    spec = ChunkerSpec(value["name"], params)
    spec.build()  # an unknown or misconfigured chunker fails on open, not at the first write
    return spec


def _compression(value: Any, where: str) -> Compression:
    try:
        return Compression.from_dict(value)
    except ValueError as exc:
        raise IncompatibleStoreError(
            f"the store at {where} has no valid compression settings in its marker ({exc}): "
            "restore the marker, or upgrade cas_store if a newer release wrote it"
        ) from exc


def _optional_time(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IncompatibleStoreError(f"the store at {where} has a malformed upgraded_at ({value!r})")
    return float(value)


@dataclass(frozen=True)
class Chunk:
    """A contiguous run of a file's bytes, stored as one blob.

    ``stored``: the length of the blob when the writer stored it compressed (a zstd frame,
    shorter than ``size``); None when stored raw. What the writer saw: a reader decides
    by the length of the object it gets (:func:`cas_store.compression.decode`).
    """

    digest: str
    size: int
    stored: int | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"digest": self.digest, "size": self.size}
        if self.stored is not None:
            doc["enc"] = ZSTD
            doc["stored"] = self.stored
        return doc

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> Chunk:
        if not isinstance(doc, dict):
            raise TypeError(f"a chunk must be an object, not {doc!r}")
        enc = doc.get("enc")
        if enc is None:
            return cls(str(doc["digest"]), int(doc["size"]))
        if enc != ZSTD:
            raise IncompatibleStoreError(
                f"manifest entry {where} has a chunk encoded as {enc!r}, which this cas_store cannot "
                "decode: upgrade cas_store"
            )
        return cls(str(doc["digest"]), int(doc["size"]), int(doc["stored"]))

    @property
    def stored_size(self) -> int:
        """The bytes of its blob, as the writer stored it."""
        return self.size if self.stored is None else self.stored


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
            "chunks": [c.to_dict() for c in self.chunks],
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
                chunks=tuple(Chunk.from_dict(c, where) for c in doc["chunks"]),
                inline=None if inline is None else base64.b64decode(inline, validate=True),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"manifest entry {where} is malformed ({exc!r})") from exc
        entry.validate(where)
        return entry

    def with_sizes(self, sizes: dict[str, int]) -> Entry:
        """This entry, each chunk recording the length of its blob given in ``sizes`` (by
        digest): a length below the chunk's size is a compressed blob, the size itself raw."""
        if not sizes or not self.chunks:
            return self
        chunks = []
        for c in self.chunks:
            stored = sizes.get(c.digest)
            if stored is None:
                chunks.append(c)
            else:
                chunks.append(Chunk(c.digest, c.size, stored if 0 < stored < c.size else None))
        return dataclasses.replace(self, chunks=tuple(chunks))

    @property
    def stored_size(self) -> int:
        """The bytes of the blobs this entry names, each as its writer stored it (repeats
        counted), plus the inline content: the file's size before deduplication across files."""
        if self.inline is not None:
            return len(self.inline)
        return sum(c.stored_size for c in self.chunks)

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
            if any(c.stored is not None and not 0 < c.stored < c.size for c in self.chunks):
                problems.append("a compressed chunk not shorter than its size")
        if problems:
            raise IntegrityError(f"manifest entry {where} is malformed: {', '.join(problems)}")
