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


class BucketNotFoundError(CASStoreError, FileNotFoundError):
    """The bucket named by the store root does not exist."""


class CredentialsError(CASStoreError, PermissionError):
    """S3 rejected or could not find the credentials (never included in the message)."""
