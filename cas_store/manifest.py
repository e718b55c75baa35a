"""The manifest in the bucket: one small object per logical path, under ``<root>/manifest/``.

S3 is strongly consistent per key and has no multi-key transactions, so each path
has its own entry object; a write replaces it atomically (last writer wins) and a
directory listing is a prefix listing.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cas_store.backend.base import ObjectInfo, ObjectStore, gather_limited, list_all
from cas_store.format import Entry
from cas_store.layout import Root


@dataclass(frozen=True)
class Record:
    """An entry as read from (or written to) the bucket, with the object's version tag and time."""

    rel: str
    entry: Entry
    etag: str
    modified: dt.datetime


@dataclass(frozen=True)
class Listed:
    """A manifest object as a listing names it (no content)."""

    rel: str
    etag: str
    modified: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Manifest:
    """Reads, writes, lists and deletes the manifest entries of one store root."""

    def __init__(self, objects: ObjectStore, root: Root, concurrency: int) -> None:
        self.objects = objects
        self.root = root
        # Entries and probes are tiny: latency, not bandwidth, bounds them.
        self._limit = max(8, 2 * concurrency)

    async def _get(self, rel: str) -> Record | None:
        found = await self.objects.get(self.root.manifest_key(rel))
        if found is None:
            return None
        data, info = found
        return Record(rel, Entry.decode(data, f"{self.root.uri}/{rel}"), info.etag, info.modified)

    def get(self, rel: str) -> Record | None:
        """The entry of ``rel``, or None if there is no such file (one GET)."""
        return self.objects.run(f"reading {self.root.uri}/{rel}", lambda: self._get(rel))

    def get_soon(self, rel: str) -> concurrent.futures.Future[Record | None]:
        """:meth:`get`, started on the backend's loop: the caller decides how long to wait."""
        return self.objects.submit(f"reading {self.root.uri}/{rel}", lambda: self._get(rel))

    def get_many(self, rels: Iterable[str]) -> dict[str, Record | None]:
        """Entries of many paths, fetched concurrently."""
        rels = list(rels)
        if not rels:
            return {}
        results = self.objects.run(
            f"reading {len(rels)} manifest entries under {self.root.uri}",
            lambda: gather_limited(self._limit, [self._get(r) for r in rels]),
        )
        return dict(zip(rels, results, strict=True))

    def put(self, rel: str, entry: Entry, *, exclusive: bool = False) -> Record:
        """Publish ``entry`` for ``rel`` (replacing any previous one) in one PUT.

        With ``exclusive``, only if ``rel`` has no entry (a conditional PUT): else raise
        ``FileExistsError``. On servers that ignore the condition, the PUT replaces.
        """
        key = self.root.manifest_key(rel)
        result = self.objects.run(
            f"writing {self.root.uri}/{rel}",
            lambda: self.objects.put(
                key, entry.encode(), if_absent=exclusive, content_type="application/json"
            ),
        )
        if not result.created:
            raise FileExistsError(f"{self.root.uri}/{rel} exists (written meanwhile by another writer)")
        return Record(rel, entry, result.etag, _now())

    def delete(self, rels: Iterable[str]) -> None:
        """Delete the entries of ``rels`` (missing ones are ignored)."""
        keys = [self.root.manifest_key(r) for r in rels]
        if keys:
            self.objects.run(
                f"deleting {len(keys)} paths under {self.root.uri}", lambda: self.objects.delete_many(keys)
            )

    def _listed(self, objects: Iterable[ObjectInfo]) -> Iterator[Listed]:
        for obj in objects:
            rel = self.root.rel_from_manifest_key(obj.key)
            if rel:
                yield Listed(rel, obj.etag, obj.modified)

    def list_dir(self, rel: str) -> tuple[list[Listed], list[str]]:
        """Files directly in directory ``rel`` and the names of its (non-empty) subdirectories."""
        prefix = self.root.manifest_dir_key(rel)
        pages = self.objects.run(
            f"listing {self.root.uri}/{rel}", lambda: list_all(self.objects, prefix, delimiter="/")
        )
        files = [f for page in pages for f in self._listed(page.objects)]
        prefixes = [self.root.rel_from_manifest_key(p) for page in pages for p in page.prefixes]
        return files, self.nonempty_dirs(prefixes)

    def list_tree(self, rel: str) -> list[Listed]:
        """Every file below directory ``rel``, at any depth."""
        prefix = self.root.manifest_dir_key(rel)
        pages = self.objects.run(f"listing {self.root.uri}/{rel}", lambda: list_all(self.objects, prefix))
        return [f for page in pages for f in self._listed(page.objects)]

    def dir_exists(self, rel: str) -> bool:
        """True if at least one file lies below ``rel`` (one LIST with MaxKeys=1)."""
        return bool(self.nonempty_dirs([rel]))

    def nonempty_dirs(self, rels: list[str]) -> list[str]:
        """The directories of ``rels`` that hold at least one file (concurrent LISTs, MaxKeys=1).

        Asks for objects, not common prefixes: some servers (SeaweedFS) keep reporting
        a prefix after its last object is gone, so a prefix alone proves nothing.
        """
        if not rels:
            return []

        async def probe(rel: str) -> bool:
            page = await self.objects.list_page(self.root.manifest_dir_key(rel), max_keys=1)
            return bool(page.objects)

        found = self.objects.run(
            f"listing {self.root.uri}/{rels[0]}",
            lambda: gather_limited(self._limit, [probe(r) for r in rels]),
        )
        return [rel for rel, ok in zip(rels, found, strict=True) if ok]
