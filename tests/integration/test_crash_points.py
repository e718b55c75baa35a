"""Deterministic crash points of the write path, on moto over HTTP: a writer whose request
fails (or stalls) at one chosen call (tests/support/wrappers.FaultyObjectStore).

Promise (docs/consistency.md, "Publishing order"): whichever request of a write fails, the
write raises and publishes nothing: the path keeps its old content whole (or stays absent),
for every reader and for the writer itself, and writing again succeeds.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cas_store.backend import ObjectStore
from cas_store.backend.s3 import S3Connection
from cas_store.cache import LocalCache
from cas_store.config import MiB, StoreConfig
from cas_store.errors import CASStoreError
from cas_store.layout import Root
from cas_store.store import Store
from tests.support.clients import make_bucket
from tests.support.moto import MotoServer
from tests.support.wrappers import FaultyObjectStore, InjectedFault

#: 5 chunks of the store's fixed 1 MiB chunking: 5 blob HEADs and PUTs, then the entry PUT.
SIZE = 4 * MiB + 5
CHUNKS = 5
BLOBS = "store/blobs/"
MANIFEST = "store/manifest/"

#: Every request of a write of new multi-chunk content, in turn.
FAULT_POINTS = (
    [("head", BLOBS, n) for n in range(1, CHUNKS + 1)]
    + [("put", BLOBS, n) for n in range(1, CHUNKS + 1)]
    + [("put", MANIFEST, 1)]
)

#: A write to a path that does not exist yet, failing at its first request of each kind.
NEW_PATH_FAULT_POINTS = [("head", BLOBS, 1), ("put", BLOBS, CHUNKS), ("put", MANIFEST, 1)]

StoreFactory = Callable[..., Store]


@pytest.fixture
def objects(moto: MotoServer) -> Iterator[ObjectStore]:
    bucket = f"cp-{uuid.uuid4().hex[:12]}"
    make_bucket(moto.endpoint_url, bucket, moto.access_key, moto.secret_key)
    connection = S3Connection(
        StoreConfig(
            aws_access_key_id=moto.access_key,
            aws_secret_access_key=moto.secret_key,
            client_kwargs={"endpoint_url": moto.endpoint_url},
        )
    )
    yield connection.bucket(bucket)
    connection.close()


@pytest.fixture
def make_store(objects: ObjectStore, tmp_path: Path) -> StoreFactory:
    """A Store over ``objects`` (or a wrapper of it), with the cache directory named ``cache``."""

    def factory(over: ObjectStore | None = None, cache: str = "writer") -> Store:
        settings = StoreConfig(cache_dir=str(tmp_path / cache), chunk_size=MiB, gc_grace=60)
        local = LocalCache(settings.resolved_cache_dir, settings.cache_size, settings.cache_eviction_policy)
        return Store(Root(objects.bucket, "store"), settings, over or objects, local)

    return factory


def _write(store: Store, rel: str, data: bytes) -> None:
    with store.open_write(rel, rel) as f:
        f.write(data[: len(data) // 2])
        f.write(data[len(data) // 2 :])


def _read(store: Store, rel: str) -> bytes | None:
    record = store.resolve(rel)
    if record is None:
        return None
    with store.open_read(record, rel) as f:
        return f.read()


@pytest.mark.parametrize(
    ("method", "prefix", "nth", "overwrite"),
    [(*p, True) for p in FAULT_POINTS] + [(*p, False) for p in NEW_PATH_FAULT_POINTS],
    ids=[f"overwrite-{m}-{p.split('/')[1]}-{n}" for m, p, n in FAULT_POINTS]
    + [f"new-path-{m}-{p.split('/')[1]}-{n}" for m, p, n in NEW_PATH_FAULT_POINTS],
)
def test_a_write_failing_at_any_request_publishes_nothing(
    make_store: StoreFactory, objects: ObjectStore, method: str, prefix: str, nth: int, overwrite: bool
) -> None:
    old, new = os.urandom(SIZE), os.urandom(SIZE)
    setup = make_store(cache="setup")
    if overwrite:
        _write(setup, "f", old)
    else:
        _write(setup, "other", old)  # the store exists: the writer asks before it uploads
    faulty = FaultyObjectStore(objects, method, prefix, nth)
    writer = make_store(faulty)

    with pytest.raises(CASStoreError) as raised:
        _write(writer, "f", new)
    assert faulty.reached.is_set()
    assert isinstance(raised.value, InjectedFault) or isinstance(raised.value.__cause__, InjectedFault)

    expected = old if overwrite else None
    assert _read(make_store(cache=f"reader-{uuid.uuid4().hex[:6]}"), "f") == expected
    assert _read(writer, "f") == expected  # the writer's own cache and mirror agree
    files, _ = make_store(cache="lister").list_names("")
    assert sorted(files) == (["f"] if overwrite else ["other"])

    _write(writer, "f", new)  # the fault was one request: writing again succeeds
    assert _read(make_store(cache=f"reader-{uuid.uuid4().hex[:6]}"), "f") == new


def test_a_stalled_entry_put_shows_the_old_content_until_it_lands(
    make_store: StoreFactory, objects: ObjectStore
) -> None:
    old, new = os.urandom(SIZE), os.urandom(SIZE)
    _write(make_store(cache="setup"), "f", old)
    release = threading.Event()
    faulty = FaultyObjectStore(objects, "put", MANIFEST, stall=release)
    writer = make_store(faulty)
    failure: list[BaseException] = []

    def write_new() -> None:
        try:
            _write(writer, "f", new)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    thread = threading.Thread(target=write_new)
    thread.start()
    try:
        assert faulty.reached.wait(60)
        # Every blob of the new content is uploaded; only the entry is outstanding.
        assert faulty.count("put", BLOBS) == CHUNKS
        assert _read(make_store(cache="reader-during"), "f") == old
    finally:
        release.set()
        thread.join(60)
    assert not thread.is_alive() and failure == []
    assert _read(make_store(cache="reader-after"), "f") == new


@pytest.mark.parametrize("nth", [1, 3, CHUNKS])
def test_a_read_failing_at_a_download_caches_nothing_partial(
    make_store: StoreFactory, objects: ObjectStore, nth: int
) -> None:
    """A read whose n-th blob download fails raises; the same cache directory then reads
    the whole content (nothing half-downloaded is kept or served)."""
    data = os.urandom(SIZE)
    _write(make_store(cache="setup"), "f", data)
    faulty = FaultyObjectStore(objects, "get_range", BLOBS, nth)
    reader = make_store(faulty, cache="reader")
    with pytest.raises(CASStoreError):
        _read(reader, "f")
    assert faulty.reached.is_set()
    assert _read(reader, "f") == data
    assert _read(make_store(cache="reader"), "f") == data  # another Store on that cache directory
