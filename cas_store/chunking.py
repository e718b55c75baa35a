"""How files are cut into chunks: the :class:`Chunker` protocol and the registry of chunkers
keyed by the name a store records (pure functions, no I/O).

A store's marker names its chunker and parameters (:class:`ChunkerSpec`); every writer of
the store cuts with exactly that chunker, so identical content cuts identically and
deduplicates, on every machine. Readers need no chunker: an entry lists its chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cas_store.errors import IncompatibleStoreError

DEFAULT_CHUNK_SIZE = 8 * 2**20
# Chunk sizes a store may declare: S3's largest single PUT bounds them from above.
MIN_CHUNK_SIZE = 2**20
MAX_CHUNK_SIZE = 5 * 2**30


class Chunker(Protocol):
    """Decides where chunks end. Stateless: the same bytes always cut the same way."""

    @property
    def name(self) -> str:
        """The name recorded in the store's marker."""
        ...

    @property
    def max_size(self) -> int:
        """No chunk is longer; a writer buffers at most this many bytes."""
        ...

    def cut(self, data: memoryview, final: bool) -> int | None:
        """The length of the first chunk of ``data`` (``0 < n <= len(data)``).

        ``data`` starts at a chunk boundary. None means more bytes are needed to decide;
        a chunker must decide once ``len(data) >= max_size``, and when ``final`` (no more
        bytes follow) it must return a length for any non-empty ``data``.
        """
        ...

    def spec(self) -> ChunkerSpec:
        """What the marker records to re-create this chunker."""
        ...


@dataclass(frozen=True)
class FixedChunker:
    """Chunks of exactly ``size`` bytes; the last one holds the rest (bucket format v1)."""

    size: int = DEFAULT_CHUNK_SIZE
    name: str = field(default="fixed", init=False)

    def __post_init__(self) -> None:
        if type(self.size) is not int or not MIN_CHUNK_SIZE <= self.size <= MAX_CHUNK_SIZE:
            raise ValueError(
                f"fixed chunk size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes "
                f"(S3's largest single PUT), not {self.size!r}"
            )

    @property
    def max_size(self) -> int:
        return self.size

    def cut(self, data: memoryview, final: bool) -> int | None:
        if len(data) >= self.size:
            return self.size
        return len(data) if final and data else None

    def spec(self) -> ChunkerSpec:
        return ChunkerSpec("fixed", {"size": self.size})


@dataclass(frozen=True)
class ChunkerSpec:
    """A chunker as a marker records it: a registered name and its parameters."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Chunker:
        """The chunker this spec names; raises :class:`IncompatibleStoreError` if unknown."""
        factory = CHUNKERS.get(self.name)
        if factory is None:
            raise IncompatibleStoreError(
                f"the store cuts files with chunker {self.name!r}, which this cas_store does not "
                f"know (it knows {', '.join(sorted(CHUNKERS))}): upgrade cas_store"
            )
        try:
            return factory(dict(self.params))
        except (TypeError, ValueError) as exc:
            raise IncompatibleStoreError(
                f"the store's chunker {self.name!r} is misconfigured: {exc}"
            ) from exc


#: Chunker factories keyed by the name a marker records; parameters as keyword arguments.
CHUNKERS: dict[str, Callable[[dict[str, Any]], Chunker]] = {
    "fixed": lambda params: FixedChunker(**params),
}
