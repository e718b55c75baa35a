"""Where things live: logical paths, store roots and S3 keys (bucket format versions 1 and 2).

Pure functions, no I/O. ``docs/format.md`` is the normative description; keep them in step.
"""

from __future__ import annotations

from dataclasses import dataclass

from cas_store.errors import InvalidPathError

PROTOCOL = "s3cas"
MARKER_NAME = "cas-store.json"
BLOBS_DIR = "blobs"
MANIFEST_DIR = "manifest"
GC_DIR = "gc"  # the collector's quarantine, run logs and lease (docs/gc.md section 3)
MAX_KEY_BYTES = 1024  # S3's limit on object key length


@dataclass(frozen=True, order=True)
class Root:
    """A store root ``s3cas://<bucket>/<prefix>``; its data lives under ``s3://<bucket>/<prefix>/``."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, uri: str) -> Root:
        """Parse ``s3cas://bucket/prefix`` (the scheme is optional)."""
        segments = split_path(uri)
        if not segments:
            raise InvalidPathError(f"store root {uri!r} names no bucket; use s3cas://<bucket>[/<prefix>]")
        return cls(segments[0], "/".join(segments[1:]))

    @property
    def path(self) -> str:
        """``bucket/prefix`` without the scheme, as fsspec names paths."""
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    @property
    def uri(self) -> str:
        return f"{PROTOCOL}://{self.path}"

    def key(self, *parts: str) -> str:
        """The S3 key (without bucket) of ``parts`` below the root."""
        return "/".join(p for p in (self.prefix, *parts) if p)

    def s3_path(self, key: str) -> str:
        """``bucket/key`` for a full key (as the ``*_key`` methods return), as s3fs names objects."""
        return f"{self.bucket}/{key}"

    def marker_key(self) -> str:
        return self.key(MARKER_NAME)

    def blob_key(self, algorithm: str, digest: str) -> str:
        return self.key(blob_relkey(algorithm, digest))

    def quarantine_prefix(self, algorithm: str, digest: str) -> str:
        """``gc/q/<alg>/<d0d1>/<d2d3>/<digest>/``: the quarantine copies of one blob, one per run."""
        return self.key(quarantine_relprefix(algorithm, digest))

    def quarantine_key(self, algorithm: str, digest: str, run: str) -> str:
        return self.quarantine_prefix(algorithm, digest) + run

    def parse_quarantine_key(self, key: str) -> tuple[str, str, str] | None:
        """``(algorithm, digest, run)`` of a quarantine key of this root; None for any other key."""
        base = self.key(GC_DIR, "q") + "/"
        parts = key[len(base) :].split("/") if key.startswith(base) else []
        if len(parts) != 5 or self.quarantine_key(parts[0], parts[3], parts[4]) != key:
            return None
        return parts[0], parts[3], parts[4]

    def gc_key(self, *parts: str) -> str:
        """A key of the collector's own (``gc/runs/<run>/state.json``, ``gc/lease``, ...)."""
        return self.key(GC_DIR, *parts)

    def manifest_key(self, rel: str) -> str:
        """The key of the manifest entry of logical path ``rel`` (relative to the root)."""
        if not rel:
            raise InvalidPathError(f"the store root {self.uri} is a directory, not a file")
        key = self.key(MANIFEST_DIR, rel)
        if len(key.encode()) > MAX_KEY_BYTES:
            raise InvalidPathError(f"path {rel!r} is too long: its S3 key would exceed {MAX_KEY_BYTES} bytes")
        return key

    def manifest_dir_key(self, rel: str) -> str:
        """The key prefix (ending in ``/``) under which the entries of directory ``rel`` live."""
        return self.key(MANIFEST_DIR, rel) + "/"

    def rel_from_manifest_key(self, key: str) -> str:
        """Inverse of :meth:`manifest_key`."""
        base = self.key(MANIFEST_DIR) + "/"
        if not key.startswith(base):
            raise ValueError(f"{key!r} is not a manifest key of {self.uri}")
        return key[len(base) :].strip("/")

    def logical_path(self, rel: str) -> str:
        """``bucket/prefix/rel`` as fsspec names it (no scheme)."""
        return f"{self.path}/{rel}" if rel else self.path

    def relative(self, path: str) -> str:
        """The path of ``path`` relative to this root; raise if it lies outside."""
        segments = split_path(path)
        own = split_path(self.path)
        if segments[: len(own)] != own:
            raise InvalidPathError(
                f"path {path!r} is outside the store root {self.uri}; use a path that starts with {self.uri}/"
            )
        return "/".join(segments[len(own) :])


def blob_relkey(algorithm: str, digest: str) -> str:
    """``blobs/<algorithm>/<d[0:2]>/<d[2:4]>/<digest>``: two levels of hex fan-out."""
    return f"{BLOBS_DIR}/{algorithm}/{digest[0:2]}/{digest[2:4]}/{digest}"


def quarantine_relprefix(algorithm: str, digest: str) -> str:
    return f"{GC_DIR}/q/{algorithm}/{digest[0:2]}/{digest[2:4]}/{digest}/"


def split_path(path: str) -> list[str]:
    """Normalise a logical path into its segments.

    Accepts ``s3cas://a/b``, ``a/b`` and ``/a/b``; folds repeated slashes and ``.``
    segments (as S3-compatible servers such as SeaweedFS do); rejects ``..``, other
    schemes, NUL and control characters, so that no path can escape its root.
    """
    if not isinstance(path, str):
        raise InvalidPathError(f"path must be a str, not {type(path).__name__}")
    rest = path
    if "://" in path:
        scheme, rest = path.split("://", 1)
        if scheme != PROTOCOL:
            raise InvalidPathError(
                f"{path!r} uses the scheme {scheme!r}; cas_store paths use {PROTOCOL}:// "
                f"(plain s3:// objects are not content-addressed and cannot be read through it)"
            )
        if rest.startswith("/"):
            raise InvalidPathError(
                f"{path!r} names no bucket (three slashes after {PROTOCOL}:); "
                f"use {PROTOCOL}://<bucket>/<path>"
            )
    if any(ord(c) < 32 or c == "\x7f" for c in rest):
        raise InvalidPathError(f"path {path!r} contains control characters")
    segments = [s for s in rest.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise InvalidPathError(f"path {path!r} contains '..'; give the path without it")
    return segments
