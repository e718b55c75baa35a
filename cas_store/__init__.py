"""cas_store: content-addressed, locally cached artifact storage over S3.

``import cas_store`` stays light: it does not import zenml (see ``cas_store.zenml``).
"""

from __future__ import annotations

__version__ = "0.1.0"

from cas_store.config import StoreConfig
from cas_store.errors import (
    BucketNotFoundError,
    CASStoreError,
    CredentialsError,
    IncompatibleStoreError,
    IntegrityError,
    InvalidPathError,
    StoreOfflineError,
)
from cas_store.filesystem import CASFileSystem

__all__ = [
    "BucketNotFoundError",
    "CASFileSystem",
    "CASStoreError",
    "CredentialsError",
    "IncompatibleStoreError",
    "IntegrityError",
    "InvalidPathError",
    "StoreConfig",
    "StoreOfflineError",
    "__version__",
]
