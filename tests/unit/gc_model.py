"""A model of the lock-free garbage-collection protocol of ``docs/gc.md``, and its checker.

Pure Python, deterministic, no I/O, no threads. A :class:`World` holds a strongly
consistent bucket (blob main keys, quarantine keys per run, manifest entries) and the local
state of every actor: writers with a memo of proof times (rule W), readers (rule R), a
deleter of entries, and collector runs (phases 1 and 2). Each actor is a step function: it
offers its possible next atomic steps (``World.moves``), and ``World.apply`` performs one.
Time is an integer clock that only the ``tick`` step advances, so any actor may stall for any
number of ticks between two of its steps, and steps within one tick still come one after
another (as requests sent in the same second do). A scheduler picks the steps: seeded at
random (:func:`run_random`) or all of them, depth first over distinct states
(:func:`explore`).

After every step the checker tests the safety property B2 (docs/design.md): every blob named
by a currently published entry is at its main key or in some quarantine key. A reader that
follows rule R and gives up on a blob while the entry it read is still the published one is a
violation too.

Every timestamp is kept as an age (ticks since), capped at the first value beyond which the
comparisons the protocol makes with it no longer change (a memo row too old to be trusted is
dropped). Nothing compares two timestamps directly (the collector's age test of step 4 is
decided when T1 is taken, see ``RunState.fresh``), so the caps lose nothing, and states that
differ only in how long ago something saturated are one state: that is what lets
:func:`explore` cover unbounded time.

:class:`Protocol` holds the durations and one switch per rule; its defaults are the protocol,
and :func:`weakened` gives the variants that must each lose data.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

Digest = str
Path = str
Content = tuple[Digest, ...]
Ages = tuple[tuple[Digest, int], ...]  # sorted (digest, age) pairs
Label = tuple[str | int, ...]
Move = tuple[int, Label]  # (actor index, step label); actor -1 is the clock
Step = tuple[int, str, Label]  # (clock, actor name, label), for traces

CLOCK = -1


@dataclass(frozen=True)
class Protocol:
    """Durations in ticks and the rules, as switches; the defaults are the protocol of docs/gc.md."""

    validity: int = 4  # V: how old a proof may be when its entry is published
    publish: int = 1  # P: an entry PUT lands within P of the writer's final check
    delta: int = 4  # Δ between a run's two phases; Δ = V is the boundary of the proof
    min_age: int = 0  # G: 0 makes every unreferenced blob a candidate (G is efficiency only)
    memo_ttl: int = 6  # longer than V, so that W2's bound is min(ttl, V) = V
    reader_rounds: int = 2  # rule R: rounds of (LIST quarantine, GET copies, GET main key) after a 404
    # the rules; each False (or True for the last two) weakens the protocol
    memo_bounded_by_validity: bool = True  # W2's min(ttl, V) (False: the memo is trusted for its ttl)
    recheck_at_close: bool = True  # W3
    publish_deadline: bool = True  # W4
    quarantine: bool = True  # False: one-phase delete, no phase 2
    delta_after_t1e: bool = True  # False: Δ is measured from T1, the start of phase 1
    per_run_quarantine: bool = True  # False: one quarantine key shared by every run
    snapshot_read_etag: bool = True  # L1 keeps the ETag of the entry read (False: the ETag listed)
    restore: bool = True  # phase 2 restores newly referenced quarantined blobs before purging
    reader_quarantine: bool = True  # rule R looks in quarantine
    memo_stamped_at_use: bool = False  # breaks W1: a memo row takes the time of its last use
    touch: bool = False  # writers refresh a reused blob's LastModified (self-copy), bazel-remote style

    @property
    def trust(self) -> int:
        """W2: a memo row proves its blob while its age is below this."""
        return min(self.memo_ttl, self.validity) if self.memo_bounded_by_validity else self.memo_ttl


class Op(NamedTuple):
    """A writer's operation: write ``content`` to ``dst``, or copy the entry at ``src`` to ``dst``."""

    kind: str  # "write" | "copy"
    dst: Path
    content: Content = ()
    src: Path = ""


@dataclass(frozen=True)
class Scenario:
    """What exists at time 0, which actors run, and how much each may do."""

    contents: tuple[Content, ...] = (("a",), ("b",), ("b", "c"))
    paths: tuple[Path, ...] = ("p", "q", "r")
    blobs: tuple[Digest, ...] = ("a", "b", "c")  # at their main keys at time 0, long ago modified
    entries: tuple[tuple[Path, Content], ...] = (("p", ("a",)),)  # published at time 0
    memo: tuple[Digest, ...] = ("a", "b", "c")  # every writer's memo holds proofs sent at time 0
    writers: int = 2
    writer_ops: int = 2
    scripts: tuple[tuple[Op, ...], ...] | None = None  # fixed operations per writer, else free choice
    copies: bool = True  # writers may copy entries (publishing blobs they hold no bytes of)
    deleters: int = 1
    deletes: int = 2
    readers: int = 1
    reads: int = 2
    runs: int = 2
    crashes: int = 0  # times each run may crash and be re-driven from what it PUT
    horizon: int | None = 24  # the clock stops here; None: never (explore() needs None)


class WriterState(NamedTuple):
    ops_left: int
    memo: Ages  # digest -> age of the proof: the time its request was sent (W1)
    pc: str = "idle"  # idle | prove | check | put
    op: Op | None = None
    content: Content = ()
    todo: tuple[Digest, ...] = ()  # distinct blobs still to prove
    proofs: Ages = ()  # v(B), as an age, for the blobs of the entry being written
    since_check: int = 0  # age of the W3 check (in pc "put")


class DeleterState(NamedTuple):
    deletes_left: int


class ReaderState(NamedTuple):
    reads_left: int
    pc: str = "idle"  # idle | main | qlist | qget | retry
    path: Path = ""
    content: Content = ()
    chunk: int = 0  # the chunk being read
    copies: tuple[str, ...] = ()  # quarantine copies listed and not yet tried
    rounds_left: int = 0
    stable: bool = True  # the entry read is still the one published at its path


class RunState(NamedTuple):
    key: str  # the run's quarantine key suffix
    crashes_left: int = 0
    pc: str = "idle"
    fresh: frozenset[Digest] = frozenset()  # from T1 to the blob listing: blobs older than T1 - G
    since_t1: int = 0  # age of T1 (kept only where Δ is measured from T1)
    since_t1e: int = 0  # age of T1e (kept while waiting for phase 2)
    listed: tuple[Digest, ...] = ()  # blobs listed in step 2 and older than T1 - G
    todo: tuple[Path, ...] = ()  # entries still to read
    marked: frozenset[Digest] = frozenset()  # R1 in phase 1, R2' in phase 2
    snapshot: tuple[tuple[Path, Content], ...] = ()  # L1: path -> ETag (a function of the content); PUT
    log: tuple[Digest, ...] = ()  # the intent log: the candidates, PUT before the first is copied
    queue: tuple[Digest, ...] = ()  # digests the current step still has to process
    moved: tuple[Digest, ...] = ()  # digests this run made (or found) a quarantine copy of


Local = WriterState | DeleterState | ReaderState | RunState


class _Caps(NamedTuple):
    modified: int  # a blob's LastModified is compared with T1 - G
    proof: int  # a proof with V - P
    check: int  # the W3 check with P
    since: int  # T1e (or T1) with Δ


def _age(pairs: Ages, key: Digest) -> int | None:
    for k, v in pairs:
        if k == key:
            return v
    return None


def _set(pairs: Ages, key: Digest, age: int | None) -> Ages:
    rest = [(k, v) for k, v in pairs if k != key]
    if age is not None:
        rest.append((key, age))
    return tuple(sorted(rest))


def _older(pairs: Ages, cap: int) -> Ages:
    return tuple((k, v + 1 if v < cap else v) for k, v in pairs)


def _older_memo(pairs: Ages, trust: int) -> Ages:
    """A tick for the memo: rows too old to be trusted are as good as absent, so they go."""
    return tuple((k, v + 1) for k, v in pairs if v + 1 < trust)


class World:
    """The bucket, the clock and every actor's local state; ``key()`` identifies the state."""

    __slots__ = (
        "caps",
        "clock",
        "events",
        "kinds",
        "locals",
        "main",
        "manifest",
        "protocol",
        "quarantine",
        "scenario",
        "violation",
    )

    def __init__(self, protocol: Protocol, scenario: Scenario) -> None:
        self.protocol = protocol
        self.scenario = scenario
        p = protocol
        # Each kind of age saturates at the first value beyond which its comparisons no longer change.
        self.caps = _Caps(p.min_age + 1, max(p.validity - p.publish, 0), p.publish + 1, p.delta)
        self.clock = 0
        # digest -> age of its LastModified; the blobs of time 0 are old
        self.main: dict[Digest, int] = dict.fromkeys(scenario.blobs, self.caps.modified)
        self.quarantine: set[tuple[Digest, str]] = set()  # (digest, run key)
        self.manifest: dict[Path, Content] = dict(scenario.entries)
        self.violation: str | None = None
        self.events: Counter[str] = Counter()  # what happened, to show that schedules reach the races
        kinds: list[str] = []
        states: list[Local] = []
        memo = tuple(sorted((d, 0) for d in scenario.memo))
        for i in range(scenario.writers):
            ops = len(scenario.scripts[i]) if scenario.scripts is not None else scenario.writer_ops
            kinds.append("writer")
            states.append(WriterState(ops_left=ops, memo=memo))
        for _ in range(scenario.deleters):
            kinds.append("deleter")
            states.append(DeleterState(scenario.deletes))
        for _ in range(scenario.readers):
            kinds.append("reader")
            states.append(ReaderState(scenario.reads))
        for i in range(scenario.runs):
            kinds.append("run")
            key = f"r{i}" if protocol.per_run_quarantine else "shared"
            states.append(RunState(key=key, crashes_left=scenario.crashes))
        self.kinds = tuple(kinds)
        self.locals = states

    def copy(self) -> World:
        other = object.__new__(World)
        other.protocol = self.protocol
        other.scenario = self.scenario
        other.caps = self.caps
        other.kinds = self.kinds
        other.clock = self.clock
        other.main = dict(self.main)
        other.quarantine = set(self.quarantine)
        other.manifest = dict(self.manifest)
        other.violation = self.violation
        other.events = self.events  # shared: explore() counts over all states
        other.locals = list(self.locals)
        return other

    def key(self) -> tuple[object, ...]:
        return (
            frozenset(self.main.items()),
            frozenset(self.quarantine),
            frozenset(self.manifest.items()),
            tuple(self.locals),
        )

    # -- the bucket ----------------------------------------------------------------------

    def copies_of(self, digest: Digest) -> tuple[str, ...]:
        """LIST of the blob's quarantine prefix: the run keys holding a copy."""
        return tuple(sorted(k for d, k in self.quarantine if d == digest))

    def in_quarantine(self, digest: Digest) -> bool:
        return any(d == digest for d, _ in self.quarantine)

    def write_blob(self, digest: Digest) -> None:
        """PUT, restore or touch of a main key: LastModified becomes now, too recent for every T1 taken."""
        self.main[digest] = 0
        for i, state in enumerate(self.locals):
            if isinstance(state, RunState) and digest in state.fresh:
                self.locals[i] = state._replace(fresh=state.fresh - {digest})

    def put_entry(self, path: Path, content: Content) -> None:
        self.manifest[path] = content
        self._unsettle(path)

    def delete_entry(self, path: Path) -> None:
        self.manifest.pop(path, None)
        self._unsettle(path)

    def _unsettle(self, path: Path) -> None:
        """Readers that read ``path`` before this change no longer hold its current entry."""
        for i, state in enumerate(self.locals):
            if isinstance(state, ReaderState) and state.pc != "idle" and state.path == path:
                self.locals[i] = state._replace(stable=False)

    def lost(self) -> str | None:
        """B2: the first blob of a published entry at neither its main key nor in quarantine."""
        for path, content in self.manifest.items():
            for digest in content:
                if digest not in self.main and not self.in_quarantine(digest):
                    return f"B2: entry {path!r} names blob {digest!r}: not at its main key, not in quarantine"
        return None

    # -- steps ---------------------------------------------------------------------------

    def ticks(self) -> bool:
        return self.scenario.horizon is None or self.clock < self.scenario.horizon

    def moves_of(self, actor: int) -> list[Label]:
        if actor == CLOCK:
            return [("tick",)] if self.ticks() else []
        return _MOVES[self.kinds[actor]](self, actor, self.locals[actor])

    def moves(self) -> list[Move]:
        found: list[Move] = [(CLOCK, ("tick",))] if self.ticks() else []
        for i, state in enumerate(self.locals):
            found.extend((i, label) for label in _MOVES[self.kinds[i]](self, i, state))
        return found

    def apply(self, move: Move) -> None:
        actor, label = move
        if actor == CLOCK:
            self._tick()
        else:
            self.locals[actor] = _STEPS[self.kinds[actor]](self, actor, self.locals[actor], label)
        if self.violation is None:
            self.violation = self.lost()

    def _tick(self) -> None:
        caps = self.caps
        self.clock += 1
        self.main = {d: a + 1 if a < caps.modified else a for d, a in self.main.items()}
        from_t1 = not self.protocol.delta_after_t1e
        trust = self.protocol.trust
        for i, state in enumerate(self.locals):
            if isinstance(state, WriterState):
                since = min(state.since_check + 1, caps.check) if state.pc == "put" else 0
                memo, proofs = _older_memo(state.memo, trust), _older(state.proofs, caps.proof)
                self.locals[i] = state._replace(memo=memo, proofs=proofs, since_check=since)
            elif isinstance(state, RunState):
                run = state
                if run.pc == "wait":
                    run = run._replace(since_t1e=min(run.since_t1e + 1, caps.since))
                if from_t1 and (run.pc == "wait" or run.pc in _PHASE1):
                    run = run._replace(since_t1=min(run.since_t1 + 1, caps.since))
                self.locals[i] = run


_MARKING = frozenset({"listblobs", "listman", "get1"})  # nothing PUT but state.json "marking"
_MOVING = frozenset({"copy", "delete", "endphase1"})  # the intent log and L1 are PUT
_PHASE1 = _MARKING | _MOVING
_PHASE2 = frozenset({"list2", "get2", "restore", "purge"})


# -- writers (rule W) ----------------------------------------------------------------------


def _writer_moves(w: World, i: int, s: Local) -> list[Label]:
    assert isinstance(s, WriterState)
    if s.pc == "idle":
        if s.ops_left == 0:
            return []
        scripts = w.scenario.scripts
        if scripts is not None:
            return [("start", len(scripts[i]) - s.ops_left)]
        return _operations(w.scenario)
    if s.pc == "prove":
        return [("prove", s.todo[0])]
    if s.pc == "check":
        return [("check",)]
    p = w.protocol
    if p.publish_deadline and s.since_check > p.publish:
        return [("timeout",)]  # W4: the PUT did not land within P; it is abandoned and the check redone
    return [("put",)]


@functools.cache
def _operations(scenario: Scenario) -> list[Label]:
    """Every operation a free writer may start."""
    labels: list[Label] = [("write", p, c) for p in scenario.paths for c in range(len(scenario.contents))]
    if scenario.copies:
        labels += [("copy", src, dst) for src in scenario.paths for dst in scenario.paths if src != dst]
    return labels


def _prove(w: World, s: WriterState, digest: Digest) -> tuple[WriterState, bool]:
    """HEAD the main key; on 404 upload (a write has the bytes) or restore from quarantine (a copy
    has none). A success is a proof sent now; a failure forgets the memo row."""
    assert s.op is not None
    if digest in w.main:
        w.events["head-200"] += 1
        if w.protocol.touch:
            w.write_blob(digest)  # a self-copy refreshes LastModified
    elif s.op.kind == "write":
        w.events["reupload"] += 1
        w.write_blob(digest)  # PUT with If-None-Match: *, from the caller's bytes
    elif w.in_quarantine(digest):
        w.events["writer-restore"] += 1
        w.write_blob(digest)  # copy a quarantine copy back to the main key
    else:
        w.events["write-failed"] += 1
        return s._replace(memo=_set(s.memo, digest, None)), False
    return s._replace(memo=_set(s.memo, digest, 0), proofs=_set(s.proofs, digest, 0)), True


def _writer_step(w: World, i: int, s: Local, label: Label) -> Local:
    assert isinstance(s, WriterState)
    p = w.protocol
    kind = label[0]
    finished = WriterState(s.ops_left - 1, s.memo)
    if kind in {"start", "write", "copy"}:
        if kind == "start":
            assert w.scenario.scripts is not None
            op = w.scenario.scripts[i][int(label[1])]
        elif kind == "write":
            op = Op("write", str(label[1]), w.scenario.contents[int(label[2])])
        else:
            op = Op("copy", str(label[2]), src=str(label[1]))
        content = op.content
        if op.kind == "copy":
            if op.src not in w.manifest:
                return finished
            content = w.manifest[op.src]  # GET the source entry
        return s._replace(pc="prove", op=op, content=content, todo=tuple(dict.fromkeys(content)), proofs=())
    if kind == "prove":
        digest = s.todo[0]
        age = _age(s.memo, digest)
        if age is not None and 0 <= age < p.trust:  # W2: trust the memo row
            w.events["memo-trusted"] += 1
            if p.memo_stamped_at_use:
                age = 0
                s = s._replace(memo=_set(s.memo, digest, 0))
            s = s._replace(proofs=_set(s.proofs, digest, age))
        else:
            s, ok = _prove(w, s, digest)
            if not ok:
                return finished
        s = s._replace(todo=s.todo[1:])
        return s if s.todo else s._replace(pc="check")
    if kind == "check":
        if p.recheck_at_close:  # W3: HEAD every proof at least V - P old; repair on 404
            for digest, age in s.proofs:
                if age >= p.validity - p.publish:
                    w.events["recheck"] += 1
                    s, ok = _prove(w, s, digest)
                    if not ok:
                        return finished
        return s._replace(pc="put", since_check=0)
    if kind == "timeout":
        w.events["timeout"] += 1
        return s._replace(pc="check", since_check=0)
    assert kind == "put" and s.op is not None
    w.put_entry(s.op.dst, s.content)
    w.events["published"] += 1
    return finished


# -- the deleter ---------------------------------------------------------------------------


def _deleter_moves(w: World, i: int, s: Local) -> list[Label]:
    assert isinstance(s, DeleterState)
    return [("rm", path) for path in sorted(w.manifest)] if s.deletes_left else []


def _deleter_step(w: World, i: int, s: Local, label: Label) -> Local:
    assert isinstance(s, DeleterState)
    w.delete_entry(str(label[1]))
    return DeleterState(s.deletes_left - 1)


# -- readers (rule R) ----------------------------------------------------------------------


def _reader_moves(w: World, i: int, s: Local) -> list[Label]:
    assert isinstance(s, ReaderState)
    if s.pc == "idle":
        return [("get", path) for path in sorted(w.manifest)] if s.reads_left else []
    return [(s.pc,)]


def _reader_step(w: World, i: int, s: Local, label: Label) -> Local:
    assert isinstance(s, ReaderState)
    p = w.protocol
    if s.pc == "idle":  # GET the entry
        path = str(label[1])
        return s._replace(pc="main", path=path, content=w.manifest[path], chunk=0, stable=True)
    digest = s.content[s.chunk]
    got = s._replace(pc="main", chunk=s.chunk + 1, copies=(), rounds_left=0)
    if got.chunk == len(s.content):
        got = ReaderState(s.reads_left - 1)
    if s.pc == "main":  # GET the main key
        if digest in w.main:
            return got
        return s._replace(pc="qlist" if p.reader_quarantine else "retry", rounds_left=p.reader_rounds)
    if s.pc == "qlist":  # LIST the blob's quarantine prefix
        return s._replace(pc="qget", copies=w.copies_of(digest))
    if s.pc == "qget":  # GET the first listed copy not yet tried
        if not s.copies:
            return s._replace(pc="retry")
        if (digest, s.copies[0]) in w.quarantine:
            w.events["read-from-quarantine"] += 1
            return got
        return s._replace(copies=s.copies[1:])
    assert s.pc == "retry"  # GET the main key again: a restore precedes every purge
    if digest in w.main:
        w.events["read-after-retry"] += 1
        return got
    if s.rounds_left > 1:
        w.events["reader-round"] += 1
        return s._replace(pc="qlist" if p.reader_quarantine else "retry", rounds_left=s.rounds_left - 1)
    if s.stable and w.violation is None:
        w.violation = f"R: a reader of {s.path!r} found blob {digest!r} nowhere while the entry was published"
    return ReaderState(s.reads_left - 1)  # BlobMissingError


# -- collector runs ------------------------------------------------------------------------


def _run_moves(w: World, i: int, s: Local) -> list[Label]:
    assert isinstance(s, RunState)
    pc = s.pc
    if pc == "done":
        return []
    if pc == "wait":
        since = s.since_t1e if w.protocol.delta_after_t1e else s.since_t1
        return [("phase2",)] if since >= w.protocol.delta else []
    crash: list[Label] = [("crash",)] if s.crashes_left and (pc in _PHASE1 or pc in _PHASE2) else []
    if pc in {"get1", "get2"}:
        return [(pc, s.todo[0]), *crash]
    if pc in {"copy", "delete", "restore", "purge"}:
        return [(pc, s.queue[0]), *crash]
    return [(pc,), *crash]


def _after_marking(w: World, s: RunState) -> RunState:
    """Step 4: candidates are the listed old blobs that no entry read names; then step 5."""
    candidates = tuple(d for d in s.listed if d not in s.marked)
    if not w.protocol.quarantine:
        pc = "delete" if candidates else "done"
        return s._replace(pc=pc, log=candidates, queue=candidates, moved=candidates)
    if not candidates:
        return s._replace(pc="endphase1")
    return s._replace(pc="copy", log=candidates, queue=candidates)  # PUT the intent log (and L1)


def _after_remarking(w: World, s: RunState) -> RunState:
    restore = tuple(d for d in s.moved if d in s.marked) if w.protocol.restore else ()
    if restore:
        return s._replace(pc="restore", queue=restore)
    return s._replace(pc="purge", queue=s.moved) if s.moved else s._replace(pc="done")


def _recover(w: World, s: RunState) -> RunState:
    """A crash, then the next invocation re-drives the run from what it PUT: state.json, the intent
    log and L1. Every step is idempotent."""
    w.events["crash"] += 1
    s = s._replace(crashes_left=s.crashes_left - 1, todo=(), marked=frozenset())
    if s.pc in _MARKING:  # no intent log yet: phase 1 starts over, with a new T1
        return RunState(s.key, s.crashes_left)
    if s.pc in _MOVING:  # step 5 again, from the intent log
        if not s.log:
            return s._replace(pc="endphase1")
        if not w.protocol.quarantine:
            return s._replace(pc="delete", queue=s.log)
        return s._replace(pc="copy", queue=s.log, moved=())
    return s._replace(pc="list2")  # phase 2 again (still due: T1e has not changed)


def _run_step(w: World, i: int, s: Local, label: Label) -> Local:
    assert isinstance(s, RunState)
    p = w.protocol
    pc = s.pc
    if label[0] == "crash":
        return _recover(w, s)
    if pc == "idle":  # phase 1, step 1: PUT state.json; T1 is its LastModified
        fresh = frozenset(d for d, age in w.main.items() if age > p.min_age)  # LastModified < T1 - G
        return s._replace(pc="listblobs", fresh=fresh, since_t1=0)
    if pc == "listblobs":  # step 2: LIST the blobs; keep those older than T1 - G
        return s._replace(pc="listman", fresh=frozenset(), listed=tuple(sorted(s.fresh & w.main.keys())))
    if pc == "listman":  # step 3: LIST the manifest (after step 1), then GET each entry
        snapshot = () if p.snapshot_read_etag else tuple(sorted(w.manifest.items()))
        todo = tuple(sorted(w.manifest))
        s = s._replace(todo=todo, marked=frozenset(), snapshot=snapshot)
        return s._replace(pc="get1") if todo else _after_marking(w, s)
    if pc in {"get1", "get2"}:
        path = s.todo[0]
        s = s._replace(todo=s.todo[1:])
        content = w.manifest.get(path)
        if content is not None:
            s = s._replace(marked=s.marked | set(content))
            if pc == "get1" and p.snapshot_read_etag:
                s = s._replace(snapshot=(*s.snapshot, (path, content)))
        if s.todo:
            return s
        return _after_marking(w, s) if pc == "get1" else _after_remarking(w, s)
    if pc == "copy":  # step 5: copy each candidate to the run's quarantine key
        digest = s.queue[0]
        if (digest, s.key) in w.quarantine:
            s = s._replace(moved=(*s.moved, digest))  # copied before a crash
        elif digest in w.main:
            w.quarantine.add((digest, s.key))
            s = s._replace(moved=(*s.moved, digest))
        s = s._replace(queue=s.queue[1:])
        if s.queue:
            return s
        return s._replace(pc="delete", queue=s.moved) if s.moved else s._replace(pc="endphase1")
    if pc == "delete":  # step 5: then delete the main keys whose copy succeeded
        if s.queue[0] in w.main:
            w.events["quarantined" if p.quarantine else "deleted"] += 1
        w.main.pop(s.queue[0], None)
        s = s._replace(queue=s.queue[1:])
        if s.queue:
            return s
        return s._replace(pc="endphase1" if p.quarantine else "done")
    if pc == "endphase1":  # step 6: PUT state.json "quarantined"; T1e is its LastModified
        return s._replace(pc="wait", since_t1e=0)
    if pc == "wait":  # phase 2, step 1: the marker T2, taken when T2 - T1e >= Δ (the move's guard)
        return s._replace(pc="list2", since_t1=0, since_t1e=0)
    if pc == "list2":  # step 2: LIST the manifest again; read only entries new or changed since L1
        before = dict(s.snapshot)
        todo = tuple(path for path, content in sorted(w.manifest.items()) if before.get(path) != content)
        s = s._replace(todo=todo, marked=frozenset())
        return s._replace(pc="get2") if todo else _after_remarking(w, s)
    if pc == "restore":  # step 3: copy back (If-None-Match: *) where the main key is missing
        digest = s.queue[0]
        if digest not in w.main and (digest, s.key) in w.quarantine:
            w.events["restored"] += 1
            w.write_blob(digest)
        s = s._replace(queue=s.queue[1:])
        return s if s.queue else s._replace(pc="purge", queue=s.moved)
    assert pc == "purge"  # step 3: only then delete this run's quarantine copies
    if (s.queue[0], s.key) in w.quarantine:
        w.events["purged"] += 1
    w.quarantine.discard((s.queue[0], s.key))
    s = s._replace(queue=s.queue[1:])
    return s if s.queue else s._replace(pc="done")


_MOVES: dict[str, Callable[[World, int, Local], list[Label]]] = {
    "writer": _writer_moves,
    "deleter": _deleter_moves,
    "reader": _reader_moves,
    "run": _run_moves,
}
_STEPS: dict[str, Callable[[World, int, Local, Label], Local]] = {
    "writer": _writer_step,
    "deleter": _deleter_step,
    "reader": _reader_step,
    "run": _run_step,
}


# -- schedulers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How one schedule ended: its first violation (if any) and the steps taken."""

    violation: str | None
    trace: tuple[Step, ...]
    events: Counter[str]


def _describe(world: World, move: Move) -> Step:
    actor, label = move
    return (world.clock, "clock" if actor == CLOCK else f"{world.kinds[actor]}{actor}", label)


SPEEDS = (0.02, 0.1, 0.3, 1.0, 3.0)


def run_random(protocol: Protocol, scenario: Scenario, seed: int, max_steps: int = 2000) -> Outcome:
    """One schedule drawn from ``seed``. Each actor, and the clock, gets a random speed, now and then
    redrawn, so that both long stalls and bursts occur; the next actor is drawn by speed among
    those that can move, then its step uniformly. Ends when nothing can move."""
    rng = random.Random(seed)
    world = World(protocol, scenario)
    actors = [CLOCK, *range(len(world.locals))]
    speed = {a: rng.choice(SPEEDS) for a in actors}
    trace: list[Step] = []
    for _ in range(max_steps):
        if rng.random() < 0.05:
            speed[rng.choice(actors)] = rng.choice(SPEEDS)
        options = [(a, labels) for a in actors if (labels := world.moves_of(a))]
        if not options:
            return Outcome(None, tuple(trace), world.events)
        actor, labels = rng.choices(options, weights=[speed[a] for a, _ in options])[0]
        move = (actor, rng.choice(labels))
        trace.append(_describe(world, move))
        world.apply(move)
        if world.violation is not None:
            return Outcome(world.violation, tuple(trace), world.events)
    raise AssertionError(f"schedule {seed} did not end within {max_steps} steps")


@dataclass(frozen=True)
class Exploration:
    """The end of an exhaustive exploration: the first violation and its trace, or none."""

    violation: str | None
    trace: tuple[Step, ...]
    states: int  # distinct states reached
    transitions: int
    events: Counter[str]


class _Link(NamedTuple):
    step: Step
    parent: _Link | None


def _unlink(link: _Link | None) -> tuple[Step, ...]:
    steps: list[Step] = []
    while link is not None:
        steps.append(link.step)
        link = link.parent
    return tuple(reversed(steps))


def explore(protocol: Protocol, scenario: Scenario, max_states: int = 1_000_000) -> Exploration:
    """Every interleaving of ``scenario`` over unbounded time: depth first over the scheduler's
    choices, each distinct state expanded once. Stops at the first violation."""
    if scenario.horizon is not None:
        raise ValueError("explore() covers unbounded time: give it a scenario with horizon=None")
    start = World(protocol, scenario)
    seen = {start.key()}
    stack: list[tuple[World, _Link | None]] = [(start, None)]
    transitions = 0
    while stack:
        world, link = stack.pop()
        for move in world.moves():
            transitions += 1
            nxt = world.copy()
            step = _describe(world, move)
            nxt.apply(move)
            if nxt.violation is not None:
                trace = _unlink(_Link(step, link))
                return Exploration(nxt.violation, trace, len(seen), transitions, start.events)
            key = nxt.key()
            if key not in seen:
                seen.add(key)
                if len(seen) > max_states:
                    raise AssertionError(f"more than {max_states} states: shrink the scenario")
                stack.append((nxt, _Link(step, link)))
    return Exploration(None, (), len(seen), transitions, start.events)


def describe(trace: tuple[Step, ...]) -> str:
    """A trace, one step a line, ticks folded: for assertion messages."""
    lines: list[str] = []
    for clock, actor, label in trace:
        if actor != "clock":
            lines.append(f"t={clock:<3} {actor:<8} {' '.join(map(str, label))}")
    return "\n".join(lines)


# -- the variants --------------------------------------------------------------------------

CORRECT = Protocol()


def weakened(base: Protocol = CORRECT) -> dict[str, Protocol]:
    """The variants that must lose data: each is one change to ``base`` (touch: another design)."""
    v = base.validity
    return {
        # the weakened variants of gc-protocol.md
        "delta-below-V": replace(base, delta=v - 1),
        "no-recheck-at-close": replace(base, recheck_at_close=False),
        "memo-stamped-at-use": replace(base, memo_stamped_at_use=True),
        "one-phase-delete": replace(base, quarantine=False),
        "shared-quarantine-key": replace(base, per_run_quarantine=False),
        "put-later-than-P": replace(base, publish_deadline=False),
        # every reuse is a HEAD and a touch (no memo), and a blob must be 10 V old to be collected
        "touch-one-phase-grace-10V": replace(base, quarantine=False, touch=True, min_age=10 * v, memo_ttl=0),
        # found while modelling: these steps are needed as well
        "snapshot-of-listed-etag": replace(base, snapshot_read_etag=False),
        "purge-without-restore": replace(base, restore=False),
        "reader-ignores-quarantine": replace(base, reader_quarantine=False),
        "reader-one-round": replace(base, reader_rounds=1),  # rule R as gc-protocol.md states it
        "delta-from-T1": replace(base, delta_after_t1e=False),
    }
