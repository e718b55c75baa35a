"""The manifest in S3: one small object per logical path, under ``<root>/manifest/``.

S3 is strongly consistent per key and has no multi-key transactions, so each path
has its own entry object; a write replaces it atomically (last writer wins) and a
directory listing is a prefix listing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from cas_store.format import Entry
from cas_store.layout import Root
from cas_store.s3 import S3, error_code, gather_limited


@dataclass(frozen=True)
class Record:
    """An entry as read from (or written to) S3, with the object's version tag and time."""

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


class ManifestStore:
    """Reads, writes, lists and deletes the manifest entries of one store root."""

    def __init__(self, s3: S3, root: Root) -> None:
        self.s3 = s3
        self.root = root

    async def _get(self, rel: str) -> Record | None:
        key = self.root.manifest_key(rel)
        try:
            resp = await self.s3.fs._call_s3("get_object", Bucket=self.root.bucket, Key=key)
        except FileNotFoundError as exc:
            if error_code(exc) == "NoSuchBucket":
                raise
            return None
        try:
            data = await resp["Body"].read()
        finally:
            resp["Body"].close()
        entry = Entry.decode(data, f"{self.root.uri}/{rel}")
        return Record(rel, entry, resp.get("ETag", ""), resp.get("LastModified") or _now())

    def get(self, rel: str) -> Record | None:
        """The entry of ``rel``, or None if there is no such file (one GET)."""
        return self.s3.run(f"reading {self.root.uri}/{rel}", lambda: self._get(rel))

    def get_many(self, rels: Iterable[str]) -> dict[str, Record | None]:
        """Entries of many paths, fetched concurrently."""
        rels = list(rels)
        if not rels:
            return {}
        limit = max(8, 2 * self.s3.config.max_concurrency)
        results = self.s3.run(
            f"reading {len(rels)} manifest entries under {self.root.uri}",
            lambda: gather_limited(limit, [self._get(r) for r in rels]),
        )
        return dict(zip(rels, results, strict=True))

    def put(self, rel: str, entry: Entry) -> Record:
        """Publish ``entry`` for ``rel`` (replacing any previous one) in one PUT."""
        resp = self.s3.call(
            f"writing {self.root.uri}/{rel}",
            "put_object",
            Bucket=self.root.bucket,
            Key=self.root.manifest_key(rel),
            Body=entry.encode(),
            ContentType="application/json",
        )
        return Record(rel, entry, resp.get("ETag", ""), _now())

    def delete(self, rels: Iterable[str]) -> None:
        """Delete the entries of ``rels`` (missing ones are ignored), 1000 per request."""
        keys = [self.root.s3_path(self.root.manifest_key(r)) for r in rels]
        if keys:
            self.s3.run(f"deleting {len(keys)} paths under {self.root.uri}", lambda: self.s3.fs._rm(keys))

    async def _pages(self, prefix: str, **extra: Any) -> list[dict[str, Any]]:
        pages = []
        token: dict[str, str] = {}
        while True:
            resp = await self.s3.fs._call_s3(
                "list_objects_v2", Bucket=self.root.bucket, Prefix=prefix, **token, **extra
            )
            pages.append(resp)
            if not resp.get("IsTruncated") or "MaxKeys" in extra:
                return pages
            token = {"ContinuationToken": resp["NextContinuationToken"]}

    def _listed(self, objects: Iterable[dict[str, Any]]) -> Iterator[Listed]:
        for obj in objects:
            rel = self.root.rel_from_manifest_key(obj["Key"])
            if rel:
                yield Listed(rel, obj.get("ETag", ""), obj.get("LastModified") or _now())

    def list_dir(self, rel: str) -> tuple[list[Listed], list[str]]:
        """Files directly in directory ``rel`` and the names of its subdirectories."""
        prefix = self.root.manifest_dir_key(rel)
        pages = self.s3.run(f"listing {self.root.uri}/{rel}", lambda: self._pages(prefix, Delimiter="/"))
        files = [f for page in pages for f in self._listed(page.get("Contents", []))]
        prefixes = [
            self.root.rel_from_manifest_key(p["Prefix"])
            for page in pages
            for p in page.get("CommonPrefixes", [])
        ]
        return files, self.nonempty_dirs(prefixes)

    def list_tree(self, rel: str) -> list[Listed]:
        """Every file below directory ``rel``, at any depth."""
        prefix = self.root.manifest_dir_key(rel)
        pages = self.s3.run(f"listing {self.root.uri}/{rel}", lambda: self._pages(prefix))
        return [f for page in pages for f in self._listed(page.get("Contents", []))]

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
            pages = await self._pages(self.root.manifest_dir_key(rel), MaxKeys=1)
            return any(page.get("Contents") for page in pages)

        limit = max(8, 2 * self.s3.config.max_concurrency)
        found = self.s3.run(
            f"listing {self.root.uri}/{rels[0]}", lambda: gather_limited(limit, [probe(r) for r in rels])
        )
        return [rel for rel, ok in zip(rels, found, strict=True) if ok]
