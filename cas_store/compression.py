"""Per-chunk compression: how a chunk's bytes are encoded in its blob (docs/format.md, 4.1).

A blob holds either the chunk's exact bytes or, in a store whose marker enables
compression, one zstd frame of them that is *shorter than the chunk*. Its key stays the
digest of the uncompressed bytes, so deduplication and verification do not change, and
a reader tells the two forms apart by the object's length alone: as long as the chunk,
raw; shorter, a zstd frame. Which writer encoded a blob, and how, never matters.

Writers keep a compressed form only where it pays: a chunk is stored compressed only if
that saves at least ``min_saving`` of its bytes. Chunks that do not compress (random
weights, media, files with their own codec) cost a trial compression of their first
:data:`PROBE_BYTES` only, which fails the same test (bench/compression_options.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zstandard

__all__ = [
    "DEFAULT_COMPRESSION",
    "MAX_ENCODED_CHUNK",
    "Compression",
    "DecodeError",
    "decode",
    "decode_into",
    "parse_compression",
]

ZSTD = "zstd"
#: zstd levels a store may record (zstd's own range; negative levels are its "fast" modes).
MIN_LEVEL, MAX_LEVEL = -7, 22
#: The largest chunk a writer compresses: larger chunks (fixed chunkers of over 16 MiB)
#: are stored raw, so that a reader never holds more than this to decode one.
MAX_ENCODED_CHUNK = 16 * 2**20
#: How much of a chunk is compressed first as a probe: a chunk whose first bytes do not
#: save ``min_saving`` is stored raw without compressing the rest. Measured: this keeps
#: incompressible writes within 1% of no compression (docs/benchmarks.md, "Compression").
PROBE_BYTES = 16 * 2**10
#: Readers decode a compressed chunk in pieces of this size (:func:`decode_into`), so the
#: decoded chunk is never held whole beside its frame.
DECODE_PIECE = 2**20


class DecodeError(ValueError):
    """A blob shorter than its chunk is not a zstd frame of exactly the chunk's size."""


@dataclass(frozen=True)
class Compression:
    """A store's compression settings, as its marker records them (``compression``).

    ``level``: the zstd level writers compress at. ``min_saving``: the least fraction of a
    chunk its compressed form must save to be stored (else the chunk is stored raw).
    """

    level: int = 1
    min_saving: float = 0.125
    codec: str = ZSTD

    def __post_init__(self) -> None:
        if self.codec != ZSTD:
            raise ValueError(f"compression codec must be {ZSTD!r}, not {self.codec!r}")
        if type(self.level) is not int or not MIN_LEVEL <= self.level <= MAX_LEVEL:
            raise ValueError(
                f"zstd level must be an integer from {MIN_LEVEL} to {MAX_LEVEL}, not {self.level!r}"
            )
        if (
            isinstance(self.min_saving, bool)
            or not isinstance(self.min_saving, int | float)
            or not 0 < self.min_saving < 1
        ):
            raise ValueError(f"min_saving must be a fraction between 0 and 1, not {self.min_saving!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"codec": self.codec, "level": self.level, "min_saving": self.min_saving}

    @classmethod
    def from_dict(cls, value: Any) -> Compression:
        """Settings from a marker's ``compression`` object; ValueError if malformed."""
        if not isinstance(value, dict):
            raise ValueError(f"compression must be an object, not {value!r}")
        try:
            return cls(level=value["level"], min_saving=value["min_saving"], codec=value["codec"])
        except KeyError as exc:
            raise ValueError(f"compression lacks {exc}") from exc

    def describe(self) -> str:
        return f"zstd level {self.level}, kept when it saves at least {self.min_saving:.1%}"

    def encode(self, chunk: bytes | memoryview) -> bytes | None:
        """The bytes to store for ``chunk`` if compressing it pays, else None (store it raw).

        Never returns a form as long as the chunk or longer: readers rely on it.
        """
        size = len(chunk)
        if size > MAX_ENCODED_CHUNK or size == 0:
            return None
        compressor = _compressor(self.level)
        if size > 4 * PROBE_BYTES:
            probe = compressor.compress(chunk[:PROBE_BYTES])
            if not self._pays(len(probe), PROBE_BYTES):
                return None
        encoded = compressor.compress(chunk)
        return encoded if self._pays(len(encoded), size) else None

    def _pays(self, encoded: int, size: int) -> bool:
        return encoded <= size * (1 - self.min_saving) and encoded < size


#: What new stores are created with unless configured otherwise (docs/benchmarks.md,
#: "Compression": level 1 compresses faster than moto and S3 take the bytes, and higher
#: levels save a few percent more on text at several times the CPU).
DEFAULT_COMPRESSION = Compression()


def parse_compression(text: str) -> Compression | None:
    """A configuration's ``compression``: ``"zstd"``, ``"zstd:<level>"`` or ``"none"``."""
    value = text.strip().lower()
    if value == "none":
        return None
    codec, _, level = value.partition(":")
    if codec != ZSTD:
        raise ValueError(f"compression must be 'zstd', 'zstd:<level>' or 'none', not {text!r}")
    if not level:
        return DEFAULT_COMPRESSION
    try:
        return Compression(level=int(level))
    except ValueError as exc:
        raise ValueError(f"compression {text!r}: {exc}") from exc


def decode(stored: bytes | memoryview, size: int) -> bytes | memoryview:
    """The chunk of ``size`` bytes that a blob's ``stored`` bytes hold (docs/format.md, 4.1).

    As long as the chunk: the bytes themselves. Shorter: exactly one zstd frame, decompressed
    to exactly ``size`` bytes (never more: a damaged frame cannot make the reader allocate
    more than the chunk). Longer, or anything but one frame of exactly the chunk:
    DecodeError. The caller still checks the digest.
    """
    if len(stored) == size:
        return stored
    out = bytearray(size)
    view = memoryview(out)

    def put(offset: int, piece: bytes) -> None:
        view[offset : offset + len(piece)] = piece

    decode_into(stored, size, put)
    return view


def decode_into(
    stored: bytes | memoryview, size: int, write: Callable[[int, bytes], None], piece: int = DECODE_PIECE
) -> None:
    """:func:`decode`, handing the chunk to ``write(offset, bytes)`` in pieces of at most
    ``piece`` bytes, so that a reader never holds a decoded chunk whole. On DecodeError some
    pieces may have been written already: what they went to must be discarded."""
    if len(stored) == size:
        write(0, bytes(stored))
        return
    if len(stored) > size:
        raise DecodeError(f"the blob holds {len(stored)} bytes, more than its chunk's {size}")
    offset = 0
    try:
        # A damaged header could claim any size: only a frame of exactly the chunk is decoded.
        claimed = zstandard.frame_content_size(stored)
        if claimed != size:
            raise DecodeError(f"the blob's zstd frame declares {claimed} bytes, not its chunk's {size}")
        length = _frame_length(stored)
        if length != len(stored):
            raise DecodeError(f"the blob holds {len(stored) - length} bytes after its zstd frame")
        with _decompressor().stream_reader(stored, read_across_frames=False) as reader:
            while offset < size:
                block = reader.read(min(piece, size - offset))
                if not block:
                    break
                write(offset, block)
                offset += len(block)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"the blob is shorter than its chunk but not one valid zstd frame ({exc})") from exc
    if offset != size:
        raise DecodeError(f"the blob's zstd frame holds {offset} bytes, not its chunk's {size}")


def _frame_length(stored: bytes | memoryview) -> int:
    """How many bytes the zstd frame at the start of ``stored`` spans: its header, its blocks
    (RFC 8878, 3.1.1.2: a 3-byte header each; a run-length block holds one byte) and its
    checksum. DecodeError if the blocks run past the end."""
    at = zstandard.frame_header_size(stored)
    while True:
        if at + 3 > len(stored):
            raise DecodeError("the blob's zstd frame is truncated")
        header = int.from_bytes(stored[at : at + 3], "little")
        last, kind, block_size = header & 1, (header >> 1) & 3, header >> 3
        at += 3 + (1 if kind == 1 else block_size)
        if last:
            break
    if zstandard.get_frame_parameters(stored).has_checksum:
        at += 4
    if at > len(stored):
        raise DecodeError("the blob's zstd frame is truncated")
    return at


# zstandard's (de)compressor objects are not safe to share between threads; each thread
# keeps its own, since creating one per chunk costs more than compressing a small chunk.
_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("compressors", {})
    found = cache.get(level)
    if found is None:
        # The content size in the frame header lets a reader allocate the output once.
        found = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return found


def _decompressor() -> zstandard.ZstdDecompressor:
    found: zstandard.ZstdDecompressor | None = _local.__dict__.get("decompressor")
    if found is None:
        found = _local.decompressor = zstandard.ZstdDecompressor()
    return found
