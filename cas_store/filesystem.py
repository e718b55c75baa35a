"""``CASFileSystem``: the fsspec file system (protocol ``s3cas``) over content-addressed stores."""

from __future__ import annotations

import datetime as dt
import io
import logging
from typing import Any

from fsspec.spec import AbstractFileSystem
from fsspec.utils import stringify_path

from cas_store.cache import LocalCache
from cas_store.config import StoreConfig
from cas_store.errors import StoreOfflineError
from cas_store.files import TextWriteFile
from cas_store.format import DEFAULT_CHUNK_SIZE, Entry
from cas_store.layout import PROTOCOL, Root, split_path
from cas_store.manifest import Listed, Record
from cas_store.s3 import S3
from cas_store.store import Store

log = logging.getLogger(__name__)

# fsspec's own instance options, not ours.
_FSSPEC_OPTIONS = {
    "skip_instance_cache",
    "use_listings_cache",
    "listings_expiry_time",
    "max_paths",
    "asynchronous",
    "loop",
}


class CASFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """Content-addressed, locally cached files over S3, as an fsspec file system.

    Paths are ``s3cas://<bucket>/<prefix>/<path>``. ``root`` names the store root
    (``s3cas://<bucket>/<prefix>``); without it, each bucket is a store rooted at
    the bucket itself. Other keyword arguments are :class:`StoreConfig` fields
    (s3fs's ``key``/``secret``/``token`` are accepted as aliases).

    Guarantees: a path is visible only after its bytes are durable in S3; identical
    content is stored once per store; bytes handed out match their digest; when S3
    is unreachable, cached files stay readable and everything else raises
    :class:`~cas_store.errors.StoreOfflineError` quickly. Thread- and process-safe.
    """

    protocol = (PROTOCOL,)
    root_marker = ""

    def __init__(self, root: str | None = None, **options: Any) -> None:
        super().__init__(root=root, **options)
        self.config = StoreConfig.from_options({k: v for k, v in options.items() if k not in _FSSPEC_OPTIONS})
        self.s3 = S3(self.config)
        self.cache = LocalCache(
            self.config.resolved_cache_dir, self.config.cache_size, self.config.cache_eviction_policy
        )
        self.root = Root.parse(root) if root else None
        self._stores: dict[Root, Store] = {}

    # -- paths -------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return "/".join(split_path(stringify_path(path)))

    def unstrip_protocol(self, name: str) -> str:
        return f"{PROTOCOL}://{self._strip_protocol(name)}"

    def _locate(self, path: Any) -> tuple[Store, str]:
        stripped = self._strip_protocol(path)
        root = self.root or Root(stripped.split("/", 1)[0] if stripped else "")
        if not root.bucket:
            raise FileNotFoundError(f"{path!r} names no bucket; use s3cas://<bucket>/<path>")
        rel = root.relative(stripped)
        store = self._stores.get(root)
        if store is None:
            store = self._stores.setdefault(root, Store(root, self.config, self.s3, self.cache))
        return store, rel

    def store(self, path: str = "") -> Store:
        """The :class:`Store` a path belongs to (the configured root by default)."""
        return self._locate(path or (self.root.path if self.root else path))[0]

    # -- metadata ----------------------------------------------------------------------

    def _file_info(self, store: Store, record: Record) -> dict[str, Any]:
        entry = record.entry
        return {
            "name": store.root.logical_path(record.rel),
            "size": entry.size,
            "type": "file",
            "LastModified": record.modified,
            "algorithm": entry.algorithm,
            "digest": entry.digest,
            "inline": entry.inline is not None,
        }

    @staticmethod
    def _dir_info(store: Store, rel: str) -> dict[str, Any]:
        return {"name": store.root.logical_path(rel), "size": 0, "type": "directory"}

    def info(self, path: Any, **kwargs: Any) -> dict[str, Any]:
        store, rel = self._locate(path)
        if not rel:
            store.marker()  # surfaces a missing bucket or an incompatible store
            return self._dir_info(store, rel)
        try:
            record = store.resolve(rel)
        except StoreOfflineError:
            if store.cache.mirror.paths_under(store.id, rel, limit=1):
                return self._dir_info(store, rel)
            raise
        if record is not None:
            return self._file_info(store, record)
        if store.manifest.dir_exists(rel):
            return self._dir_info(store, rel)
        raise FileNotFoundError(f"no such file or directory: {store.root.uri}/{rel}")

    def exists(self, path: Any, **kwargs: Any) -> bool:
        # fsspec's default swallows every error; offline or a bad path must not read as "absent".
        try:
            self.info(path)
        except FileNotFoundError:
            return False
        return True

    def isdir(self, path: Any) -> bool:
        try:
            return bool(self.info(path)["type"] == "directory")
        except FileNotFoundError:
            return False

    def isfile(self, path: Any) -> bool:
        try:
            return bool(self.info(path)["type"] == "file")
        except FileNotFoundError:
            return False

    def modified(self, path: Any) -> dt.datetime:
        info = self.info(path)
        if info["type"] != "file":
            raise IsADirectoryError(f"{path} is a directory; directories have no modification time")
        return info["LastModified"]  # type: ignore[no-any-return]

    created = modified  # S3 keeps one time per object

    def _records(self, store: Store, listed: list[Listed]) -> list[Record]:
        """Entries for listed manifest objects: from the mirror when its ETag is current."""
        records: dict[str, Record] = {}
        missing = []
        for item in listed:
            row = store.cache.mirror.get_entry(store.id, item.rel)
            if row is not None and row[1] == item.etag and item.etag:
                records[item.rel] = Record(item.rel, Entry.decode(row[0], item.rel), item.etag, item.modified)
            else:
                missing.append(item.rel)
        fetched = store.manifest.get_many(missing)
        rows = []
        for rel, record in fetched.items():
            if record is not None:  # deleted between the listing and the GET: skip it
                records[rel] = record
                rows.append((rel, record.entry.encode(), record.etag, record.modified.timestamp()))
        store.cache.mirror.put_entries(store.id, rows)
        return [records[i.rel] for i in listed if i.rel in records]

    def ls(self, path: Any, detail: bool = True, **kwargs: Any) -> list[Any]:
        store, rel = self._locate(path)
        store.marker()
        try:
            listed, dirs = store.list_dir(rel)
        except StoreOfflineError:
            return self._ls_offline(store, rel, detail)
        if not listed and not dirs:
            if rel:
                info = self.info(path)  # a file lists as itself; a missing path raises
                return [info if detail else info["name"]]
            return []
        prefix = store.root.logical_path(rel)
        # Files this directory no longer lists are gone: forget them (the mirror answers offline).
        start = len(rel) + 1 if rel else 0
        present = {item.rel for item in listed}
        gone = [
            r
            for r in store.cache.mirror.paths_under(store.id, rel)
            if "/" not in r[start:] and r not in present
        ]
        store.cache.mirror.delete_entries(store.id, gone)
        if not detail:
            names = [store.root.logical_path(i.rel) for i in listed] + [
                store.root.logical_path(d) for d in dirs
            ]
            return sorted(names)
        out = [self._file_info(store, r) for r in self._records(store, listed)]
        out += [self._dir_info(store, d) for d in dirs]
        log.debug("listed %s: %d entries", prefix, len(out))
        return sorted(out, key=lambda i: i["name"])

    def _ls_offline(self, store: Store, rel: str, detail: bool) -> list[Any]:
        rows = store.cache.mirror.entries_under(store.id, rel)
        if not rows:
            if rel:
                record = store.mirrored(rel)
                if record is not None:
                    info = self._file_info(store, record)
                    return [info if detail else info["name"]]
            raise store.s3.offline_error(f"listing {store.root.uri}/{rel} (not in the local mirror)")
        start = len(rel) + 1 if rel else 0
        files: list[dict[str, Any]] = []
        dirs: set[str] = set()
        for child, data, etag, modified in rows:
            tail = child[start:]
            if "/" in tail:
                dirs.add((rel + "/" if rel else "") + tail.split("/", 1)[0])
            else:
                record = Record(
                    child, Entry.decode(data, child), etag, dt.datetime.fromtimestamp(modified, dt.UTC)
                )
                files.append(self._file_info(store, record))
        out = files + [self._dir_info(store, d) for d in sorted(dirs)]
        out.sort(key=lambda i: i["name"])
        return out if detail else [i["name"] for i in out]

    def find(
        self,
        path: Any,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        if maxdepth is not None and maxdepth < 1:
            raise ValueError("maxdepth must be at least 1")
        store, rel = self._locate(path)
        store.marker()
        try:
            listed = store.manifest.list_tree(rel)
        except StoreOfflineError:
            listed = None
        base_depth = len(rel.split("/")) if rel else 0
        # (rel, record); the record is only needed, and only fetched, for detail=True.
        items: list[tuple[str, Record | None]]
        if listed is None:
            rows = store.cache.mirror.entries_under(store.id, rel)
            items = [
                (r, Record(r, Entry.decode(d, r), e, dt.datetime.fromtimestamp(m, dt.UTC)))
                for r, d, e, m in rows
            ]
            if not items and rel:
                record = store.mirrored(rel)
                if record is None:
                    raise store.s3.offline_error(f"listing {store.root.uri}/{rel} (not in the local mirror)")
                items = [(rel, record)]
        elif listed:

            def within(item_rel: str) -> bool:
                return maxdepth is None or len(item_rel.split("/")) - base_depth <= maxdepth

            # Entries are fetched only for files that are returned; deeper ones still imply dirs.
            fetched = (
                {r.rel: r for r in self._records(store, [i for i in listed if within(i.rel)])}
                if detail
                else {}
            )
            items = [
                (i.rel, fetched.get(i.rel))
                for i in listed
                if not detail or i.rel in fetched or not within(i.rel)
            ]
        else:
            record = store.resolve(rel) if rel else None  # find() on a file finds the file
            items = [(rel, record)] if record is not None else []
        out: dict[str, dict[str, Any]] = {}
        for item_rel, record in items:
            parts = item_rel.split("/")
            depth = len(parts) - base_depth
            if maxdepth is None or depth <= maxdepth:
                if detail and record is not None:
                    info = self._file_info(store, record)
                else:
                    info = {"name": store.root.logical_path(item_rel), "type": "file"}
                out[info["name"]] = info
            if withdirs:
                last = len(parts) if maxdepth is None else min(len(parts), base_depth + maxdepth + 1)
                for i in range(base_depth + 1, last):
                    d = "/".join(parts[:i])
                    out.setdefault(store.root.logical_path(d), self._dir_info(store, d))
        here = store.root.logical_path(rel)
        if withdirs and rel and any(k.startswith(here + "/") for k in out):
            out.setdefault(here, self._dir_info(store, rel))  # as fsspec: a directory finds itself
        names = sorted(out)
        return {n: out[n] for n in names} if detail else names

    # -- reading and writing -------------------------------------------------------------

    def _open(
        self,
        path: Any,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> io.BufferedIOBase:
        store, rel = self._locate(path)
        display = f"{store.root.uri}/{rel}"
        if mode == "rb":
            if not rel:
                raise IsADirectoryError(f"{display} is the store root, a directory")
            record = store.resolve(rel)
            if record is None:
                if store.manifest.dir_exists(rel):
                    raise IsADirectoryError(f"{display} is a directory")
                raise FileNotFoundError(f"no such file: {display}")
            return store.open_read(record, display)
        if mode == "wb":
            if not autocommit:
                raise NotImplementedError(
                    "cas_store publishes on close(); fsspec transactions are not supported"
                )
            return store.open_write(rel, display)
        raise ValueError(
            f"mode {mode!r} is not supported: files are immutable content; use 'rb' or 'wb' "
            "(text modes 'r' and 'w' work too)"
        )

    def open(self, path: Any, mode: str = "rb", **kwargs: Any) -> Any:
        """As fsspec's ``open``; a text-mode write left by an exception publishes nothing too."""
        if "w" in mode and "b" not in mode:
            text_kwargs = {k: kwargs.pop(k) for k in ("encoding", "errors", "newline") if k in kwargs}
            binary = super().open(path, mode.replace("t", "") + "b", **kwargs)
            return TextWriteFile(binary, **text_kwargs)
        return super().open(path, mode, **kwargs)

    def cat_file(self, path: Any, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        with self.open(path, "rb") as f:
            if start is None and end is None:
                return f.read()  # type: ignore[no-any-return]  # a whole read is verified
            size = f.size
            start = 0 if start is None else (start if start >= 0 else max(size + start, 0))
            end = size if end is None else (end if end >= 0 else size + end)
            f.seek(start)
            return f.read(max(end - start, 0))  # type: ignore[no-any-return]

    def cp_file(self, path1: Any, path2: Any, **kwargs: Any) -> None:
        """Copy by publishing the same entry under the new path: no bytes move."""
        src_store, src_rel = self._locate(path1)
        dst_store, dst_rel = self._locate(path2)
        record = src_store.resolve(src_rel) if src_rel else None
        if record is None:
            raise FileNotFoundError(f"no such file: {src_store.root.uri}/{src_rel}")
        if dst_store is src_store:
            src_store.root.manifest_key(dst_rel)
            dst_store.marker(create=True)
            dst_store.publish(dst_rel, record.entry)
            return
        # Another store root: its bucket prefix needs the blob too, so the bytes are copied.
        with self.open(path1, "rb") as src, self.open(path2, "wb") as dst:
            while block := src.read(DEFAULT_CHUNK_SIZE):
                dst.write(block)

    def rm_file(self, path: Any) -> None:
        store, rel = self._locate(path)
        store.root.manifest_key(rel)
        store.manifest.delete([rel])
        store.cache.mirror.delete_entries(store.id, [rel])

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Delete files (manifest entries only; blobs are left for garbage collection)."""
        paths = path if isinstance(path, list) else [path]
        by_store: dict[Store, list[str]] = {}
        for p in paths:
            store, rel = self._locate(p)
            if recursive:
                found = self.find(p, maxdepth=maxdepth)
                if not found:
                    raise FileNotFoundError(f"no such file or directory: {store.root.uri}/{rel}")
                rels = [store.root.relative(n) for n in found]
            else:
                info = self.info(p)
                if info["type"] == "directory":
                    raise IsADirectoryError(f"{store.root.uri}/{rel} is a directory; use recursive=True")
                rels = [rel]
            by_store.setdefault(store, []).extend(rels)
        for store, rels in by_store.items():
            store.manifest.delete(rels)
            store.cache.mirror.delete_entries(store.id, rels)

    def rmdir(self, path: Any) -> None:
        # Directories are implied by their files, as in S3: there is nothing to remove.
        if self.exists(path):
            raise OSError(f"{path} is not empty (or is a file); use rm(path, recursive=True)")
        raise FileNotFoundError(f"no such directory: {path}")

    def mkdir(self, path: Any, create_parents: bool = True, **kwargs: Any) -> None:
        """Nothing to do: directories are implied by the paths of their files, as in s3fs.

        Checks the path, and that the store's bucket is reachable and compatible.
        """
        store, _ = self._locate(path)
        store.marker()

    def makedirs(self, path: Any, exist_ok: bool = False) -> None:
        self.mkdir(path)

    def close(self) -> None:
        """Release the S3 session and this thread's cache handles; both reopen on use."""
        self.s3.close()
        self.cache.close()

    def invalidate_cache(self, path: str | None = None) -> None:
        """No listings are cached: every listing asks S3 (or the mirror, offline)."""
