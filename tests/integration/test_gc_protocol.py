"""The collection protocol end to end (docs/gc.md section 10, cases a to i), on the in-memory
backend and over HTTP on moto and SeaweedFS.

Every store here has ``gc_grace = 2`` (Δ = G = 2 s, V = 0.5 s, P ≈ 0.02 s). Writers and
collectors run on an injected clock (:class:`World`); on a real server ``advance`` also
sleeps, because the protocol's server-side times (LastModified) move only with real time.
Barrier hooks at the backend seam and the collector's step hook interleave writers,
readers and collectors deterministically; :func:`check_b2` asserts the protocol's
invariant after every collector step: *every blob named by a published entry is at its
main key or in a quarantine copy*.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cas_store.backend import MemoryObjectStore, ObjectStore
from cas_store.backend.base import list_all
from cas_store.backend.s3 import S3Connection
from cas_store.cache import LocalCache
from cas_store.config import MiB, StoreConfig
from cas_store.errors import CollectionRefusedError, CollectorBusyError, IncompatibleStoreError
from cas_store.format import Entry, Marker
from cas_store.layout import Root
from cas_store.maintenance import collect, upgrade_store
from cas_store.maintenance.gc import GCReport
from cas_store.store import Store
from tests.support.clients import S3Endpoint, make_bucket
from tests.support.wrappers import HookedObjectStore

GRACE = 2.0
#: More than G (and Δ) in server time: LastModified has a resolution of 1 s.
PAST_GRACE = GRACE + 1.2
#: For a test that must finish some steps within Δ of real time on a real server.
SLOW_GRACE = 6.0
ROOT = "store"

STEPS_P1 = ("p1:started", "p1:listed", "p1:marked", "p1:logged", "p1:copied", "p1:moved", "p1:quarantined")
STEPS_P2 = ("p2:due", "p2:listed", "p2:restored", "p2:purged", "p2:done")


class Clock:
    """The writers' and collectors' clock (and, in memory, the server's)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    """A bucket, a clock, and stores over them (each with its own local cache: a machine)."""

    name: str
    objects: ObjectStore
    clock: Clock
    tmp: Path
    config: dict[str, Any]
    stores: list[Store] = field(default_factory=list)
    #: The ``gc_grace`` of the stores made from now on.
    grace: float = GRACE

    @property
    def real(self) -> bool:
        return self.name != "memory"

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: on the clock, and on a real server in real time too."""
        if self.real:
            time.sleep(seconds)
        self.clock.now += seconds

    def store(self, objects: ObjectStore | None = None, **overrides: Any) -> Store:
        settings = StoreConfig(
            cache_dir=str(self.tmp / f"cache-{uuid.uuid4().hex[:8]}"),
            chunk_size=MiB,
            **{"gc_grace": self.grace, **self.config, **overrides},
        )
        cache = LocalCache(settings.resolved_cache_dir, settings.cache_size, settings.cache_eviction_policy)
        store = Store(Root(self.objects.bucket, ROOT), settings, objects or self.objects, cache, self.clock)
        self.stores.append(store)
        return store

    def hooked(self, hook: Any = None, **overrides: Any) -> tuple[Store, HookedObjectStore]:
        wrapper = HookedObjectStore(self.objects, hook)
        return self.store(wrapper, **overrides), wrapper

    def collect(self, store: Store | None = None, **kwargs: Any) -> GCReport:
        """A collection (acting, not dry) that checks B2 after every step."""
        collector = store or self.store()
        inner = kwargs.pop("hook", None)

        def hook(step: str, run: str) -> None:
            check_b2(self.objects)
            if inner is not None:
                inner(step, run)

        kwargs.setdefault("dry_run", False)
        report = collect(collector, clock=self.clock, hook=hook, **kwargs)
        check_b2(self.objects)
        return report


def _world(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> Iterator[World]:
    if kind == "memory":
        clock = Clock()
        yield World("memory", MemoryObjectStore("bkt", clock=clock), clock, tmp_path, {})
        return
    server: S3Endpoint = request.getfixturevalue(kind)
    clock = Clock()  # after the server started: it starts in step with the server's clock
    bucket = f"gc-{uuid.uuid4().hex[:12]}"
    make_bucket(server.endpoint_url, bucket, server.access_key, server.secret_key)
    config = {
        "aws_access_key_id": server.access_key,
        "aws_secret_access_key": server.secret_key,
        "client_kwargs": {"endpoint_url": server.endpoint_url},
    }
    connection = S3Connection(StoreConfig(**config))  # type: ignore[arg-type]
    yield World(kind, connection.bucket(bucket), clock, tmp_path, config)
    connection.close()


@pytest.fixture(params=["memory", "moto", pytest.param("seaweedfs", marks=pytest.mark.seaweedfs)])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from _world(request, tmp_path, request.param)


@pytest.fixture(params=["moto", pytest.param("seaweedfs", marks=pytest.mark.seaweedfs)])
def server_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from _world(request, tmp_path, request.param)


# -- helpers -------------------------------------------------------------------------------


def _keys(objects: ObjectStore, prefix: str) -> list[str]:
    async def listing() -> list[str]:
        return [o.key for page in await list_all(objects, prefix) for o in page.objects]

    return objects.run("listing", listing)


def check_b2(objects: ObjectStore) -> None:
    """B2: every blob named by a published entry is at its main key or in quarantine."""
    root = Root(objects.bucket, ROOT)
    present = set(_keys(objects, root.key("blobs") + "/"))
    quarantined = {k.rsplit("/", 2)[-2] for k in _keys(objects, root.gc_key("q") + "/")}
    for key in _keys(objects, root.key("manifest") + "/"):
        found = objects.run("reading an entry", lambda key=key: objects.get(key))  # type: ignore[misc]
        if found is None:
            continue  # removed since the listing
        entry = Entry.decode(found[0], key)
        for chunk in entry.chunks:
            assert root.blob_key(entry.algorithm, chunk.digest) in present or chunk.digest in quarantined, (
                f"B2 broken: {key} names blob {chunk.digest}, neither at its main key nor in quarantine"
            )


def write(store: Store, rel: str, data: bytes) -> None:
    with store.open_write(rel, rel) as f:
        f.write(data)


def read(store: Store, rel: str) -> bytes:
    record = store.resolve(rel)
    assert record is not None, rel
    with store.open_read(record, rel) as f:
        return f.read()  # type: ignore[no-any-return]


def main_key(store: Store, data: bytes, index: int = 0) -> str:
    """The main key of chunk ``index`` of ``data`` as ``store`` cuts it (1 MiB chunks)."""
    from cas_store.hashing import hash_bytes

    chunk = data[index * MiB : (index + 1) * MiB]
    return store.root.blob_key("xxh128", hash_bytes("xxh128", chunk))


def exists(objects: ObjectStore, key: str) -> bool:
    return objects.run("head", lambda: objects.head(key)) is not None


def quarantine_of(objects: ObjectStore, key: str) -> list[str]:
    digest = key.rsplit("/", 1)[-1]
    return _keys(objects, Root(objects.bucket, ROOT).quarantine_prefix("xxh128", digest))


def garbage(world: World, size: int = 2 * MiB) -> tuple[Store, bytes]:
    """A store holding one file ``keep`` and the unreferenced content of a removed one, old enough
    to be collected."""
    store = world.store()
    write(store, "keep", os.urandom(3 * MiB))
    data = os.urandom(size)
    write(store, "gone", data)
    store.remove(["gone"])
    world.advance(world.grace + PAST_GRACE - GRACE)
    return store, data


def in_thread(fn: Callable[[], Any]) -> Callable[[str, str], Any]:
    """A backend hook that runs ``fn`` once, off the event loop (so that it may use a store)."""
    done = []

    async def hook(method: str, key: str) -> None:
        if not done:
            done.append(True)
            await asyncio.get_running_loop().run_in_executor(None, fn)

    return hook


# -- the whole protocol --------------------------------------------------------------------


def test_two_collections_free_exactly_the_old_unreferenced_content(world: World) -> None:
    store, data = garbage(world)
    kept = read(store, "keep")
    blobs_before = set(_keys(world.objects, store.root.key("blobs") + "/"))
    dry = collect(store, clock=time.time if world.real else world.clock)  # the default: a dry run
    assert (dry.candidates, dry.reclaimable_bytes) == (2, len(data))
    assert set(_keys(world.objects, store.root.key("blobs") + "/")) == blobs_before
    assert _keys(world.objects, store.root.gc_key()) == []

    first = world.collect()
    assert (first.quarantined_blobs, first.quarantined_bytes, first.freed_bytes) == (2, len(data), 0)
    assert [p.run for p in first.pending] == [first.run]
    assert not exists(world.objects, main_key(store, data))
    world.advance(PAST_GRACE)
    second = world.collect()
    assert (second.freed_blobs, second.freed_bytes, second.restored_blobs) == (2, len(data), 0)
    assert first.run in second.finished_runs
    assert set(_keys(world.objects, store.root.key("blobs") + "/")) == blobs_before - {
        main_key(store, data, 0),
        main_key(store, data, 1),
    }
    assert _keys(world.objects, store.root.gc_key()) == []  # no log, lease or copy left
    assert read(world.store(), "keep") == kept


def test_fresh_unreferenced_blobs_are_no_candidates(world: World) -> None:
    store = world.store()
    write(store, "gone", os.urandom(MiB))
    store.remove(["gone"])
    assert world.collect().candidates == 0  # younger than G: a writer may be about to name it


# -- a: a writer's HEAD, then a move: readers use quarantine, phase 2 restores -----------------


def test_a_reused_blob_moved_before_publish_is_read_from_quarantine_then_restored(world: World) -> None:
    _, data = garbage(world)
    writer = world.store()
    f = writer.open_write("new", "new")
    f.write(data)  # HEADs prove the old blobs present: nothing is uploaded
    f.flush()
    moved = world.collect()  # phase 1: the blobs are no entry's yet, so they move
    assert moved.quarantined_blobs == 2
    f.close()  # the proofs are fresh (younger than V - P): published without a request
    assert not exists(world.objects, main_key(writer, data))
    check_b2(world.objects)
    assert read(world.store(), "new") == data  # rule R: read from the quarantine copy
    world.advance(PAST_GRACE)
    restored = world.collect()
    assert restored.restored_blobs == 2 and restored.freed_blobs == 0
    assert exists(world.objects, main_key(writer, data))
    assert quarantine_of(world.objects, main_key(writer, data)) == []
    assert read(world.store(), "new") == data


# -- b: the memo just inside and just outside V - P ----------------------------------------------


def _move_out_of_band(world: World, key: str) -> None:
    """What phase 1 does to one blob: copy it to a quarantine key, delete the main key."""
    objects, digest = world.objects, key.rsplit("/", 1)[-1]
    dest = Root(objects.bucket, ROOT).quarantine_key("xxh128", digest, "20000101T000000Z-test0000")
    assert objects.run("copy", lambda: objects.copy(key, dest))
    objects.run("delete", lambda: objects.delete_many([key]))


def test_b_memo_trusted_inside_v_minus_p_rechecked_outside(world: World) -> None:
    store, calls = world.hooked()
    data = os.urandom(MiB + 10)
    write(store, "one", data)
    gc = store.gc
    assert gc is not None and gc.recheck_after == pytest.approx(0.5 - 2 / 96)
    key = main_key(store, data)
    world.clock.now += gc.recheck_after - 0.01  # just inside: the memo proves the blob
    calls.calls.clear()
    write(store, "two", data)
    assert calls.count("head", store.root.key("blobs")) == 0
    assert calls.count("put", store.root.key("blobs")) == 0
    _move_out_of_band(world, key)
    world.clock.now += 0.02  # now just outside V - P, still inside V (0.5 s)
    calls.calls.clear()
    write(store, "three", data)  # the memo still spares the upload; the close re-checks
    assert calls.count("head", key) == 1
    assert calls.count("put", key) == 1  # 404: uploaded again from the local cache
    assert exists(world.objects, key)
    assert read(world.store(), "three") == data


def test_writes_shorter_than_v_minus_p_cost_no_extra_request(world: World) -> None:
    world.store().marker(create=True)  # created elsewhere: its writers ask for blobs first (is_new)
    store, calls = world.hooked()
    data = os.urandom(2 * MiB)
    write(store, "a", data)
    counted = list(calls.calls)
    # The same write on a store of format 1 (no collector, no rule W) makes the same requests.
    v1 = Root(world.objects.bucket, "v1store")
    body = Marker(1, "xxh128", MiB, "cas_store 0.1.0").encode()
    world.objects.run("v1", lambda: world.objects.put(v1.marker_key(), body))
    other = HookedObjectStore(world.objects)
    settings = StoreConfig(cache_dir=str(world.tmp / "v1cache"), **world.config)
    cache = LocalCache(settings.resolved_cache_dir, settings.cache_size, settings.cache_eviction_policy)
    v1store = Store(v1, settings, other, cache, world.clock)
    v1store.marker()
    other.calls.clear()
    calls.calls.clear()
    write(v1store, "a", os.urandom(2 * MiB))
    write(store, "b", os.urandom(2 * MiB))
    # As multisets: a file's chunks upload in parallel, so the order of requests varies.
    assert sorted(m for m, _ in other.calls) == sorted(m for m, _ in calls.calls)
    assert counted  # (the first write of the v2 store also created it)


# -- c: a write held open for 3 V -------------------------------------------------------------


@pytest.mark.parametrize("cached", [True, False], ids=["re-upload", "restore-from-quarantine"])
def test_c_write_held_open_revalidates_at_close(world: World, cached: bool) -> None:
    _, data = garbage(world)
    writer, calls = world.hooked()
    f = writer.open_write("late", "late")
    f.write(data)
    f.flush()
    world.advance(3 * 0.5)  # 3 V: the proofs are stale by the time of the close
    moved = world.collect()
    assert moved.quarantined_blobs == 2
    if not cached:
        for i in range(2):
            writer.cache.discard("xxh128", main_key(writer, data, i).rsplit("/", 1)[-1])
    calls.calls.clear()
    f.close()
    for i in range(2):
        key = main_key(writer, data, i)
        assert calls.count("head", key) == 1, calls.calls
        assert exists(world.objects, key)
        if cached:
            assert calls.count("put", key) == 1 and calls.count("copy", key) == 0
        else:
            assert calls.count("copy", key) == 1 and calls.count("put", key) == 0
    check_b2(world.objects)
    world.advance(PAST_GRACE)
    done = world.collect()
    assert (done.freed_blobs, done.restored_blobs) == (0, 0)  # the main keys hold the blobs again
    assert _keys(world.objects, writer.root.gc_key("q") + "/") == []  # and the copies are purged
    assert read(world.store(), "late") == data


def test_c_write_fails_when_the_blob_is_nowhere(world: World) -> None:
    store = world.store()
    data = os.urandom(MiB)
    f = store.open_write("x", "x")
    f.write(data)
    f.flush()
    world.clock.now += 1.0  # older than V
    key = main_key(store, data)
    world.objects.run("delete", lambda: world.objects.delete_many([key]))  # deleted outside cas_store
    store.cache.discard("xxh128", key.rsplit("/", 1)[-1])
    from cas_store.errors import BlobMissingError

    with pytest.raises(BlobMissingError, match="nothing was published"):
        f.close()
    assert store.resolve("x") is None


# -- d: phase 2 too early -------------------------------------------------------------------


def test_d_phase_two_attempted_too_early_does_nothing(world: World) -> None:
    if world.real:
        # The server's refusal is asserted while less than Δ of real time has passed since the
        # quarantine was stamped; a Δ of 2 s left too little room for a loaded machine (two
        # collections plus LastModified's 1 s truncation), so this store gets a longer one.
        world.grace = SLOW_GRACE
    store, _ = garbage(world)
    first = world.collect()
    quarantined = time.time()
    quarantine = _keys(world.objects, store.root.gc_key("q") + "/")
    assert len(quarantine) == 2
    past_grace = world.grace + PAST_GRACE - GRACE

    def nothing_freed() -> None:
        early = world.collect()
        assert early.freed_blobs == 0 and first.run in [p.run for p in early.pending]
        assert _keys(world.objects, store.root.gc_key("q") + "/") == quarantine

    if world.real:  # Δ must have passed by the server's clock and by the collector's
        world.clock.now += 10 * world.grace
        nothing_freed()  # the server says it is too early
        assert time.time() - quarantined < world.grace - 1, "too slow: the server's refusal was not tested"
        world.clock.now -= 10 * world.grace
        time.sleep(past_grace)
        nothing_freed()  # the collector's clock says it is too early
        world.clock.now += past_grace
    else:
        world.clock.now += world.grace / 2
        nothing_freed()
        world.advance(past_grace)
    assert world.collect().freed_blobs == 2


# -- e: overlapping runs ----------------------------------------------------------------------


def test_e_overlapping_runs_lose_nothing(world: World) -> None:
    store, data = garbage(world)
    other = os.urandom(MiB)
    write(store, "other", other)
    store.remove(["other"])
    world.advance(PAST_GRACE)
    writer = world.store()
    interloper: list[GCReport] = []

    def overlap(step: str, run: str) -> None:
        if step == "p1:copied" and not interloper:
            # While run A has copied but not deleted: a writer reuses a garbage blob, and run
            # B (taking the lease over, as after an expiry) collects everything.
            write(writer, "reused", other)
            interloper.append(world.collect(break_lease=True))

    with pytest.raises(CollectorBusyError, match="taken over"):
        world.collect(hook=overlap)  # run A notices it lost the lease and stops
    # B found A's run half done and finished its moves (all three blobs, the reused one too:
    # A's phase 2 will restore it); readers find it in quarantine meanwhile.
    assert len(interloper[0].redriven_runs) == 1
    assert not exists(world.objects, main_key(store, other))
    assert read(world.store(), "reused") == other
    world.advance(PAST_GRACE)
    later = world.collect()  # re-drives A, finishes B's phase 2
    world.advance(PAST_GRACE)
    world.collect()
    assert later.redriven_runs or later.finished_runs
    assert read(world.store(), "reused") == other
    assert read(world.store(), "keep")
    assert _keys(world.objects, store.root.gc_key()) == []
    assert not exists(world.objects, main_key(store, data))


# -- f: a crash at every step, then reruns -----------------------------------------------------


class Crash(Exception):
    pass


def _crash_and_rerun(world: World, step: str) -> None:
    writer = world.store()
    reused = os.urandom(MiB)
    write(writer, "reused-later", reused)
    writer.remove(["reused-later"])
    store, data = garbage(world)

    def crash(at: str, run: str) -> None:
        if at == step:
            raise Crash(at)

    if step.startswith("p2"):
        f = writer.open_write("reborn", "reborn")
        f.write(reused)  # proves the garbage blob present, then phase 1 moves it
        f.flush()
        world.collect()
        f.close()  # names a quarantined blob: phase 2 must restore it
        world.advance(PAST_GRACE)
    with pytest.raises(Crash):
        world.collect(hook=crash)
    world.collect(break_lease=True)  # finishes an interrupted phase 2, or re-drives phase 1
    world.advance(PAST_GRACE)
    world.collect()  # phase 2 of a re-driven run
    assert _keys(world.objects, store.root.gc_key()) == [], "a run or copy was left behind"
    assert read(world.store(), "keep")
    if step.startswith("p2"):
        assert read(world.store(), "reborn") == reused
        assert exists(world.objects, main_key(writer, reused))
    for i in range(2):
        assert not exists(world.objects, main_key(store, data, i))


@pytest.mark.parametrize("step", STEPS_P1 + STEPS_P2)
def test_f_collector_crashing_at_each_step_then_rerun(tmp_path: Path, step: str) -> None:
    clock = Clock()
    _crash_and_rerun(World("memory", MemoryObjectStore("bkt", clock=clock), clock, tmp_path, {}), step)


@pytest.mark.parametrize("step", ["p1:copied", "p2:restored"])
def test_f_collector_crashing_then_rerun_on_servers(server_world: World, step: str) -> None:
    """On real servers: the steps that leave the most half-done (every step on memory, above)."""
    _crash_and_rerun(server_world, step)


# -- g: servers that ignore conditions, or cannot copy ----------------------------------------


@pytest.mark.parametrize(
    "quirks",
    [{"honour_if_none_match": False}, {"copy_supported": False}],
    ids=["if-none-match-ignored", "copy-unsupported"],
)
def test_g_quirky_servers(tmp_path: Path, quirks: dict[str, bool]) -> None:
    clock = Clock()
    world = World("memory", MemoryObjectStore("bkt", clock=clock, **quirks), clock, tmp_path, {})
    _, data = garbage(world)
    writer = world.store()
    f = writer.open_write("new", "new")
    f.write(data)
    f.flush()
    assert world.collect().quarantined_blobs == 2
    f.close()
    world.advance(PAST_GRACE)
    assert world.collect().restored_blobs == 2
    assert read(world.store(), "new") == data


def test_g_server_with_a_broken_copy_is_refused(tmp_path: Path) -> None:
    clock = Clock()
    inner = MemoryObjectStore("bkt", clock=clock)

    class TruncatingCopy(HookedObjectStore):
        async def copy(self, source: str, dest: str, *, if_absent: bool = False) -> bool:
            await self.inner.put(dest, b"")  # as S3Mock and s3s once did
            return True

    world = World("memory", inner, clock, tmp_path, {})
    garbage(world)
    with pytest.raises(CollectionRefusedError, match="CopyObject"):
        collect(world.store(TruncatingCopy(inner)), dry_run=False, clock=clock)
    check_b2(inner)
    assert _keys(inner, Root("bkt", ROOT).gc_key("q") + "/") == []


# -- h: copy and mv of an entry whose blobs were just quarantined -------------------------------


def test_h_copy_of_an_entry_whose_blobs_were_just_quarantined(world: World) -> None:
    store, _ = garbage(world)
    data = os.urandom(MiB - 1)  # one chunk
    write(store, "src", data)
    world.advance(PAST_GRACE)

    def remove_and_collect() -> None:
        # Between the copy's read of src and its publish: src is removed and collected.
        store.remove(["src"])
        assert world.collect().quarantined_blobs >= 1

    copier, calls = world.hooked()
    trigger = in_thread(remove_and_collect)
    calls.hook = lambda method, key: trigger(method, key) if method == "head" and "/blobs/" in key else None
    copier.copy("src", "dst")  # W3 HEADs (404), restores from quarantine, publishes
    calls.hook = None
    assert exists(world.objects, main_key(copier, data))
    assert read(world.store(), "dst") == data
    world.advance(PAST_GRACE)
    world.collect()
    assert read(world.store(), "dst") == data


# -- i: format version 1 -------------------------------------------------------------------------


def test_i_version_1_store_is_refused_until_upgraded(world: World) -> None:
    root = Root(world.objects.bucket, ROOT)
    body = Marker(1, "xxh128", MiB, "cas_store 0.1.0").encode()
    world.objects.run("v1", lambda: world.objects.put(root.marker_key(), body))
    store = world.store()
    data = os.urandom(MiB)
    write(store, "old", data)  # version 1 stays writable
    assert store.marker() is not None and store.marker().version == 1  # type: ignore[union-attr]
    with pytest.raises(IncompatibleStoreError, match="cas-store upgrade"):
        collect(store, dry_run=False, clock=world.clock)
    info = upgrade_store(store, GRACE, clock=world.clock)
    assert (info.version, info.created) == (2, True)
    assert read(world.store(), "old") == data
    with pytest.raises(CollectionRefusedError, match="--no-v1-writers"):
        collect(world.store(), dry_run=False, clock=world.clock)
    world.collect(v1_writers_gone=True)
    world.advance(PAST_GRACE)
    world.collect()  # the upgrade is Δ old: no confirmation needed any more
    assert read(world.store(), "old") == data


# -- request counts ----------------------------------------------------------------------------


def test_phase_two_reads_only_new_or_changed_entries(world: World) -> None:
    store, _ = garbage(world)
    for i in range(5):
        write(store, f"f{i}", os.urandom(MiB))
    world.collect()
    write(store, "f0", os.urandom(MiB))  # changed
    write(store, "f9", os.urandom(MiB))  # new
    world.advance(PAST_GRACE)
    collector, calls = world.hooked()  # a fresh local cache: no entry is in its mirror
    marks: dict[str, int] = {}
    world.collect(collector, hook=lambda step, run: marks.setdefault(step, len(calls.calls)))
    manifest = store.root.key("manifest") + "/"
    phase2 = calls.calls[marks["p2:due"] : marks["p2:listed"]]
    read_in_phase2 = sorted(k for m, k in phase2 if m == "get" and k.startswith(manifest))
    assert read_in_phase2 == [store.root.manifest_key("f0"), store.root.manifest_key("f9")]


def test_probes_left_by_a_killed_collector_are_deleted(tmp_path: Path) -> None:
    clock = Clock()
    world = World("memory", MemoryObjectStore("bkt", clock=clock), clock, tmp_path, {})
    store, _ = garbage(world)
    stale = store.root.gc_key("probe-20200101T000000Z-deadbeef")
    world.objects.run("put", lambda: world.objects.put(stale, b"x"))
    world.collect()
    assert not exists(world.objects, stale)
