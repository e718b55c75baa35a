"""The in-memory ObjectStore keeps the backend contract, and imitates server quirks on request."""

from __future__ import annotations

import pytest

from cas_store.backend import MemoryObjectStore
from cas_store.errors import StoreOfflineError
from tests.support.objectstore_contract import ObjectStoreContract, run


class TestMemoryContract(ObjectStoreContract):
    @pytest.fixture
    def objects(self) -> MemoryObjectStore:
        return MemoryObjectStore("unit")


class TestMemoryIgnoringIfNoneMatch(ObjectStoreContract):
    @pytest.fixture
    def objects(self) -> MemoryObjectStore:
        return MemoryObjectStore("unit", honour_if_none_match=False)


def test_offline_fails_every_call_with_the_offline_error() -> None:
    objects = MemoryObjectStore()
    objects.offline = True
    with pytest.raises(StoreOfflineError, match="reading x needs it"):
        objects.run("reading x", lambda: objects.head("x"))


def test_clock_stamps_last_modified() -> None:
    now = [1_000_000.0]
    objects = MemoryObjectStore(clock=lambda: now[0])
    run(objects, lambda: objects.put("k", b"v"))
    info = run(objects, lambda: objects.head("k"))
    assert info.modified.timestamp() == 1_000_000.0
