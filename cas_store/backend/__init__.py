"""Backends: the :class:`ObjectStore` protocol and its implementations (s3fs, in memory).

``cas_store.backend.s3`` imports s3fs and aiobotocore; import it only where S3 is used.
"""

from cas_store.backend.base import (
    Capabilities,
    ListPage,
    ObjectInfo,
    ObjectStore,
    PutResult,
    Sink,
    gather_limited,
    list_all,
)
from cas_store.backend.memory import MemoryObjectStore

__all__ = [
    "Capabilities",
    "ListPage",
    "MemoryObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "PutResult",
    "Sink",
    "gather_limited",
    "list_all",
]
