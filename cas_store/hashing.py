"""Content hashing: the algorithms a store may use, behind one small interface.

Pure functions, no I/O beyond reading the file objects handed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import BinaryIO, Protocol

import xxhash

DEFAULT_ALGORITHM = "xxh128"
READ_SIZE = 4 * 2**20  # large enough that per-call overhead vanishes, small enough for L2/L3


class Hasher(Protocol):
    """The subset of the hashlib interface cas_store uses."""

    def update(self, data: bytes | bytearray | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...

    def copy(self) -> Hasher: ...


def _blake3() -> Hasher:
    try:
        import blake3
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "hash algorithm 'blake3' needs the blake3 package: pip install 'cas_store[blake3]'"
        ) from exc
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


ALGORITHMS: dict[str, Callable[[], Hasher]] = {
    # xxh3-128: ~25 GB/s, not collision resistant against a hostile writer.
    "xxh128": xxhash.xxh3_128,
    # Cryptographic choices for buckets shared with untrusted writers (docs/security.md).
    "sha256": hashlib.sha256,
    "blake3": _blake3,
}

DIGEST_HEX_LENGTH = {"xxh128": 32, "sha256": 64, "blake3": 64}


def check_algorithm(name: str) -> str:
    """Return ``name`` if cas_store knows the algorithm, else raise ``ValueError``."""
    if name not in ALGORITHMS:
        known = ", ".join(sorted(ALGORITHMS))
        raise ValueError(f"unknown hash algorithm {name!r}; choose one of: {known}")
    return name


def new_hasher(algorithm: str) -> Hasher:
    """A fresh incremental hasher for ``algorithm``."""
    return ALGORITHMS[check_algorithm(algorithm)]()


def hash_bytes(algorithm: str, data: bytes | bytearray | memoryview) -> str:
    """Hex digest of ``data``."""
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return hasher.hexdigest()


def hash_file(algorithm: str, fileobj: BinaryIO) -> tuple[str, int]:
    """Hex digest and size of everything from ``fileobj``'s position to its end.

    Streams in fixed-size reads into one reused buffer, so memory stays flat.
    """
    hasher = new_hasher(algorithm)
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)
    size = 0
    while True:
        n = fileobj.readinto(view)  # type: ignore[attr-defined]
        if not n:
            return hasher.hexdigest(), size
        hasher.update(view[:n])
        size += n


def is_valid_digest(algorithm: str, digest: str) -> bool:
    """True if ``digest`` looks like a lowercase hex digest of ``algorithm``."""
    expected = DIGEST_HEX_LENGTH.get(algorithm)
    return expected is not None and len(digest) == expected and all(c in "0123456789abcdef" for c in digest)
