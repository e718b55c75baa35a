"""Creating a store with chosen settings (``cas-store init``) and converting a version 1
store to version 2 (``cas-store upgrade``), docs/format.md and docs/gc.md section 3."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cas_store import __version__
from cas_store.chunking import CHUNKERS, DEFAULT_CHUNK_SIZE, FASTCDC_DEFAULTS, ChunkerSpec
from cas_store.compression import parse_compression
from cas_store.errors import CASStoreError, IncompatibleStoreError
from cas_store.format import Marker
from cas_store.maintenance._common import require_store
from cas_store.safety import DEFAULT_GC_GRACE, GCDurations
from cas_store.store import Store


@dataclass
class StoreInfo:
    """A store's format, as its marker records it."""

    root: str
    #: False if the store existed already (nothing was written).
    created: bool
    version: int
    store_id: str | None
    hash_algorithm: str
    chunker: dict[str, Any]
    gc: dict[str, float] | None
    upgraded_at: float | None = None
    #: The marker's compression settings (version 3), None: every blob raw.
    compression: dict[str, Any] | None = None

    @classmethod
    def of(cls, store: Store, marker: Marker, created: bool) -> StoreInfo:
        spec = marker.chunker_spec
        return cls(
            store.root.uri,
            created,
            marker.version,
            marker.store_id,
            marker.hash_algorithm,
            {"name": spec.name, "params": dict(spec.params)},
            None if marker.gc is None else marker.gc.to_dict(),
            marker.upgraded_at,
            None if marker.compression is None else marker.compression.to_dict(),
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: The parameters of a new store's chunker that its creator does not give. (A marker must
#: name them all: there, a default of this cas_store must never decide how a store cuts.)
NEW_CHUNKER_DEFAULTS: Mapping[str, Mapping[str, int]] = {
    "fastcdc2020": FASTCDC_DEFAULTS,
    "fixed": {"size": DEFAULT_CHUNK_SIZE},
}


def new_chunker(name: str, params: Mapping[str, Any] | None = None) -> ChunkerSpec:
    """The chunker a new store records: ``name`` from the registry (:data:`~cas_store.chunking.
    CHUNKERS`) with ``params``, those not given at :data:`NEW_CHUNKER_DEFAULTS`. Validated by
    building it; :class:`ValueError` says what is allowed. ImportError: it cannot cut here."""
    factory = CHUNKERS.get(name)
    if factory is None:
        raise ValueError(f"unknown chunker {name!r}: the chunkers are {', '.join(sorted(CHUNKERS))}")
    defaults = NEW_CHUNKER_DEFAULTS.get(name, {})
    given = dict(params or {})
    unknown = sorted(set(given) - set(defaults)) if defaults else []
    if unknown:
        raise ValueError(
            f"chunker {name} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters are {', '.join(defaults)}"
        )
    try:
        return factory({**defaults, **given}).spec()
    except TypeError as exc:
        raise ValueError(f"chunker {name}: {exc}") from exc


def _same(a: ChunkerSpec, b: ChunkerSpec) -> bool:
    return a.name == b.name and dict(a.params) == dict(b.params)


def _describe(spec: ChunkerSpec) -> str:
    return f"{spec.name} {dict(spec.params)}"


def init_store(
    store: Store,
    gc_grace: float | None = None,
    chunker: ChunkerSpec | None = None,
    compression: str | None = None,
) -> StoreInfo:
    """Create a store at ``store``'s root (empty prefix) with ``gc_grace`` seconds, the
    chunker ``chunker`` and ``compression`` (``"zstd"``, ``"zstd:<level>"`` or ``"none"``;
    each else the configuration's: one day, fastcdc2020, zstd level 1), or report the
    existing one. Settings of an existing store never change: asking for a different
    ``gc_grace``, ``chunker`` or ``compression`` raises :class:`IncompatibleStoreError`.
    ``chunker`` is completed and checked by :func:`new_chunker`, ``compression`` by
    :func:`~cas_store.compression.parse_compression` (:class:`ValueError` if invalid).
    """
    wanted_chunker = None if chunker is None else new_chunker(chunker.name, chunker.params)
    wanted_compression = None if compression is None else parse_compression(compression)
    existing = store.marker()
    if existing is None:
        marker = store.marker(create=True, gc_grace=gc_grace, chunker=wanted_chunker, compression=compression)
        assert marker is not None
        if store.created:
            return StoreInfo.of(store, marker, created=True)
        existing = marker  # a concurrent creator won: its store, if it has these settings
    wanted = GCDurations.from_grace(gc_grace) if gc_grace is not None else None
    have = existing.gc
    if wanted is not None and (have is None or have.grace != wanted.grace):
        recorded = "none (format 1)" if have is None else f"{have.grace:g} s"
        raise IncompatibleStoreError(
            f"{store.root.uri} is already a store, with gc_grace {recorded}; a store's settings are "
            "fixed when it is created: use another root for another gc_grace"
            + (" (or `cas-store upgrade` this format 1 store)" if have is None else "")
        )
    spec = existing.chunker_spec
    if wanted_chunker is not None and not _same(spec, wanted_chunker):
        raise IncompatibleStoreError(
            f"{store.root.uri} is already a store, with chunker {_describe(spec)}, not "
            f"{_describe(wanted_chunker)}; a store's settings are fixed when it is created (its "
            "files are cut that way, so that equal content deduplicates): use another root for "
            "another chunker"
        )
    if compression is not None and wanted_compression != existing.compression:
        recorded_as = "none" if existing.compression is None else existing.compression.describe()
        raise IncompatibleStoreError(
            f"{store.root.uri} is already a store, with compression {recorded_as}, not {compression!r}; a "
            "store's settings are fixed when it is created: use another root for other compression"
        )
    return StoreInfo.of(store, existing, created=False)


def upgrade_store(
    store: Store, gc_grace: float | None = None, clock: Callable[[], float] = time.time
) -> StoreInfo:
    """Rewrite a version 1 store's marker as version 2 (same hash and chunker, a new
    ``store_id``, the collection durations of ``gc_grace``, default one day), conditionally
    on the marker read (``If-Match`` where the server honours it), then read it back.

    A store already at version 2 is reported unchanged (``created=False``). Processes that
    opened the store under version 1 keep writing without rule W until they exit; the
    collector therefore refuses to start within Δ of ``upgraded_at`` unless told that none runs.
    """
    require_store(store)
    key = store.root.marker_key()
    objects = store.objects
    found = objects.run(f"reading the marker of {store.root.uri}", lambda: objects.get(key))
    if found is None:
        raise CASStoreError(f"the marker of {store.root.uri} vanished while upgrading: run the upgrade again")
    current = Marker.decode(found[0], store.where())
    if current.version >= 2:
        have = current.gc
        if gc_grace is not None and (have is None or have.grace != GCDurations.from_grace(gc_grace).grace):
            raise IncompatibleStoreError(
                f"{store.root.uri} is already at format 2, with gc_grace "
                f"{'?' if have is None else f'{have.grace:g} s'}; a store's settings are fixed: "
                "use another root for another gc_grace"
            )
        return StoreInfo.of(store, current, created=False)
    grace = DEFAULT_GC_GRACE if gc_grace is None else gc_grace
    new = current.upgraded(grace, f"cas_store {__version__}", clock())
    result = objects.run(
        f"upgrading {store.root.uri}", lambda: objects.put(key, new.encode(), if_match=found[1].etag)
    )
    if not result.created:
        raise CASStoreError(
            f"the marker of {store.root.uri} changed while it was being upgraded (another upgrade?): "
            "run `cas-store upgrade` again to see its state"
        )
    back = objects.run(f"reading back the marker of {store.root.uri}", lambda: objects.get(key))
    written = None if back is None else Marker.decode(back[0], store.where())
    if written is None or written.store_id != new.store_id:
        raise CASStoreError(
            f"the marker of {store.root.uri} is not the one just written (a concurrent upgrade on a "
            "server that ignores If-Match won): run `cas-store upgrade` again to see its state"
        )
    store.reload_marker()
    return StoreInfo.of(store, written, created=True)
