"""Every timing knob of garbage collection, in one place, each with its reason (docs/gc.md §2).

A store has one setting, ``gc_grace`` (seconds), chosen when it is created; the durations
below derive from it **once**, at creation, and are recorded in the format marker. Writers
and collectors use the recorded numbers, never a derivation of their own, so that a later
cas_store deriving differently still agrees with every writer of an existing store.

Pure values, no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cas_store.errors import IncompatibleStoreError

#: One day: kopia's minimum pack age before deletion is 24 h; rustic keeps packs 23 h.
DEFAULT_GC_GRACE = 86400.0
#: A test store runs the whole protocol in seconds; below this, request times (tens of ms)
#: are no longer small against the publish deadline P.
MIN_GC_GRACE = 1.0
#: P measures one request, not the grace period: capping it keeps the W3 re-check (at
#: V - P) close to V, so that fewer writes pay it.
MAX_PUBLISH = 900.0


@dataclass(frozen=True)
class GCDurations:
    """The protocol's durations, in seconds, as a version 2 marker records them."""

    #: ``gc_grace`` as chosen when the store was created.
    grace: float
    #: Δ: the least time between the end of a run's moves (T1e) and its purge (T2). The
    #: proof needs Δ >= V; the margin Δ - V absorbs a PUT the server applies late and a
    #: writer clock that is stepped back. Derived: ``grace``.
    delta: float
    #: V: how old a writer's proof of a blob may be when the entry naming it lands (rule W).
    #: Derived: ``grace / 4``, so that Δ = 4 V.
    validity: float
    #: P: how long an entry PUT may take after the writer's last check (rule W4). Derived:
    #: ``min(grace / 96, 900)``.
    publish: float
    #: G: blobs written less than G before a run started are not its candidates. Efficiency
    #: only (fresh uploads are about to be referenced); safety never rests on LastModified.
    #: Derived: ``grace``.
    min_age: float

    @classmethod
    def from_grace(cls, grace: float) -> GCDurations:
        """The durations of a new store created with ``gc_grace = grace``."""
        check_grace(grace)
        grace = float(grace)
        return cls(grace, grace, grace / 4, min(grace / 96, MAX_PUBLISH), grace)

    @property
    def recheck_after(self) -> float:
        """W3: a proof this old is re-checked before the entry that relies on it is published."""
        return self.validity - self.publish

    def validate(self, where: str) -> None:
        """The relations the proof of docs/gc.md §7 needs (with the margin the marker requires)."""
        ok = (
            self.publish > 0
            and 4 * self.publish <= self.validity
            and 2 * self.validity <= self.delta
            and self.min_age >= 0
            and self.grace > 0
        )
        if not ok:
            raise IncompatibleStoreError(
                f"the store at {where} records garbage-collection durations {self.to_dict()} that "
                "break 0 < publish, 4 * publish <= validity, 2 * validity <= delta, 0 <= min_age: "
                "the marker was edited by hand or written by a broken tool; restore it"
            )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> GCDurations:
        try:
            names = ("grace", "delta", "validity", "publish", "min_age")
            values = {k: doc[k] for k in names}
            bad = [k for k, v in values.items() if isinstance(v, bool) or not isinstance(v, int | float)]
            if bad:
                raise TypeError(f"{', '.join(bad)} must be numbers of seconds")
            durations = cls(**{k: float(v) for k, v in values.items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise IncompatibleStoreError(
                f"the store at {where} has a malformed 'gc' object in its marker ({exc!r}): restore it"
            ) from exc
        durations.validate(where)
        return durations


def check_grace(grace: float) -> None:
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not grace >= MIN_GC_GRACE:
        raise ValueError(f"gc_grace must be a number of seconds >= {MIN_GC_GRACE:g}, not {grace!r}")
