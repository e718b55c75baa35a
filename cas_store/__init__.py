"""cas_store: content-addressed, locally cached artifact storage over S3.

``import cas_store`` stays light: it does not import zenml (see ``cas_store.zenml``), and
``CASFileSystem`` (s3fs, aiohttp, botocore) loads on first use. That matters because
ZenML runs this package's init hook on every ``import zenml``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.3.0"

from cas_store.config import StoreConfig
from cas_store.errors import (
    BlobCorruptError,
    BlobMissingError,
    BucketNotFoundError,
    CacheError,
    CASStoreError,
    CollectionRefusedError,
    CollectorBusyError,
    CredentialsError,
    IncompatibleStoreError,
    IntegrityError,
    InvalidPathError,
    S3Error,
    StoreNotFoundError,
    StoreOfflineError,
)

if TYPE_CHECKING:
    from cas_store.filesystem import CASFileSystem


def __getattr__(name: str) -> Any:
    if name == "CASFileSystem":
        from cas_store.filesystem import CASFileSystem

        return CASFileSystem
    raise AttributeError(f"module 'cas_store' has no attribute {name!r}")


__all__ = [
    "BlobCorruptError",
    "BlobMissingError",
    "BucketNotFoundError",
    "CASFileSystem",
    "CASStoreError",
    "CacheError",
    "CollectionRefusedError",
    "CollectorBusyError",
    "CredentialsError",
    "IncompatibleStoreError",
    "IntegrityError",
    "InvalidPathError",
    "S3Error",
    "StoreConfig",
    "StoreNotFoundError",
    "StoreOfflineError",
    "__version__",
]
