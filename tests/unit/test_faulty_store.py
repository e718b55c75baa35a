"""tests/support/wrappers.FaultyObjectStore: it fails at exactly the call it names, and only there."""

from __future__ import annotations

import threading

import pytest

from cas_store.backend import MemoryObjectStore
from tests.support.wrappers import FaultyObjectStore, InjectedFault


def _put(objects: FaultyObjectStore, key: str) -> None:
    objects.run("put", lambda: objects.put(key, b"x"))


def _exists(objects: MemoryObjectStore, key: str) -> bool:
    return objects.run("head", lambda: objects.head(key)) is not None


def test_raises_at_the_nth_matching_call_only() -> None:
    inner = MemoryObjectStore("bkt")
    faulty = FaultyObjectStore(inner, "put", "blobs/", nth=2)
    _put(faulty, "blobs/a")
    _put(faulty, "manifest/m")  # another prefix: not counted
    with pytest.raises(InjectedFault) as raised:
        _put(faulty, "blobs/b")
    assert raised.value.key == "blobs/b" and raised.value.status == 500
    assert not _exists(inner, "blobs/b")  # never sent
    _put(faulty, "blobs/c")  # fails once
    assert [_exists(inner, k) for k in ("blobs/a", "manifest/m", "blobs/c")] == [True, True, True]
    assert faulty.reached.is_set() and faulty.matched == 3


def test_raises_the_error_it_is_given() -> None:
    faulty = FaultyObjectStore(MemoryObjectStore("bkt"), "head", error=ConnectionResetError("cut"))
    # The memory backend turns a connection error into its offline error, as S3 does.
    with pytest.raises(ConnectionError):
        faulty.run("head", lambda: faulty.head("k"))


def test_stalls_until_released_while_other_calls_go_on() -> None:
    inner = MemoryObjectStore("bkt")
    release = threading.Event()
    faulty = FaultyObjectStore(inner, "put", "manifest/", stall=release)
    stalled = faulty.submit("put", lambda: faulty.put("manifest/m", b"entry"))
    assert faulty.reached.wait(10)
    _put(faulty, "blobs/a")  # the event loop is not blocked by the stall
    assert not stalled.done() and not _exists(inner, "manifest/m")
    release.set()
    stalled.result(timeout=10)
    assert _exists(inner, "manifest/m")


def test_rejects_a_fault_that_both_raises_and_stalls() -> None:
    with pytest.raises(ValueError, match="raises or stalls"):
        FaultyObjectStore(MemoryObjectStore("bkt"), "put", error=OSError(), stall=threading.Event())
    with pytest.raises(ValueError, match="counts from 1"):
        FaultyObjectStore(MemoryObjectStore("bkt"), "put", nth=0)
