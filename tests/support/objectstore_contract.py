"""The :class:`~cas_store.backend.base.ObjectStore` contract as a reusable test class.

A test module subclasses :class:`ObjectStoreContract` and provides an ``objects``
fixture (an empty bucket); every implementation must pass the same tests, the way
fsspec's abstract suite is reused by s3fs.
"""

from __future__ import annotations

import asyncio

import pytest

from cas_store.backend.base import ObjectStore, list_all
from cas_store.errors import ObjectNotFoundError, ShortObjectError


def run(objects: ObjectStore, coro_fn):  # type: ignore[no-untyped-def]
    return objects.run("a test", coro_fn)


class ObjectStoreContract:
    """Semantics callers rely on (docstring of ObjectStore)."""

    def test_missing_key_is_none(self, objects: ObjectStore) -> None:
        assert run(objects, lambda: objects.head("nope")) is None
        assert run(objects, lambda: objects.get("nope")) is None

    def test_put_then_read_back(self, objects: ObjectStore) -> None:
        result = run(objects, lambda: objects.put("a/b", b"hello"))
        assert result.created
        info = run(objects, lambda: objects.head("a/b"))
        assert info is not None and info.size == 5 and info.key == "a/b"
        assert info.etag == result.etag
        data, got = run(objects, lambda: objects.get("a/b"))
        assert data == b"hello" and got.size == 5

    def test_if_absent_does_not_overwrite(self, objects: ObjectStore) -> None:
        run(objects, lambda: objects.put("k", b"first"))
        result = run(objects, lambda: objects.put("k", b"second", if_absent=True))
        if objects.capabilities.conditional_create:
            assert not result.created
            assert run(objects, lambda: objects.get("k"))[0] == b"first"
        else:  # the server ignores the condition: the (identical in real use) bytes are replaced
            assert result.created

    def test_if_match_replaces_only_that_version(self, objects: ObjectStore) -> None:
        first = run(objects, lambda: objects.put("m", b"first"))
        stale = run(objects, lambda: objects.put("m", b"second", if_match='"0123456789abcdef"'))
        if objects.capabilities.conditional_replace:
            assert not stale.created
            assert run(objects, lambda: objects.get("m"))[0] == b"first"
            assert run(objects, lambda: objects.put("m", b"third", if_match=first.etag)).created
            assert run(objects, lambda: objects.get("m"))[0] == b"third"
        else:  # ignored: the caller reads back what it wrote
            assert stale.created

    def test_if_absent_creates(self, objects: ObjectStore) -> None:
        assert run(objects, lambda: objects.put("new", b"x", if_absent=True)).created
        assert run(objects, lambda: objects.get("new"))[0] == b"x"

    def test_get_range_streams_the_requested_bytes(self, objects: ObjectStore) -> None:
        data = bytes(range(256)) * 40
        run(objects, lambda: objects.put("r", data))
        got = bytearray(len(data))

        def sink(offset: int, piece: bytes) -> None:
            got[offset : offset + len(piece)] = piece

        run(objects, lambda: objects.get_range("r", 100, 5000, sink))
        assert bytes(got[100:5000]) == data[100:5000]
        assert not any(got[:100]) and not any(got[5000:])

    def test_get_range_of_missing_key_raises(self, objects: ObjectStore) -> None:
        with pytest.raises(ObjectNotFoundError) as info:
            run(objects, lambda: objects.get_range("gone", 0, 10, lambda _o, _d: None))
        assert info.value.key == "gone"

    def test_get_range_past_the_end_raises_short_object(self, objects: ObjectStore) -> None:
        """A compressed blob read as if raw (docs/format.md 4.1): the reader must learn that the
        object is shorter than the range, at once and without a retry, not get a short body."""
        run(objects, lambda: objects.put("short", b"x" * 1000))
        got: list[tuple[int, bytes]] = []
        with pytest.raises(ShortObjectError) as info:  # the range ends past the object
            run(objects, lambda: objects.get_range("short", 0, 5000, lambda o, d: got.append((o, d))))
        assert info.value.key == "short" and info.value.size in (1000, None)
        assert got == []  # nothing of the short object reached the sink
        with pytest.raises(ShortObjectError):  # the range starts past the object (416)
            run(objects, lambda: objects.get_range("short", 2000, 5000, lambda _o, _d: None))

    def test_copy(self, objects: ObjectStore) -> None:
        run(objects, lambda: objects.put("src", b"payload"))
        assert run(objects, lambda: objects.copy("src", "dst"))
        assert run(objects, lambda: objects.get("dst"))[0] == b"payload"
        assert not run(objects, lambda: objects.copy("missing", "dst2"))
        assert run(objects, lambda: objects.head("dst2")) is None

    def test_copy_if_absent_keeps_destination(self, objects: ObjectStore) -> None:
        run(objects, lambda: objects.put("src", b"new"))
        run(objects, lambda: objects.put("dst", b"old"))
        assert run(objects, lambda: objects.copy("src", "dst", if_absent=True))
        assert run(objects, lambda: objects.get("dst"))[0] == b"old"

    def test_listing_pages_in_key_order(self, objects: ObjectStore) -> None:
        keys = [f"p/{i:03d}" for i in range(7)] + ["p/sub/x", "p/sub/y", "q/z"]

        async def put_all() -> None:
            await asyncio.gather(*(objects.put(k, b"") for k in keys))

        run(objects, put_all)
        pages = run(objects, lambda: list_all(objects, "p/", max_keys=3))
        listed = [o.key for page in pages for o in page.objects]
        assert listed == sorted(k for k in keys if k.startswith("p/"))
        assert len(pages) >= 3
        pages = run(objects, lambda: list_all(objects, "p/", delimiter="/", max_keys=2))
        assert [o.key for page in pages for o in page.objects] == [f"p/{i:03d}" for i in range(7)]
        assert [p for page in pages for p in page.prefixes] == ["p/sub/"]

    def test_start_after(self, objects: ObjectStore) -> None:
        for k in ("s/a", "s/b", "s/c"):
            run(objects, lambda k=k: objects.put(k, b""))
        page = run(objects, lambda: objects.list_page("s/", start_after="s/a"))
        assert [o.key for o in page.objects] == ["s/b", "s/c"]

    def test_delete_many(self, objects: ObjectStore) -> None:
        for k in ("d/1", "d/2", "d/3"):
            run(objects, lambda k=k: objects.put(k, b"x"))
        run(objects, lambda: objects.delete_many(["d/1", "d/3", "d/never-existed"]))
        page = run(objects, lambda: objects.list_page("d/"))
        assert [o.key for o in page.objects] == ["d/2"]

    def test_submit_runs_in_background(self, objects: ObjectStore) -> None:
        future = objects.submit("a test", lambda: objects.put("bg", b"1"))
        assert future.result(timeout=30).created
        assert run(objects, lambda: objects.head("bg")) is not None
