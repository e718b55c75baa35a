"""A mixed workload through the fsspec API while a share of all requests is broken on the
wire (tests/support/faults.py), on moto.

Promise: every operation succeeds or raises one of cas_store's documented exceptions with a
message that says what to do; afterwards every path holds what was last written
successfully (for a write that raised: its old or its new content, never a mix), and a
deep ``verify`` finds nothing dangling or corrupt. Retries come from botocore's and s3fs's
configuration (StoreConfig.max_attempts), not from the test.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.retries.standard import ExponentialBackoff

from cas_store import CASFileSystem
from cas_store.errors import CASStoreError
from cas_store.maintenance import collect, verify
from tests.integration.conftest import FSFactory
from tests.support.faults import FaultInjector, FaultKind
from tests.support.moto import MotoServer

GRACE = 2.0
PAST_GRACE = GRACE + 1.2
CHUNK = 2**20
OPERATIONS = 200
SHARE = 0.10
#: An operation's failure (after the configured retries) is rare: above this share of
#: operations it is a product fault, not bad luck.
MAX_FAILED_SHARE = 0.05
#: Words by which a message says what to do.
ADVICE = ("retry", "check", "run ", "create", "set ", "fix", "wait", "give ", "use ")
ABSENT = None

#: Connection faults alone (the hardest to retry right), and every kind at once (CI time:
#: each mix is a ~20 s workload; server errors and delays alone are covered by "all").
MIXES: dict[str, tuple[FaultKind, ...]] = {
    "reset+drop": ("reset", "drop"),
    "all": ("500", "503", "reset", "drop", "delay"),
}


@pytest.fixture
def server(moto: MotoServer) -> MotoServer:
    return moto


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's own retry backoff (rand(0, 1) * 2**n s between attempts), scaled by 1/10.

    Which failures are retried and how often stays botocore's and s3fs's decision; only the
    sleeps shrink, so that ~80 faulted requests per workload do not cost ~40 s of sleeping.
    """
    original = ExponentialBackoff.delay_amount

    def scaled(self: ExponentialBackoff, context: Any) -> float:
        return float(original(self, context)) / 10

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", scaled)


Content = bytes | None  # None: the path does not exist


@dataclasses.dataclass
class Tally:
    ok: int = 0
    failed: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    kinds: dict[str, int] = dataclasses.field(default_factory=dict)

    def count(self, op: str) -> None:
        self.kinds[op] = self.kinds.get(op, 0) + 1


def _check_error(op: str, exc: BaseException) -> str:
    """A failure must be one of cas_store's exceptions whose message says what to do."""
    if not isinstance(exc, CASStoreError):
        raise AssertionError(f"{op} leaked {type(exc).__name__}") from exc
    assert isinstance(exc, CASStoreError), f"{op} leaked {type(exc).__module__}.{type(exc).__name__}: {exc!r}"
    message = str(exc)
    assert any(word in message.lower() for word in ADVICE), (
        f"{op}: {type(exc).__name__} says no remedy: {message}"
    )
    return f"{op}: {type(exc).__name__}: {message[:200]}"


class Workload:
    """A seeded random sequence of operations and the model of what each path may hold."""

    def __init__(
        self, fs: CASFileSystem, make_reader: Callable[[], CASFileSystem], root: str, seed: int
    ) -> None:
        self.fs = fs
        self.make_reader = make_reader
        self.reader = make_reader()
        self.root = root
        self.rng = random.Random(seed)
        self.paths = [f"{root}/d{i % 4}/f{i}" for i in range(24)]
        self.model: dict[str, set[Content]] = {p: {ABSENT} for p in self.paths}
        self.written: list[bytes] = []
        self.tally = Tally()
        self.collections: list[Any] = []
        self.phase1_at: float | None = None

    def content(self) -> bytes:
        rng = self.rng
        if self.written and rng.random() < 0.25:  # same content again: deduplicated
            return rng.choice(self.written)
        kind = rng.random()
        if kind < 0.45:
            size = rng.randrange(0, 16 * 2**10)  # inline in the entry
        elif kind < 0.75:
            size = rng.randrange(16 * 2**10, 700 * 2**10)
        else:
            size = rng.randrange(CHUNK + 1, 3 * CHUNK)  # 2 or 3 chunks
        data = rng.randbytes(size)
        self.written.append(data)
        return data

    def step(self, index: int) -> None:
        rng = self.rng
        path = rng.choice(self.paths)
        roll = rng.random()
        if index in (OPERATIONS // 3, 2 * OPERATIONS // 3) or index == OPERATIONS - 1:
            self.collection()
        elif roll < 0.38:
            data = self.content()
            self.attempt("pipe", lambda: self.fs.pipe(path, data), path, data)
        elif roll < 0.55:
            self.cold_read(path)
        elif roll < 0.63:
            self.ranged_read(path)
        elif roll < 0.71:
            self.attempt("info", lambda: self.check_info(path))
        elif roll < 0.78:
            self.attempt("find", self.check_find)
        elif roll < 0.81:
            self.attempt("ls", lambda: self.check_ls(path.rsplit("/", 1)[0]))
        elif roll < 0.90:
            source = rng.choice([p for p in self.paths if ABSENT not in self.model[p]] or [path])
            self.copy(source, path)
        else:
            self.attempt("rm", lambda: self.fs.rm(path), path, ABSENT)

    # -- operations ------------------------------------------------------------------------

    def attempt(self, op: str, fn: Callable[[], Any], path: str | None = None, new: Content = ABSENT) -> bool:
        """Run one operation; for a write of ``path``, update the model from its outcome."""
        self.tally.count(op)
        try:
            fn()
        except FileNotFoundError as exc:
            if op == "rm" and path is not None and not isinstance(exc, CASStoreError):
                self.tally.ok += 1  # rm of a path that is not there; it may have been
                assert ABSENT in self.model[path], f"rm says {path} is absent; model {self._show(path)}"
                self.model[path] = {ABSENT}
                return True
            raise
        except Exception as exc:
            self.tally.failed += 1
            self.tally.errors.append(_check_error(op, exc))
            if path is not None:
                self.model[path] = self.model[path] | {new}  # old or new, never a mix
            return False
        self.tally.ok += 1
        if path is not None:
            self.model[path] = {new}
        return True

    def copy(self, source: str, dest: str) -> None:
        before = set(self.model[source])
        self.tally.count("copy")
        try:
            self.fs.copy(source, dest)
        except FileNotFoundError as exc:
            if isinstance(exc, CASStoreError):
                self.tally.failed += 1
                self.tally.errors.append(_check_error("copy", exc))
                self.model[dest] = self.model[dest] | before
                return
            assert ABSENT in before, f"copy says {source} is absent; model {self._show(source)}"
            self.model[source] = {ABSENT}
            self.tally.ok += 1
            return
        except Exception as exc:
            self.tally.failed += 1
            self.tally.errors.append(_check_error("copy", exc))
            self.model[dest] = self.model[dest] | before
            return
        self.tally.ok += 1
        self.model[dest] = before - {ABSENT}

    def observed(self, path: str, value: Content) -> None:
        """A read saw ``value``: it must be allowed, and it settles an open question."""
        assert value in self.model[path], f"{path} read {self._describe(value)}; model {self._show(path)}"
        self.model[path] = {value}

    def read(self, op: str, fn: Callable[[], bytes]) -> Content | Exception:
        self.tally.count(op)
        try:
            value = fn()
        except FileNotFoundError as exc:
            if isinstance(exc, CASStoreError):
                self.tally.failed += 1
                self.tally.errors.append(_check_error(op, exc))
                return exc
            self.tally.ok += 1
            return ABSENT
        except Exception as exc:
            self.tally.failed += 1
            self.tally.errors.append(_check_error(op, exc))
            return exc
        self.tally.ok += 1
        return value

    def cold_read(self, path: str) -> None:
        self.reader = self.make_reader()  # an empty cache: every byte comes from the server
        value = self.read("cat", lambda: self.reader.cat(path))
        if not isinstance(value, Exception):
            self.observed(path, value)

    def ranged_read(self, path: str) -> None:
        present = [v for v in self.model[path] if v is not None]
        size = len(present[0]) if present else 10
        start = self.rng.randrange(0, max(size, 1))
        end = self.rng.randrange(start, size + 1)
        value = self.read("range", lambda: self.reader.cat_file(path, start, end))
        if isinstance(value, Exception):
            return
        allowed = {None if v is None else v[start:end] for v in self.model[path]}
        assert value in allowed, (
            f"{path}[{start}:{end}] read {self._describe(value)}; model {self._show(path)}"
        )

    def check_info(self, path: str) -> None:
        try:
            size = self.reader.info(path)["size"]
        except FileNotFoundError as exc:
            if isinstance(exc, CASStoreError):
                raise
            assert ABSENT in self.model[path], f"info says {path} is absent; model {self._show(path)}"
            return
        assert size in {len(v) for v in self.model[path] if v is not None}, (path, size, self._show(path))

    def check_find(self) -> None:
        found = {f"s3cas://{p}" for p in self.reader.find(self.root)}
        for path, allowed in self.model.items():
            if ABSENT not in allowed:
                assert path in found, f"find lost {path}; model {self._show(path)}"
            elif allowed == {ABSENT}:
                assert path not in found, f"find lists removed {path}"

    def check_ls(self, directory: str) -> None:
        try:
            listed = {f"s3cas://{p}" for p in self.reader.ls(directory, detail=False)}
        except FileNotFoundError as exc:
            if isinstance(exc, CASStoreError):
                raise
            listed = set()  # a directory exists while files are below it
        for path, allowed in self.model.items():
            if path.rsplit("/", 1)[0] != directory:
                continue
            if ABSENT not in allowed:
                assert path in listed, f"ls lost {path}"
            elif allowed == {ABSENT}:
                assert path not in listed, f"ls lists removed {path}"

    def collection(self) -> None:
        """Collect garbage; the second one is due for phase 2 of the first's run."""
        if self.phase1_at is not None:
            time.sleep(max(0.0, self.phase1_at + PAST_GRACE - time.monotonic()))
        store = self.fs.store()

        def run() -> None:
            self.collections.append(collect(store, dry_run=False, break_lease=True))

        if self.attempt("collect", run) and self.phase1_at is None:
            self.phase1_at = time.monotonic()

    # -- messages --------------------------------------------------------------------------

    @staticmethod
    def _describe(value: Content) -> str:
        return "nothing" if value is None else f"{len(value)} bytes {value[:8].hex()}"

    def _show(self, path: str) -> str:
        return "{" + ", ".join(self._describe(v) for v in self.model[path]) + "}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mix", list(MIXES))
def test_mixed_workload_under_wire_faults(
    moto: MotoServer,
    fast_backoff: None,
    faults: FaultInjector,
    make_fs: FSFactory,
    root: str,
    tmp_path: Path,
    mix: str,
) -> None:
    kinds = MIXES[mix]
    fs = make_fs(chunk_size=CHUNK, gc_grace=GRACE, cache_dir=str(tmp_path / "writer"))
    fs.pipe(f"{root}/seed", b"the store exists before the faults start")
    readers = iter(range(10**6))

    def make_reader() -> CASFileSystem:
        return make_fs(cache_dir=str(tmp_path / f"reader-{next(readers)}"))

    work = Workload(fs, make_reader, root, seed=sum(map(ord, mix)))
    work.model[f"{root}/seed"] = {b"the store exists before the faults start"}
    faults.delay = 0.15
    started = time.monotonic()
    with faults.active(SHARE, kinds, seed=11):
        for index in range(OPERATIONS):
            work.step(index)
    elapsed = time.monotonic() - started
    injected = faults.counts()
    tally = work.tally
    print(
        f"\n{mix}: {OPERATIONS} operations in {elapsed:.1f} s, {tally.failed} raised "
        f"({tally.failed / OPERATIONS:.1%}); faults {dict(injected)}; ops {tally.kinds}"
    )
    for line in tally.errors:
        print("  ", line)
    # ~700 requests, a tenth of them broken: each kind is drawn ~70 / len(kinds) times.
    for kind in kinds:
        assert injected[kind] >= 20 // len(kinds), f"too few {kind} faults injected: {dict(injected)}"
    assert tally.ok + tally.failed == OPERATIONS
    assert tally.failed / OPERATIONS <= MAX_FAILED_SHARE, tally.errors
    assert any(report.freed_blobs for report in work.collections), "no collection reached phase 2"

    # Faults off: every path holds what the model allows, read from an empty cache.
    final = make_reader()
    for path, allowed in work.model.items():
        try:
            value: Content = final.cat(path)
        except FileNotFoundError:
            value = ABSENT
        assert value in allowed, f"{path} holds {work._describe(value)}; model {work._show(path)}"
        work.model[path] = {value}
    expected = {p.removeprefix("s3cas://") for p, allowed in work.model.items() if allowed != {ABSENT}}
    assert set(final.find(root)) == expected
    check = verify(fs.store(), deep=True)
    assert check.ok, check.to_dict()
    assert check.entries == len(expected)


def test_ranged_read_of_an_inline_file(fs: CASFileSystem, root: str) -> None:
    """Found by the workload: a ranged read of a file stored inline in its entry raised
    AttributeError (its reader has no ``size``)."""
    fs.pipe(f"{root}/tiny", b"0123456789")
    assert fs.cat_file(f"{root}/tiny", 2, 5) == b"234"
    assert fs.cat_file(f"{root}/tiny", -3) == b"789"
    fs.pipe(f"{root}/empty", b"")
    assert fs.cat_file(f"{root}/empty", 0, 4) == b""
