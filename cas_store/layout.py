"""Where things live: logical paths, store roots and S3 keys (bucket format versions 1 and 2).

Pure functions, no I/O. ``docs/format.md`` is the normative description; keep them in step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cas_store.errors import InvalidPathError

PROTOCOL = "s3cas"
MARKER_NAME = "cas-store.json"
BLOBS_DIR = "blobs"
MANIFEST_DIR = "manifest"
GC_DIR = "gc"  # the collector's quarantine, run logs and lease (docs/gc.md section 3)
MAX_KEY_BYTES = 1024  # S3's limit on object key length
#: Bytes the store's own keys take below its root, at most: ``/gc/q/<alg>/xx/yy/<digest>/<run>``
#: is 108 with a 64-digit digest; the rest is headroom.
LAYOUT_KEY_BYTES = 128
#: The longest root prefix whose every key fits S3's limit.
MAX_PREFIX_BYTES = MAX_KEY_BYTES - LAYOUT_KEY_BYTES
# What botocore's client accepts as a bucket name (it refuses others before sending anything;
# legacy buckets may have capitals and underscores, so this is looser than today's rules).
_BUCKET_NAME = re.compile(r"[a-zA-Z0-9.\-_]{1,255}")
_SHOWN = 80  # characters of a long path shown in an error message


@dataclass(frozen=True, order=True)
class Root:
    """A store root ``s3cas://<bucket>/<prefix>``; its data lives under ``s3://<bucket>/<prefix>/``."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, uri: str) -> Root:
        """Parse ``s3cas://bucket/prefix`` (the scheme is optional).

        Refuses a query or fragment (``?``, ``#``: options are keyword arguments, not URL
        parts) and a prefix too long for the store's keys to fit S3's key length limit.
        """
        if isinstance(uri, str) and ("?" in uri or "#" in uri):
            raise InvalidPathError(
                f"store root {uri!r} contains '?' or '#'; a store root is s3cas://<bucket>[/<prefix>]: "
                "pass options as keyword arguments (e.g. client_kwargs={'endpoint_url': ...}), not in the URL"
            )
        segments = split_path(uri)
        if not segments:
            raise InvalidPathError(f"store root {uri!r} names no bucket; use s3cas://<bucket>[/<prefix>]")
        prefix = "/".join(segments[1:])
        if len(prefix.encode()) > MAX_PREFIX_BYTES:
            raise InvalidPathError(
                f"store root {_shown(uri)} is too long: its prefix has {len(prefix.encode())} bytes, and "
                f"the store's keys below it must fit S3's limit of {MAX_KEY_BYTES} bytes; use a prefix "
                f"of at most {MAX_PREFIX_BYTES} bytes"
            )
        return cls(segments[0], prefix)

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
        key = self.key(MANIFEST_DIR, checked_rel(rel))
        if len(key.encode()) > MAX_KEY_BYTES:
            room = MAX_KEY_BYTES - len(self.key(MANIFEST_DIR).encode()) - 1
            raise InvalidPathError(
                f"path {_shown(rel)} is too long: its S3 key would have {len(key.encode())} bytes, more "
                f"than S3's limit of {MAX_KEY_BYTES}; use a path of at most {room} bytes (UTF-8) below "
                f"the store root {self.uri}"
            )
        return key

    def manifest_dir_key(self, rel: str) -> str:
        """The key prefix (ending in ``/``) under which the entries of directory ``rel`` live."""
        return self.key(MANIFEST_DIR, checked_rel(rel)) + "/"

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


def _shown(path: str) -> str:
    """``path`` for an error message: its start only, if it is long."""
    return repr(path) if len(path) <= _SHOWN else f"{path[:_SHOWN]!r}... ({len(path)} characters)"


def _is_control(c: str) -> bool:
    return ord(c) < 32 or 0x7F <= ord(c) <= 0x9F  # C0, DEL and C1


def _escapes(segment: str) -> bool:
    """Whether ``segment`` means ``..`` to a reader that decodes percent escapes or takes
    ``\\`` as a separator (a URL-decoding gateway, a Windows download of the file)."""
    if "%" not in segment and "\\" not in segment:
        return segment == ".."  # nothing to decode: the common case, on every path of every call
    decoded = re.sub(r"%(2[fF]|5[cC])", "/", re.sub(r"%2[eE]", ".", segment))
    return ".." in re.split(r"[/\\]", decoded)


def _segments(rest: str, path: str) -> list[str]:
    """The segments of ``rest`` (``path`` without its scheme), refusing what could escape."""
    if any(_is_control(c) for c in rest):
        raise InvalidPathError(f"path {_shown(path)} contains control characters; rename it without them")
    try:
        rest.encode()
    except UnicodeEncodeError:
        raise InvalidPathError(
            f"path {_shown(path)} is not valid Unicode (it holds surrogate escapes of undecodable "
            "bytes): S3 keys are UTF-8; decode the name with its real encoding, or rename the file"
        ) from None
    segments = [s for s in rest.split("/") if s not in ("", ".")]
    if any(_escapes(s) for s in segments):
        raise InvalidPathError(
            f"path {_shown(path)} contains '..' (perhaps as %2e%2e or between backslashes); "
            "give the path without it"
        )
    return segments


def checked_rel(rel: str) -> str:
    """``rel`` (a path relative to a store root), if no part of it could escape the root
    (``..`` however spelt, control characters, invalid Unicode): the check of
    :func:`split_path`, for paths that reach the Store API another way (listed names, callers
    of :class:`~cas_store.store.Store`)."""
    if not isinstance(rel, str):
        raise InvalidPathError(f"path must be a str, not {type(rel).__name__}: decode it first")
    _segments(rel, rel)
    return rel


def split_path(path: str) -> list[str]:
    """Normalise a logical path into its segments (the first is the bucket).

    Accepts ``s3cas://a/b``, ``a/b`` and ``/a/b``; folds repeated slashes and ``.``
    segments (as S3-compatible servers such as SeaweedFS do); rejects ``..`` (also spelt
    ``%2e%2e`` or between backslashes), other schemes, NUL and control characters, text
    that is not valid Unicode (surrogate escapes of undecodable bytes) and bucket names S3
    clients refuse, so that no path can escape its root or reach another bucket.
    """
    if not isinstance(path, str):
        raise InvalidPathError(
            f"path must be a str, not {type(path).__name__}: decode it first (names are UTF-8 in S3)"
        )
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
    segments = _segments(rest, path)
    if segments and not _BUCKET_NAME.fullmatch(segments[0]):
        if "@" in segments[0]:  # do not repeat what may be a password
            raise InvalidPathError(
                f"the bucket part of a {PROTOCOL}:// path contains '@': credentials do not go in the "
                "URL; pass key and secret (or a profile) as options"
            )
        raise InvalidPathError(
            f"{segments[0]!r} in {_shown(path)} is not a valid S3 bucket name (letters, digits, '.', "
            "'-', '_'); an endpoint's host and port go in client_kwargs={'endpoint_url': ...} "
            "(--endpoint-url), not in the path"
        )
    return segments
