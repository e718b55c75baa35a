"""The exceptions cas_store raises for user-caused failures.

Every exception derives from :class:`CASStoreError`; all but
:class:`IncompatibleStoreError` also derive from the builtin exception that generic
fsspec/ZenML code already handles (``FileNotFoundError``, ``PermissionError``,
``ConnectionError`` ...), so callers that know nothing about cas_store still behave
sensibly. Messages say what happened and what to do.
"""

from __future__ import annotations


class CASStoreError(Exception):
    """Base class of all cas_store errors."""


class InvalidPathError(CASStoreError, ValueError):
    """A path is malformed or escapes the store root (``..``, another bucket, ``s3://``)."""


class StoreOfflineError(CASStoreError, ConnectionError):
    """S3 cannot be reached and the operation needs it.

    Raised for writes and for reads of content the local cache does not hold.
    Cached content stays readable while this is raised for everything else.
    """


class IntegrityError(CASStoreError, OSError):
    """Bytes did not match the digest recorded for them.

    Raised when a blob downloaded from S3 is corrupt, or when a cached copy turns
    out corrupt after bytes were already handed out (the cached copy is discarded,
    so reading again refetches it).
    """


class IncompatibleStoreError(CASStoreError):
    """The bucket prefix holds a store this version cannot use, or no store at all
    but foreign objects, or a store whose settings contradict the configuration."""


class StoreNotFoundError(CASStoreError, FileNotFoundError):
    """No store at the root: no format marker (a store is created by its first write).

    Raised by operations that inspect a whole store (``cas-store stats``, ``verify``).
    """


class BucketNotFoundError(CASStoreError, FileNotFoundError):
    """The bucket named by the store root does not exist."""


class CredentialsError(CASStoreError, PermissionError):
    """S3 rejected or could not find the credentials (never included in the message)."""


class BlobError(IntegrityError):
    """A blob the manifest names is unusable; ``digest`` and ``key`` say which one."""

    def __init__(self, message: str, *, digest: str, key: str) -> None:
        super().__init__(message)
        self.digest = digest
        self.key = key


class BlobMissingError(BlobError):
    """A blob a manifest entry names is in neither the bucket nor the local cache.

    The entry's content is lost unless the same bytes are written again (which
    re-creates the blob); ``cas-store verify`` lists every entry affected.
    """


class BlobCorruptError(BlobError):
    """A blob in the bucket does not hash to its key: it was modified outside cas_store."""


class S3Error(CASStoreError, OSError):
    """S3 answered with an error cas_store has no more specific exception for.

    ``code`` is the S3 error code (``"InternalError"``, ``"SlowDown"``, ...) or ``None``,
    ``status`` the HTTP status or ``None``, ``key`` the object concerned, if any.
    Raised after botocore's and s3fs's retries ran out.
    """

    def __init__(
        self, message: str, *, code: str | None = None, status: int | None = None, key: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.key = key


class ObjectNotFoundError(CASStoreError, FileNotFoundError):
    """The backend has no object at ``key`` (raised where absence is not an answer)."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class ShortObjectError(CASStoreError):
    """An object holds fewer bytes than a ranged read asked for (``size``, if the server said).

    For a blob, that is a compressed one read as if raw (docs/format.md 4.1): the reader
    then fetches it whole and decodes it.
    """

    def __init__(self, message: str, *, key: str, size: int | None) -> None:
        super().__init__(message)
        self.key = key
        self.size = size


class CacheError(CASStoreError, OSError):
    """The local cache directory cannot be used (disk full, permissions, a damaged or
    locked database); the message names the directory and says what to do."""


class CollectorBusyError(CASStoreError):
    """Another collector holds the store's lease (``gc/lease``); wait, or break a stale one."""


class CollectionRefusedError(CASStoreError):
    """The collector will not start: the store or the server does not allow a safe collection."""
