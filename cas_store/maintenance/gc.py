"""The collector: frees blobs no entry names, by the two-phase protocol of docs/gc.md.

This is the only code that deletes under ``blobs/`` (tests/unit/test_layering.py checks).
Phase 1 of a run *moves* unreferenced blobs older than G to the run's own quarantine keys;
phase 2, at an invocation at least Δ later, copies back those that entries published
meanwhile name, then deletes the run's quarantine copies. Writers (rule W) and readers
(rule R) make this safe without locks; the argument is docs/gc.md section 7.

Every step is idempotent and a run is re-driven from what it wrote (docs/gc.md 6.3), so a
collector killed anywhere is finished by the next invocation. The lease (``gc/lease``) only
avoids duplicate work; safety never rests on it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from cas_store.backend.base import ObjectInfo, gather_limited, list_all
from cas_store.errors import (
    CASStoreError,
    CollectionRefusedError,
    CollectorBusyError,
    IncompatibleStoreError,
)
from cas_store.layout import BLOBS_DIR
from cas_store.maintenance._common import Progress, iter_records, require_store
from cas_store.safety import GCDurations
from cas_store.store import Store

log = logging.getLogger(__name__)

#: Blobs per intent log (and per DeleteObjects request).
BATCH = 1000
#: Lease time-to-live: long enough for a slow step, short enough that a crashed collector
#: blocks the next one briefly (and never more than Δ, so a test store is not held up).
MAX_LEASE_TTL = 3600.0

STATE = "state.json"
L1 = "l1.jsonl"
PHASE2 = "phase2"

#: ``hook(step, run)`` is called after each step (tests crash or interleave there).
#: Steps: ``p1:started`` (T1 stamped), ``p1:listed`` (blobs listed), ``p1:marked`` (R1
#: and L1 read), ``p1:logged`` / ``p1:copied`` / ``p1:moved`` (per batch: intent log
#: written, copies made, main keys deleted), ``p1:quarantined`` (T1e stamped); ``p2:due``
#: (T2 stamped and Δ passed), ``p2:listed`` (R2' read), ``p2:restored``, ``p2:purged``,
#: ``p2:done``.
Hook = Callable[[str, str], None]


@dataclass
class RunStatus:
    """A collector run waiting for its phase 2."""

    run: str
    phase: str
    blobs: int
    bytes: int
    #: When phase 2 may free them (the collector's clock, seconds since the epoch).
    due_at: float | None


@dataclass
class GCReport:
    """What an invocation of the collector did (or, dry, would do). Sizes in bytes."""

    root: str
    dry_run: bool
    #: Unreferenced blobs older than G: what phase 1 quarantines (dry: would quarantine).
    candidates: int = 0
    candidate_bytes: int = 0
    #: Blobs moved to quarantine by this invocation (phase 1, and re-driven runs).
    quarantined_blobs: int = 0
    quarantined_bytes: int = 0
    #: Quarantine copies copied back because an entry published since names them.
    restored_blobs: int = 0
    #: Quarantine copies deleted (dry: due for deletion) and the bytes that frees.
    freed_blobs: int = 0
    freed_bytes: int = 0
    #: Bytes still held in quarantine after this invocation, and runs not due yet.
    quarantine_bytes: int = 0
    pending: list[RunStatus] = field(default_factory=list)
    #: Runs finished, re-driven or abandoned by this invocation.
    finished_runs: list[str] = field(default_factory=list)
    redriven_runs: list[str] = field(default_factory=list)
    #: The run this invocation started (None for a dry run).
    run: str | None = None
    #: Blobs an entry names that are in neither place (should never happen: run verify).
    lost: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def reclaimable_bytes(self) -> int:
        """What a collection frees: the due quarantine now, the candidates one Δ later."""
        return self.candidate_bytes + self.freed_bytes

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reclaimable_bytes": self.reclaimable_bytes}


@dataclass(frozen=True)
class _Blob:
    key: str
    algorithm: str
    digest: str
    size: int


def collect(
    store: Store,
    *,
    dry_run: bool = True,
    clock: Callable[[], float] = time.time,
    hook: Hook | None = None,
    progress: Progress | None = None,
    break_lease: bool = False,
    v1_writers_gone: bool = False,
    batch_size: int = BATCH,
) -> GCReport:
    """Collect garbage in ``store``: re-drive unfinished runs, finish the runs that are due
    (phase 2), then start a new run (phase 1). ``dry_run`` (the default) writes nothing
    and reports what would be quarantined and freed.

    Raises :class:`IncompatibleStoreError` for a version 1 store (run ``cas-store upgrade``),
    :class:`CollectorBusyError` when another collector holds the lease (``break_lease``
    takes a lease that looks stale), and :class:`CollectionRefusedError` within Δ of an
    upgrade unless ``v1_writers_gone`` confirms that no version 1 process has the store open.
    """
    return _Collector(store, clock, hook, progress, batch_size).invoke(dry_run, break_lease, v1_writers_gone)


class _Collector:
    def __init__(
        self,
        store: Store,
        clock: Callable[[], float],
        hook: Hook | None,
        progress: Progress | None,
        batch_size: int,
    ) -> None:
        require_store(store)
        marker = store.marker()
        assert marker is not None
        if marker.gc is None:
            raise IncompatibleStoreError(
                f"the store {store.root.uri} uses bucket format version {marker.version}, whose "
                "writers do not follow the collection protocol: run `cas-store upgrade "
                f"{store.root.uri}` first (and let processes that have it open exit)"
            )
        self.store = store
        self.marker = marker
        self.gc: GCDurations = marker.gc
        self.objects = store.objects
        self.root = store.root
        self.clock = clock
        self.hook = hook or (lambda step, run: None)
        self.progress = progress
        self.batch_size = batch_size
        self.lease_etag: str | None = None
        #: This invocation's run id (also its lease's, and its probe keys').
        self.lease_run = _new_run_id(clock())
        #: False if the self-test found ETags that do not change with the body.
        self.etags_follow_bodies = True

    # -- small helpers ---------------------------------------------------------------------

    def _run(self, what: str, fn: Callable[[], Any]) -> Any:
        return self.objects.run(what, fn)

    def _runs_prefix(self) -> str:
        return self.root.gc_key("runs") + "/"

    def _run_key(self, run: str, name: str) -> str:
        return self.root.gc_key("runs", run, name)

    def _stamp(self, key: str, doc: dict[str, Any]) -> dt.datetime:
        """PUT ``doc`` at ``key``; the server's LastModified of it (a server-side time)."""
        body = json.dumps(doc, sort_keys=True).encode()

        async def put_and_head() -> dt.datetime:
            await self.objects.put(key, body, content_type="application/json")
            info = await self.objects.head(key)
            if info is None:
                raise CASStoreError(f"s3://{self.root.bucket}/{key} vanished right after it was written")
            return info.modified

        return self._run(f"writing s3://{self.root.bucket}/{key}", put_and_head)  # type: ignore[no-any-return]

    def _get_json(self, key: str) -> tuple[Any, ObjectInfo] | None:
        found = self._run(f"reading s3://{self.root.bucket}/{key}", lambda: self.objects.get(key))
        if found is None:
            return None
        return json.loads(found[0]), found[1]

    def _get_lines(self, key: str) -> list[Any] | None:
        found = self._run(f"reading s3://{self.root.bucket}/{key}", lambda: self.objects.get(key))
        if found is None:
            return None
        return [json.loads(line) for line in found[0].splitlines() if line.strip()]

    def _put_lines(self, key: str, rows: Iterable[Any]) -> None:
        body = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
        self._run(
            f"writing s3://{self.root.bucket}/{key}",
            lambda: self.objects.put(key, body, content_type="application/x-ndjson"),
        )

    def _delete(self, keys: list[str]) -> None:
        if keys:
            self._run(f"deleting {len(keys)} objects", lambda: self.objects.delete_many(keys))

    def _list(self, prefix: str) -> list[ObjectInfo]:
        async def listing() -> list[ObjectInfo]:
            return [o for page in await list_all(self.objects, prefix) for o in page.objects]

        return self._run(f"listing s3://{self.root.bucket}/{prefix}", listing)  # type: ignore[no-any-return]

    def _note(self, phase: str, done: int, total: int | None) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    def _quarantine_key(self, blob: _Blob, run: str) -> str:
        return self.root.quarantine_key(blob.algorithm, blob.digest, run)

    def _parse_blob(self, info: ObjectInfo) -> _Blob | None:
        """The blob a key under ``blobs/`` holds; None for a stray object (never touched)."""
        base = self.root.key(BLOBS_DIR) + "/"
        parts = info.key[len(base) :].split("/")
        if len(parts) != 4 or not info.key.startswith(base):
            return None
        algorithm, d01, d23, digest = parts
        if self.root.blob_key(algorithm, digest) != info.key or (d01, d23) != (digest[:2], digest[2:4]):
            return None
        return _Blob(info.key, algorithm, digest, info.size)

    # -- the invocation --------------------------------------------------------------------

    def invoke(self, dry_run: bool, break_lease: bool, v1_writers_gone: bool) -> GCReport:
        report = GCReport(self.root.uri, dry_run)
        if not dry_run:
            self._acquire_lease(break_lease)
        try:
            if not dry_run:
                self._self_test()
                self._delete_stale_probes()
            copies = self._list(self.root.gc_key("q") + "/")  # before the runs (orphans, below)
            runs = self._runs()
            self._orphans(copies, runs, report, dry_run)
            for run in sorted(runs):
                self._drive(run, runs[run], report, dry_run)
            self._phase1(report, dry_run, v1_writers_gone)
            remaining = self._list(self.root.gc_key("q") + "/") if not dry_run else copies
            report.quarantine_bytes = sum(c.size for c in remaining)
        finally:
            if not dry_run:
                self._release_lease()
        return report

    def _runs(self) -> dict[str, dict[str, ObjectInfo]]:
        """Every run with objects under ``gc/runs/``: run -> {name: object}."""
        runs: dict[str, dict[str, ObjectInfo]] = {}
        prefix = self._runs_prefix()
        for info in self._list(prefix):
            run, _, name = info.key[len(prefix) :].partition("/")
            if name:
                runs.setdefault(run, {})[name] = info
        return runs

    # -- lease (advisory) ------------------------------------------------------------------

    def _lease_doc(self) -> bytes:
        now = self.clock()
        ttl = min(MAX_LEASE_TTL, self.gc.delta)
        doc = {"run": self.lease_run, "wall": now, "expires": now + ttl, "host": socket.gethostname()}
        doc["pid"] = os.getpid()
        return json.dumps(doc, sort_keys=True).encode()

    def _acquire_lease(self, break_lease: bool) -> None:
        key = self.root.gc_key("lease")
        result = self._run(
            "taking the collector's lease", lambda: self.objects.put(key, self._lease_doc(), if_absent=True)
        )
        if result.created and self.objects.capabilities.conditional_create:
            self.lease_etag = result.etag
            return
        held = self._get_json(key)
        if held is not None and held[0].get("run") != self.lease_run:
            doc = held[0]
            expired = float(doc.get("expires", 0)) < self.clock()
            if not (expired or break_lease):
                until = dt.datetime.fromtimestamp(float(doc.get("expires", 0)), dt.UTC)
                raise CollectorBusyError(
                    f"another collector (run {doc.get('run')}, host {doc.get('host')}, pid {doc.get('pid')}) "
                    f"holds s3://{self.root.bucket}/{key} until {until:%Y-%m-%d %H:%M:%S} UTC: "
                    "wait for it, or pass --break-lease if it crashed (a second collector is safe, "
                    "only wasteful)"
                )
            log.warning("taking over the collector's lease from run %s", doc.get("run"))
            result = self._run("taking over the lease", lambda: self.objects.put(key, self._lease_doc()))
        self.lease_etag = result.etag

    def _step(self, step: str, run: str) -> None:
        """After each step: the test hook, then the lease (refreshed; lost means stop)."""
        self.hook(step, run)
        self._refresh_lease()

    def _refresh_lease(self) -> None:
        """Keep the lease; if another collector took it over (ours expired), stop: it re-drives
        this run, and two collectors moving one run's blobs would stamp T1e too early."""
        if self.lease_etag is None:
            return
        key = self.root.gc_key("lease")
        held = self._get_json(key)
        if held is None or held[0].get("run") != self.lease_run:
            self.lease_etag = None
            raise CollectorBusyError(
                f"this collector's lease s3://{self.root.bucket}/{key} was taken over by another "
                "collector (ours had expired): stopped; the other one finishes this run"
            )
        result = self._run("refreshing the lease", lambda: self.objects.put(key, self._lease_doc()))
        self.lease_etag = result.etag

    def _release_lease(self) -> None:
        key = self.root.gc_key("lease")
        try:
            held = self._get_json(key)
            if held is not None and held[0].get("run") == self.lease_run:
                self._delete([key])
        except CASStoreError as exc:  # it expires anyway
            log.warning("could not release the collector's lease: %s", exc)

    # -- what entries name -----------------------------------------------------------------

    def _mark(self, only: Callable[[str, str], bool] | None = None) -> tuple[set[str], dict[str, str]]:
        """(blob keys named by entries, {entry path: ETag of the entry as read}).

        Lists the manifest (after the caller's stamp returned) and reads the entries that
        ``only(rel, etag)`` selects (all by default), from the mirror where its ETag is
        current. An entry that cannot be decoded stops the collection: what it names is unknown.
        """
        listed = self.store.manifest.list_tree("")
        chosen = listed if only is None else [i for i in listed if only(i.rel, i.etag)]
        unreadable: dict[str, str] = {}
        named: set[str] = set()
        seen: dict[str, str] = {}
        for record in iter_records(
            self.store, chosen, lambda rel, exc: unreadable.__setitem__(rel, str(exc)), self.progress
        ):
            seen[record.rel] = record.etag
            for chunk in record.entry.chunks:
                named.add(self.root.blob_key(record.entry.algorithm, chunk.digest))
        if unreadable:
            first = next(iter(unreadable.items()))
            raise CollectionRefusedError(
                f"{len(unreadable)} manifest entries of {self.root.uri} cannot be read (e.g. {first[0]}: "
                f"{first[1]}), so what they name is unknown and nothing can be collected safely: fix "
                "or remove them (cas-store verify lists them)"
            )
        return named, seen

    # -- phase 1 ---------------------------------------------------------------------------

    def _phase1(self, report: GCReport, dry_run: bool, v1_writers_gone: bool) -> None:
        upgraded = self.marker.upgraded_at
        if upgraded is not None and self.clock() - upgraded < self.gc.delta and not v1_writers_gone:
            message = (
                f"{self.root.uri} was upgraded to format 2 less than gc_grace "
                f"({self.gc.delta:g} s) ago; a process that opened it under format 1 would not "
                "follow the collection protocol. Once every such process has exited, confirm with "
                "--no-v1-writers"
            )
            if dry_run:
                report.warnings.append(message)
            else:
                raise CollectionRefusedError(message)
        run = self.lease_run
        if dry_run:
            t1 = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        else:
            t1 = self._stamp(self._run_key(run, STATE), {"phase": "marking", "wall": self.clock()})
            report.run = run
            self._step("p1:started", run)
        cutoff = t1 - dt.timedelta(seconds=self.gc.min_age)
        blobs = self._list_blobs()
        if not dry_run:
            self._step("p1:listed", run)
        named, l1 = self._mark()
        if not dry_run:
            self._step("p1:marked", run)
        candidates = [b for b, modified in blobs if b.key not in named and modified < cutoff]
        report.candidates = len(candidates)
        report.candidate_bytes = sum(b.size for b in candidates)
        if dry_run:
            return
        if not candidates:  # nothing to move: the run leaves nothing behind
            self._delete([self._run_key(run, STATE)])
            report.run = None
            return
        self._put_lines(
            self._run_key(run, L1), ({"rel": rel, "etag": etag} for rel, etag in sorted(l1.items()))
        )
        moved = self._move(run, candidates, report)
        wall = self.clock()
        self._stamp(self._run_key(run, STATE), {"phase": "quarantined", "wall": wall})
        report.pending.append(
            RunStatus(run, "quarantined", moved, report.quarantined_bytes, wall + self.gc.delta)
        )
        self._step("p1:quarantined", run)
        log.info("run %s quarantined %d blobs (%d bytes)", run, moved, report.quarantined_bytes)

    def _list_blobs(self) -> list[tuple[_Blob, dt.datetime]]:
        """Every blob, listed in parallel over the first hex digit of each algorithm's fan-out."""
        base = self.root.key(BLOBS_DIR) + "/"
        top = self._run(
            f"listing s3://{self.root.bucket}/{base}", lambda: self.objects.list_page(base, delimiter="/")
        )
        prefixes = [p + h for p in top.prefixes for h in "0123456789abcdef"]

        async def one(prefix: str) -> list[ObjectInfo]:
            return [o for page in await list_all(self.objects, prefix) for o in page.objects]

        listed = self._run(
            f"listing the blobs of {self.root.uri}",
            lambda: gather_limited(max(8, self.store.config.max_concurrency), [one(p) for p in prefixes]),
        )
        found: list[tuple[_Blob, dt.datetime]] = []
        for infos in listed:
            for info in infos:
                blob = self._parse_blob(info)
                if blob is not None:
                    found.append((blob, info.modified))
        self._note("listing blobs", len(found), len(found))
        return found

    def _move(self, run: str, blobs: list[_Blob], report: GCReport) -> int:
        """Step 5: per batch, log the intent, copy to the run's quarantine keys, delete the main keys."""
        moved = 0
        for n, start in enumerate(range(0, len(blobs), self.batch_size)):
            batch = blobs[start : start + self.batch_size]
            self._put_lines(self._run_key(run, f"q-{n}.jsonl"), (_row(b) for b in batch))
            self._step("p1:logged", run)
            moved += self._move_logged(run, batch, report)
            self._note("quarantining", start + len(batch), len(blobs))
        return moved

    def _move_logged(self, run: str, batch: list[_Blob], report: GCReport) -> int:
        """Copy each logged blob to quarantine (unless copied already), check, delete its main key."""

        async def copy(blob: _Blob) -> bool:
            # The run's key is new (a re-drive passes only blobs it found uncopied): no HEAD first.
            dest = self._quarantine_key(blob, run)
            if not await self.objects.copy(blob.key, dest):
                return False  # gone already (another run moved it): nothing to do
            existing = await self.objects.head(dest)
            if existing is None or existing.size != blob.size:
                raise CASStoreError(
                    f"the quarantine copy s3://{self.root.bucket}/{dest} is not the {blob.size} bytes of "
                    f"{blob.key}: the server's CopyObject is unreliable; nothing was deleted"
                )
            return True

        copied = self._run(
            f"quarantining {len(batch)} blobs",
            lambda: gather_limited(max(8, self.store.config.max_concurrency), [copy(b) for b in batch]),
        )
        self._step("p1:copied", run)
        done = [b for b, ok in zip(batch, copied, strict=True) if ok]
        self._delete([b.key for b in done])
        self._step("p1:moved", run)
        report.quarantined_blobs += len(done)
        report.quarantined_bytes += sum(b.size for b in done)
        return len(done)

    def _self_test(self) -> None:
        """Probe the server once per invocation: CopyObject must copy the bytes, and a changed
        body must change the ETag (else phase 2 reads every entry). docs/gc.md section 9."""
        run = self.lease_run
        a, b = self.root.gc_key(f"probe-{run}"), self.root.gc_key(f"probe-{run}-copy")
        first, second = (
            b"cas_store probe 1 " + secrets.token_bytes(8),
            b"cas_store probe 2 " + secrets.token_bytes(8),
        )

        async def probe() -> tuple[str, str, bytes | None]:
            one = await self.objects.put(a, first)
            two = await self.objects.put(a, second)
            await self.objects.copy(a, b)
            got = await self.objects.get(b)
            return one.etag, two.etag, None if got is None else got[0]

        try:
            etag1, etag2, copied = self._run("testing the server's CopyObject", probe)
        finally:
            self._delete([a, b])
        if copied != second:
            raise CollectionRefusedError(
                f"S3 ({self.objects.endpoint}) copied an object wrongly ({len(copied or b'')} of "
                f"{len(second)} bytes): the collector moves blobs by CopyObject and cannot run "
                "safely on this server"
            )
        self.etags_follow_bodies = etag1 != etag2

    def _delete_stale_probes(self) -> None:
        """Probe objects of collectors killed during their self-test (other runs' only)."""
        stale = [o.key for o in self._list(self.root.gc_key("probe-")) if self.lease_run not in o.key]
        self._delete(stale)

    # -- phase 2 and re-drives ---------------------------------------------------------------

    def _drive(
        self,
        run: str,
        objects: dict[str, ObjectInfo],
        report: GCReport,
        dry_run: bool,
    ) -> None:
        state = self._get_json(self._run_key(run, STATE)) if STATE in objects else None
        phase = state[0].get("phase") if state is not None else None
        logs = sorted((n for n in objects if n.startswith("q-")), key=lambda n: int(n[2:].split(".")[0]))
        if phase == "done":
            if not dry_run:
                self._finish(run, objects)
                report.finished_runs.append(run)
            return
        if phase == "quarantined" and state is not None:
            self._phase2(run, objects, logs, state[0], state[1].modified, report, dry_run)
            return
        if not logs:  # crashed (or abandoned) before moving anything
            if not dry_run:
                self._delete([self._run_key(run, n) for n in objects])
                report.finished_runs.append(run)
            return
        # Crashed in step 5 (or its state was lost): finish the moves, then take T1e anew.
        blobs = [b for name in logs for b in self._logged(run, name)]
        if dry_run:
            report.pending.append(RunStatus(run, "marking", len(blobs), sum(b.size for b in blobs), None))
            return
        for start in range(0, len(blobs), self.batch_size):
            self._redrive_batch(run, blobs[start : start + self.batch_size], report)
        wall = self.clock()
        self._stamp(self._run_key(run, STATE), {"phase": "quarantined", "wall": wall})
        report.redriven_runs.append(run)
        report.pending.append(
            RunStatus(run, "quarantined", len(blobs), sum(b.size for b in blobs), wall + self.gc.delta)
        )
        self._step("p1:quarantined", run)

    def _redrive_batch(self, run: str, batch: list[_Blob], report: GCReport) -> None:
        async def present(blob: _Blob) -> tuple[bool, bool]:
            copy = await self.objects.head(self._quarantine_key(blob, run))
            main = await self.objects.head(blob.key)
            return copy is not None, main is not None

        states = self._run(
            "checking a crashed run's moves", lambda: gather_limited(8, [present(b) for b in batch])
        )
        copied = [b for b, (c, m) in zip(batch, states, strict=True) if c and m]
        uncopied = [b for b, (c, m) in zip(batch, states, strict=True) if not c and m]
        self._delete([b.key for b in copied])
        if uncopied:
            self._move_logged(run, uncopied, report)

    def _logged(self, run: str, name: str) -> list[_Blob]:
        rows = self._get_lines(self._run_key(run, name)) or []
        return [
            _Blob(
                self.root.blob_key(r["algorithm"], r["digest"]), r["algorithm"], r["digest"], int(r["size"])
            )
            for r in rows
        ]

    def _phase2(
        self,
        run: str,
        objects: dict[str, ObjectInfo],
        logs: list[str],
        state: dict[str, Any],
        t1e: dt.datetime,
        report: GCReport,
        dry_run: bool,
    ) -> None:
        blobs = [b for name in logs for b in self._logged(run, name)]
        wall = float(state.get("wall", 0))
        due_at = wall + self.gc.delta
        if dry_run:
            if self.clock() >= due_at:  # the server's clock is asked only by acting
                named, _ = self._mark(self._changed_since(run))
                freed = [b for b in blobs if b.key not in named]
                report.freed_blobs += len(freed)
                report.freed_bytes += sum(b.size for b in freed)
            else:
                report.pending.append(
                    RunStatus(run, "quarantined", len(blobs), sum(b.size for b in blobs), due_at)
                )
            return
        t2 = self._stamp(self._run_key(run, PHASE2), {"wall": self.clock()})
        if (t2 - t1e).total_seconds() < self.gc.delta or self.clock() < due_at:
            report.pending.append(
                RunStatus(run, "quarantined", len(blobs), sum(b.size for b in blobs), due_at)
            )
            return
        self._step("p2:due", run)
        named, _ = self._mark(self._changed_since(run))
        self._step("p2:listed", run)
        wanted = [b for b in blobs if b.key in named]
        outcomes = self._run(
            f"restoring the blobs of run {run} that entries name",
            lambda: gather_limited(8, [self._restore(b, run) for b in wanted]),
        )
        for blob, outcome in zip(wanted, outcomes, strict=True):
            if outcome == "restored":
                report.restored_blobs += 1
            elif outcome == "missing" and self.store.blobs.restore(blob.algorithm, blob.digest) is None:
                report.lost.append(blob.key)
                log.error("blob %s is named by an entry and in neither place: run cas-store verify", blob.key)
        self._step("p2:restored", run)
        purge = [self._quarantine_key(b, run) for b in blobs]
        for start in range(0, len(purge), BATCH):
            self._delete(purge[start : start + BATCH])
            self._note("purging", min(start + BATCH, len(purge)), len(purge))
        freed = [b for b in blobs if b.key not in named]
        report.freed_blobs += len(freed)
        report.freed_bytes += sum(b.size for b in freed)
        self._step("p2:purged", run)
        self._stamp(self._run_key(run, STATE), {"phase": "done", "wall": self.clock()})
        self._finish(run, self._runs().get(run, objects))
        report.finished_runs.append(run)
        self._step("p2:done", run)

    async def _restore(self, blob: _Blob, run: str) -> str:
        """Phase 2, step 3 for one named blob: ``present``, ``restored`` or ``missing``."""
        if await self.objects.head(blob.key) is not None:
            return "present"
        # Unconditional: a writer that re-uploaded it since the HEAD wrote the same bytes.
        if await self.objects.copy(self._quarantine_key(blob, run), blob.key):
            return "restored"
        return "missing"

    def _changed_since(self, run: str) -> Callable[[str, str], bool] | None:
        """Phase 2 reads the entries that are new or changed since the run's L1 (R2'): a
        filter for :meth:`_mark`; None (read every entry) without L1, or on a server whose
        ETags do not follow the body."""
        snapshot = self._get_lines(self._run_key(run, L1))
        if snapshot is None or not self.etags_follow_bodies:
            return None
        l1 = {r["rel"]: r["etag"] for r in snapshot}
        return lambda rel, etag: l1.get(rel) != etag

    def _finish(self, run: str, objects: dict[str, ObjectInfo]) -> None:
        """Step 4: delete the run's logs, L1 and phase-2 marker, then its state."""
        names = [n for n in objects if n != STATE]
        self._delete([self._run_key(run, n) for n in names])
        self._delete([self._run_key(run, STATE)])

    def _orphans(
        self,
        copies: list[ObjectInfo],
        runs: dict[str, dict[str, ObjectInfo]],
        report: GCReport,
        dry_run: bool,
    ) -> None:
        """Quarantine copies of no run (logs deleted by hand, say): copy back if the main key
        is missing, then delete. Listed before the runs, so a live run's copies have a run."""
        orphans = []
        for info in copies:
            parsed = self.root.parse_quarantine_key(info.key)
            if parsed is not None and parsed[2] not in runs:
                algorithm, digest, _ = parsed
                blob = _Blob(self.root.blob_key(algorithm, digest), algorithm, digest, info.size)
                orphans.append((blob, info.key))
        if not orphans or dry_run:
            return

        async def restore(blob: _Blob, key: str) -> bool:
            if await self.objects.head(blob.key) is not None:
                return False
            return await self.objects.copy(key, blob.key)  # identical bytes if raced

        restored = self._run(
            "restoring orphaned quarantine copies",
            lambda: gather_limited(8, [restore(b, k) for b, k in orphans]),
        )
        report.restored_blobs += sum(restored)
        self._delete([key for _, key in orphans])
        report.warnings.append(
            f"{len(orphans)} quarantine copies belonged to no run: restored where missing, deleted"
        )


def _row(blob: _Blob) -> dict[str, Any]:
    return {"algorithm": blob.algorithm, "digest": blob.digest, "size": blob.size}


def _new_run_id(now: float) -> str:
    """``20261201T221500Z-1a2b3c4d``: sorts by start time; random so that runs never share keys."""
    return f"{dt.datetime.fromtimestamp(now, dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
