"""Model check of the garbage-collection protocol (docs/gc.md, "How it is tested").

The protocol of docs/gc.md must lose nothing in seeded random schedules of the full scenario
and in every interleaving of short ones; each weakened variant must lose data (or fail a
reader), or the check has no teeth. The model is ``tests/unit/gc_model.py``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from tests.unit.gc_model import CORRECT, Op, Scenario, describe, explore, run_random, weakened

# 3 contents, 3 paths, 2 writers (writes and copies, a memo each), 1 deleter, 1 reader and
# 2 collector runs that may overlap and each crash once; the clock stops at 24 ticks (6 V).
SCENARIO = Scenario(crashes=1)
SCHEDULES = 10_000  # 7-11 s on the 2-core CI machine; 20,000 (measured once) found nothing either
BUDGET = 5_000  # a weakened variant must fail within this many schedules

# Short scenarios for the exhaustive search, over unbounded time (every stall of any length).
SHORT = {
    # a writer reuses an old unreferenced blob through its memo while two runs collect it
    # and a reader reads the new entry
    "reuse": Scenario(
        blobs=("b",),
        entries=(),
        memo=("b",),
        writers=1,
        scripts=((Op("write", "q", ("b",)),),),
        deleters=0,
        readers=1,
        reads=1,
        horizon=None,
    ),
    # a copy of an entry (no bytes: repair is a restore from quarantine) while the source is
    # removed and two runs collect its blob
    "copy": Scenario(
        blobs=("a",),
        entries=(("p", ("a",)),),
        memo=(),
        writers=1,
        scripts=((Op("copy", "q", src="p"),),),
        deletes=1,
        readers=0,
        horizon=None,
    ),
    # a path overwritten, and overwritten back, while a run marks; the run may crash
    "overwrite": Scenario(
        blobs=("a", "b"),
        entries=(("p", ("b",)),),
        memo=("a", "b"),
        writers=2,
        scripts=((Op("write", "p", ("a",)),), (Op("write", "p", ("b",)),)),
        deleters=0,
        readers=0,
        runs=1,
        crashes=1,
        horizon=None,
    ),
    # one writer, two entries sharing a blob, one removed; the run may crash
    "two-writes": Scenario(
        blobs=("a", "b"),
        entries=(),
        memo=("a", "b"),
        writers=1,
        scripts=((Op("write", "q", ("a",)), Op("write", "r", ("a", "b"))),),
        deletes=1,
        readers=0,
        runs=1,
        crashes=1,
        horizon=None,
    ),
}

VARIANTS = weakened()
# the short scenario in which the exhaustive search must find each variant's counterexample
EXPOSED_BY = dict.fromkeys(VARIANTS, "reuse") | {"snapshot-of-listed-etag": "overwrite"}
# found by the exhaustive search only: no random schedule in 20,000 hit its interleaving
EXHAUSTIVE_ONLY = {"reader-one-round"}

# What the random schedules must reach, so that a pass means the races happened.
REACHED = {
    "memo-trusted",  # W2: a memo row used without a request
    "recheck",  # W3: a HEAD at close of a proof at least V - P old
    "reupload",  # W3: ... that answered 404, and the blob was uploaded again
    "writer-restore",  # a copy restored its blob from quarantine
    "timeout",  # W4: an entry PUT abandoned after P, the check redone
    "quarantined",
    "restored",  # phase 2 restored a newly referenced blob
    "purged",
    "read-from-quarantine",  # rule R
    "read-after-retry",  # rule R: the blob was back at its main key
    "reader-round",  # rule R: a second round
    "crash",  # a run crashed and was re-driven
}


def _violation_kind(violation: str | None) -> str | None:
    return violation.split(":", 1)[0] if violation else None


def test_protocol_loses_nothing_in_random_schedules() -> None:
    events: Counter[str] = Counter()
    violations: list[tuple[int, str]] = []
    for seed in range(SCHEDULES):
        outcome = run_random(CORRECT, SCENARIO, seed)
        events.update(outcome.events)
        if outcome.violation is not None:
            violations.append((seed, outcome.violation))
    assert violations == [], describe(run_random(CORRECT, SCENARIO, violations[0][0]).trace)
    assert {e for e in REACHED if events[e] == 0} == set(), events


@pytest.mark.parametrize("name", SHORT)
def test_protocol_loses_nothing_in_any_interleaving(name: str) -> None:
    result = explore(CORRECT, SHORT[name])
    assert result.violation is None, f"{result.violation}\n{describe(result.trace)}"
    assert result.states > 10_000
    assert result.events["quarantined"] and result.events["purged"] and result.events["restored"]


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v not in EXHAUSTIVE_ONLY])
def test_weakened_variant_fails_in_random_schedules(variant: str) -> None:
    protocol = VARIANTS[variant]
    for seed in range(BUDGET):
        outcome = run_random(protocol, SCENARIO, seed)
        if outcome.violation is not None:
            break
    else:
        pytest.fail(f"{variant}: no violation in {BUDGET} schedules; the check has no teeth")
    assert _violation_kind(outcome.violation) == ("R" if variant.startswith("reader-") else "B2")


@pytest.mark.parametrize("variant", VARIANTS)
def test_weakened_variant_fails_in_a_short_scenario(variant: str) -> None:
    result = explore(VARIANTS[variant], SHORT[EXPOSED_BY[variant]])
    assert result.violation is not None, f"{variant}: every interleaving is safe; the check has no teeth"
    assert _violation_kind(result.violation) == ("R" if variant.startswith("reader-") else "B2")


def test_w2_validity_bound_is_not_what_keeps_blobs() -> None:
    """A memo trusted for its whole ttl (3 V here) instead of min(ttl, V) loses nothing: W3 and W4
    bound the proof's age at publication. W2's bound saves nothing either (W3 HEADs such rows)."""
    protocol = replace(CORRECT, memo_bounded_by_validity=False, memo_ttl=3 * CORRECT.validity)
    found = [s for s in range(2_000) if run_random(protocol, SCENARIO, s).violation is not None]
    assert found == []


def test_the_boundary_is_tight() -> None:
    """The protocol runs at Δ = V (the proof's bound), and Δ = V - 1 is one of the variants."""
    assert CORRECT.delta == CORRECT.validity
    assert VARIANTS["delta-below-V"].delta == CORRECT.validity - 1
    assert CORRECT.min_age == 0  # every unreferenced blob is a candidate: G is not what keeps blobs


def test_schedules_are_deterministic() -> None:
    assert run_random(CORRECT, SCENARIO, 7).trace == run_random(CORRECT, SCENARIO, 7).trace
