"""``CASFileSystem``: the fsspec file system (protocol ``s3cas``) over content-addressed stores."""

from __future__ import annotations

import datetime as dt
import io
import logging
from typing import Any

from fsspec.spec import AbstractFileSystem
from fsspec.utils import stringify_path

from cas_store.backend.s3 import S3Connection
from cas_store.cache import LocalCache
from cas_store.config import StoreConfig
from cas_store.fileobj import TextWriteFile
from cas_store.format import DEFAULT_CHUNK_SIZE
from cas_store.layout import PROTOCOL, Root, split_path
from cas_store.locator import StoreLocator
from cas_store.manifest import Record
from cas_store.store import Store
from cas_store.writer import WriteObserver

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
        self.s3 = S3Connection(self.config)
        self.cache = LocalCache(
            self.config.resolved_cache_dir, self.config.cache_size, self.config.cache_eviction_policy
        )
        self.root = Root.parse(root) if root else None
        self.stores = StoreLocator(self.config, self.s3.bucket, self.cache, self.root)
        #: Called with a :class:`~cas_store.writer.WriteReport` after each write through this
        #: file system is published (its size, and the bytes it added to the bucket); it must
        #: not raise. The ZenML flavor logs one line per file from it.
        self.on_written: WriteObserver | None = None

    # -- paths -------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return "/".join(split_path(stringify_path(path)))

    def unstrip_protocol(self, name: str) -> str:
        return f"{PROTOCOL}://{self._strip_protocol(name)}"

    def locate(self, path: Any) -> tuple[Store, str]:
        """The :class:`Store` ``path`` belongs to, and the path relative to its root."""
        return self.stores.locate(self._strip_protocol(path))

    def store(self, path: str = "") -> Store:
        """The :class:`Store` a path belongs to (the configured root by default)."""
        return self.locate(path or (self.root.path if self.root else path))[0]

    # -- metadata ----------------------------------------------------------------------

    @staticmethod
    def _file_info(store: Store, record: Record) -> dict[str, Any]:
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
        store, rel = self.locate(path)
        record = store.stat(rel)
        return self._dir_info(store, rel) if record is None else self._file_info(store, record)

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

    def ls(self, path: Any, detail: bool = True, **kwargs: Any) -> list[Any]:
        store, rel = self.locate(path)
        if detail:
            listing = store.list_dir(rel)
            out = [self._file_info(store, r) for r in listing.files]
            out += [self._dir_info(store, d) for d in listing.dirs]
        else:
            names, dirs = store.list_names(rel)
            out = [{"name": store.root.logical_path(r)} for r in [*names, *dirs]]
        if not out and rel:
            info = self.info(path)  # a file lists as itself; a missing path raises
            out = [info]
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
        store, rel = self.locate(path)
        base_depth = len(rel.split("/")) if rel else 0

        def within(item_rel: str) -> bool:
            return maxdepth is None or len(item_rel.split("/")) - base_depth <= maxdepth

        # Entries are fetched only for files that are returned; deeper ones still imply dirs.
        items = store.list_tree(rel, detail=lambda r: detail and within(r))
        out: dict[str, dict[str, Any]] = {}
        for item_rel, record in items:
            parts = item_rel.split("/")
            if within(item_rel):
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
        store, rel = self.locate(path)
        display = store.where(rel)
        if mode == "rb":
            if not rel:
                raise IsADirectoryError(f"{display} is the store root, a directory")
            record = store.resolve(rel)
            if record is None:
                if store.is_dir(rel):
                    raise IsADirectoryError(f"{display} is a directory")
                raise FileNotFoundError(f"no such file: {display}")
            return store.open_read(record, display, kwargs.get("read_ahead"))
        if mode in ("wb", "xb"):
            if not autocommit:
                raise NotImplementedError(
                    "cas_store publishes on close(); fsspec transactions are not supported"
                )
            return store.open_write(rel, display, exclusive=mode == "xb", on_written=self.on_written)
        raise ValueError(
            f"mode {mode!r} is not supported: files are immutable content; use 'rb', 'wb' or "
            "'xb' (text modes 'r', 'w' and 'x' work too)"
        )

    def open(self, path: Any, mode: str = "rb", **kwargs: Any) -> Any:
        """As fsspec's ``open``; a text-mode write left by an exception publishes nothing too."""
        if ("w" in mode or "x" in mode) and "b" not in mode:
            text_kwargs = {k: kwargs.pop(k) for k in ("encoding", "errors", "newline") if k in kwargs}
            binary = super().open(path, mode.replace("t", "") + "b", **kwargs)
            return TextWriteFile(binary, **text_kwargs)
        return super().open(path, mode, **kwargs)

    def pipe(self, path: Any, value: Any = None, **kwargs: Any) -> None:
        if not isinstance(path, str | dict):
            # fsspec's pipe takes str and dict only: a bytes or PathLike path is checked (and
            # refused with guidance, or made a str) as everywhere else
            path = self._strip_protocol(path)
        super().pipe(path, value, **kwargs)

    def cat_file(self, path: Any, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        ranged = start is not None or end is not None
        # A range fetches the chunks that cover it and nothing ahead (a whole read: all at once).
        with self.open(path, "rb", read_ahead="none" if ranged else None) as f:
            if not ranged:
                return f.read()  # type: ignore[no-any-return]  # a whole read is verified
            size = f.seek(0, io.SEEK_END)  # an inline file's reader is a BytesIO: no .size
            start = 0 if start is None else (start if start >= 0 else max(size + start, 0))
            end = size if end is None else (end if end >= 0 else size + end)
            f.seek(start)
            return f.read(max(end - start, 0))  # type: ignore[no-any-return]

    def cp_file(self, path1: Any, path2: Any, **kwargs: Any) -> None:
        """Copy by publishing the same entry under the new path: no bytes move.

        A directory copies as nothing (directories are implied by their files), as fsspec's
        recursive ``copy`` and ``mv`` expect: they pass each directory here too.
        """
        src_store, src_rel = self.locate(path1)
        dst_store, dst_rel = self.locate(path2)
        if dst_store is src_store:
            try:
                src_store.copy(src_rel, dst_rel)
            except FileNotFoundError:
                if src_rel and not src_store.is_dir(src_rel):  # the root is a directory too
                    raise
            return
        # Another store root: its bucket prefix needs the blob too, so the bytes are copied.
        try:
            src = self.open(path1, "rb")
        except IsADirectoryError:
            return
        with src, self.open(path2, "wb") as dst:
            while block := src.read(DEFAULT_CHUNK_SIZE):
                dst.write(block)

    def rm_file(self, path: Any) -> None:
        store, rel = self.locate(path)
        store.remove([rel])

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Delete files (manifest entries only; blobs are left for garbage collection)."""
        paths = path if isinstance(path, list) else [path]
        by_store: dict[Store, list[str]] = {}
        for p in paths:
            store, rel = self.locate(p)
            if recursive:
                found = self.find(p, maxdepth=maxdepth)
                if not found:
                    raise FileNotFoundError(f"no such file or directory: {store.where(rel)}")
                rels = [store.root.relative(n) for n in found]
            else:
                if store.stat(rel) is None:
                    raise IsADirectoryError(f"{store.where(rel)} is a directory; use recursive=True")
                rels = [rel]
            by_store.setdefault(store, []).extend(rels)
        for store, rels in by_store.items():
            store.remove(rels)

    def rmdir(self, path: Any) -> None:
        # Directories are implied by their files, as in S3: there is nothing to remove.
        if self.exists(path):
            raise OSError(f"{path} is not empty (or is a file); use rm(path, recursive=True)")
        raise FileNotFoundError(f"no such directory: {path}")

    def mkdir(self, path: Any, create_parents: bool = True, **kwargs: Any) -> None:
        """Nothing to do: directories are implied by the paths of their files, as in s3fs.

        Checks the path, and that the store's bucket is reachable and compatible.
        """
        self.locate(path)[0].stat("")

    def makedirs(self, path: Any, exist_ok: bool = False) -> None:
        self.mkdir(path)

    def close(self) -> None:
        """Release the S3 session and this thread's cache handles; both reopen on use."""
        self.s3.close()
        self.cache.close()

    def invalidate_cache(self, path: str | None = None) -> None:
        """No listings are cached: every listing asks S3 (or the mirror, offline)."""
