"""What the maintenance operations share: walking a store's entries and blobs, progress."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

from cas_store.backend.base import ObjectInfo
from cas_store.errors import CASStoreError, IncompatibleStoreError, IntegrityError, StoreNotFoundError
from cas_store.layout import BLOBS_DIR
from cas_store.manifest import Listed, Record
from cas_store.store import Store

#: Called as work proceeds: ``progress(phase, done, total)``; ``total`` is None while unknown
#: (a listing). Phases: ``"listing blobs"``, ``"reading entries"`` (counts),
#: ``"downloading blobs"`` (bytes).
Progress = Callable[[str, int, int | None], None]

#: Entries fetched (or read from the mirror) per batch.
BATCH = 1000


def require_store(store: Store) -> None:
    """Raise :class:`StoreNotFoundError` unless the root holds a store (its marker)."""
    if store.marker() is None:
        raise StoreNotFoundError(
            f"there is no cas_store store at {store.root.uri} ({store.objects.endpoint}): no format "
            f"marker s3://{store.root.bucket}/{store.root.marker_key()}; check the root (a store "
            "is created by its first write)"
        )


def blobs_prefix(store: Store) -> str:
    return store.root.key(BLOBS_DIR) + "/"


def iter_blob_objects(store: Store, progress: Progress | None = None) -> Iterator[ObjectInfo]:
    """Every object under the store's ``blobs/`` prefix, one listing page at a time."""
    return iter_objects(store, blobs_prefix(store), progress, "listing blobs")


def iter_quarantine(store: Store, progress: Progress | None = None) -> Iterator[tuple[ObjectInfo, str]]:
    """Every quarantine copy of the store, with the main key of the blob it holds."""
    for obj in iter_objects(store, store.root.gc_key("q") + "/", progress, "listing quarantine"):
        parsed = store.root.parse_quarantine_key(obj.key)
        if parsed is not None:  # a stray object under gc/q/ is no copy
            yield obj, store.root.blob_key(parsed[0], parsed[1])


def iter_objects(
    store: Store, prefix: str, progress: Progress | None = None, phase: str = "listing"
) -> Iterator[ObjectInfo]:
    """Every object under ``prefix`` (a full key prefix), one listing page at a time."""
    token: str | None = None
    seen = 0
    while True:
        page = store.objects.run(
            f"listing s3://{store.root.bucket}/{prefix}",
            functools.partial(store.objects.list_page, prefix, token=token),
        )
        yield from page.objects
        seen += len(page.objects)
        if progress is not None:
            progress(phase, seen, None)
        if page.next_token is None:
            return
        token = page.next_token


def iter_records(
    store: Store,
    listed: list[Listed],
    on_unreadable: Callable[[str, CASStoreError], None],
    progress: Progress | None = None,
) -> Iterator[Record]:
    """The entries of ``listed``, in batches (from the mirror where its ETag is current).

    An entry that cannot be decoded (malformed, or of an unknown entry version) is handed
    to ``on_unreadable`` instead of failing the walk.
    """
    done = 0
    for start in range(0, len(listed), BATCH):
        batch = listed[start : start + BATCH]
        try:
            records = store.records(batch)
        except (IntegrityError, IncompatibleStoreError):
            records = []
            for item in batch:  # find the bad ones: one by one
                try:
                    records += store.records([item])
                except (IntegrityError, IncompatibleStoreError) as exc:
                    on_unreadable(item.rel, exc)
        yield from records
        done += len(batch)
        if progress is not None:
            progress("reading entries", done, len(listed))
