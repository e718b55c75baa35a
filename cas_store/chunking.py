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

#: The chunker of a new store unless the configuration names another (docs/benchmarks.md,
#: "Chunking": measured against 256 KiB / 1 MiB / 4 MiB and 1 MiB / 4 MiB / 16 MiB).
FASTCDC_DEFAULTS: Mapping[str, int] = {
    "min_size": 512 * 2**10,
    "avg_size": 2 * 2**20,
    "max_size": 8 * 2**20,
    "normalization": 2,
}
# pyfastcdc's own bounds (its FastCDC refuses anything outside them).
FASTCDC_BOUNDS: Mapping[str, tuple[int, int]] = {
    "min_size": (64, 2**20),
    "avg_size": (256, 4 * 2**20),
    "max_size": (1024, 16 * 2**20),
    "normalization": (0, 3),
}


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

    @property
    def avg_size(self) -> int:
        """The size chunks have on average (transfer budgets are sized by it)."""
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

    @property
    def avg_size(self) -> int:
        return self.size

    def cut(self, data: memoryview, final: bool) -> int | None:
        if len(data) >= self.size:
            return self.size
        return len(data) if final and data else None

    def spec(self) -> ChunkerSpec:
        return ChunkerSpec("fixed", {"size": self.size})


def _compiled_fastcdc() -> Any:
    """pyfastcdc's compiled (Cython) ``FastCDC`` class; its pure-Python fallback cuts at about
    0.5% of the speed, which would make every write crawl, so it is refused."""
    try:
        from pyfastcdc.cy import FastCDC
    except ImportError as exc:
        raise ImportError(
            "the fastcdc2020 chunker needs pyfastcdc's compiled module (pyfastcdc.cy), which "
            f"did not import ({exc}); its pure-Python fallback is too slow to write with: install "
            "a pyfastcdc wheel for this platform (pip install --force-reinstall pyfastcdc), or a "
            "C compiler so that pip can build it"
        ) from exc
    return FastCDC


@dataclass(frozen=True)
class FastCDCChunker:
    """Content-defined chunks: FastCDC 2020 (Xia et al., 2020, as fastcdc-rs ``v2020`` cuts),
    through pyfastcdc's compiled module with its default gear table (seed 0).

    A boundary is where a rolling gear hash, started afresh at ``min_size`` bytes into the
    chunk, has its masked bits all zero: a stricter mask before ``avg_size`` bytes and a
    looser one after (``normalization`` levels apart), and a cut at ``max_size`` bytes if none
    matched. The decision at an offset depends only on the bytes before it, so the first
    boundary found within a shorter buffer is the boundary of any longer one: that is what
    lets a writer cut a stream exactly as it would cut the whole content at once.
    """

    min_size: int = FASTCDC_DEFAULTS["min_size"]
    avg_size: int = FASTCDC_DEFAULTS["avg_size"]
    max_size: int = FASTCDC_DEFAULTS["max_size"]
    normalization: int = FASTCDC_DEFAULTS["normalization"]
    name: str = field(default="fastcdc2020", init=False)
    _cdc: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for param, (low, high) in FASTCDC_BOUNDS.items():
            value = getattr(self, param)
            if type(value) is not int or not low <= value <= high:
                raise ValueError(
                    f"fastcdc2020 {param} must be an integer from {low} to {high}, not {value!r}"
                )
        if not self.min_size <= self.avg_size <= self.max_size:
            raise ValueError(
                "fastcdc2020 needs min_size <= avg_size <= max_size, not "
                f"{self.min_size}, {self.avg_size}, {self.max_size}"
            )
        cdc = _compiled_fastcdc()(
            self.avg_size,
            min_size=self.min_size,
            max_size=self.max_size,
            normalized_chunking=self.normalization,
        )
        object.__setattr__(self, "_cdc", cdc)

    def cut(self, data: memoryview, final: bool) -> int | None:
        n = len(data)
        if not n or (n <= self.min_size and not final):
            return None
        # One gear scan in compiled code, the GIL released; pyfastcdc reads ``data`` in place.
        # Its answer is ``n`` when no boundary lies within ``data`` (at most max_size bytes
        # are looked at): a decision only if no more bytes can follow or none could matter.
        length: int = next(iter(self._cdc.cut_buf(data))).length
        if length < n or final or n >= self.max_size:
            return length
        return None

    def spec(self) -> ChunkerSpec:
        return ChunkerSpec(
            self.name,
            {
                "min_size": self.min_size,
                "avg_size": self.avg_size,
                "max_size": self.max_size,
                "normalization": self.normalization,
            },
        )


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
        except ImportError as exc:
            raise IncompatibleStoreError(f"cannot cut with the store's chunker {self.name!r}: {exc}") from exc


def _fastcdc_from_params(params: dict[str, Any]) -> FastCDCChunker:
    # Every parameter is required: a default of this cas_store must never decide how an
    # existing store cuts, or a later release with other defaults would stop deduplicating.
    missing = sorted(set(FASTCDC_DEFAULTS) - set(params))
    if missing:
        raise ValueError(f"fastcdc2020 params lack {', '.join(missing)}")
    return FastCDCChunker(**params)


#: Chunker factories keyed by the name a marker records; parameters as keyword arguments.
CHUNKERS: dict[str, Callable[[dict[str, Any]], Chunker]] = {
    "fixed": lambda params: FixedChunker(**params),
    "fastcdc2020": _fastcdc_from_params,
}


def configured_chunker(name: str | None, chunk_size: int | None) -> Chunker:
    """The chunker a new store is created with, from the configuration's ``chunker`` and
    ``chunk_size``: ``chunk_size`` alone, or ``"fixed"``, means fixed chunks (of
    ``chunk_size``, else 8 MiB); otherwise FastCDC 2020 with :data:`FASTCDC_DEFAULTS`."""
    if name == "fixed" or (name is None and chunk_size is not None):
        return FixedChunker(chunk_size or DEFAULT_CHUNK_SIZE)
    if name in (None, "fastcdc2020"):
        if chunk_size is not None:
            raise ValueError("chunk_size sets fixed chunks: give it without chunker='fastcdc2020'")
        return FastCDCChunker()
    raise ValueError(f"unknown chunker {name!r}: fastcdc2020 or fixed")
