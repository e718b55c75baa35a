"""Statistics, pairwise ratios, the goals P1-P7 and S2-S4, the markdown tables and the chart.

Raw measurements are lower-is-better quantities (seconds, bytes, request counts), one
value per repetition and peer. A ratio "cas vs X" is computed per repetition as
``X / cas`` (so > 1 means cas_store is better: faster, smaller, fewer requests) and then
summarised (median, min, max) over the repetitions: each ratio pairs measurements of
the same run, never medians of different runs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import PEER_LABELS, PEERS, MiB

Raw = Mapping[str, Mapping[str, Sequence[float | None]]]  # metric -> peer -> value per repetition


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    convert: Callable[[float], float]  # raw (lower is better) -> displayed value
    higher_is_better: bool  # of the displayed value
    peers: tuple[str, ...] = PEERS
    chart: str | None = None  # panel of the chart, if any
    no_ratio: tuple[str, ...] = ()  # peers not to compare with (a control, not a competitor)


def metrics(config: Mapping[str, Any]) -> list[Metric]:
    """The rows of the table, for the sizes of this run."""
    large = config["large_size"]
    lm = f"{large / MiB:g} MiB"
    n, small = config["small_n"], config["small_size"]

    def mib_per_s(seconds: float) -> float:
        return large / MiB / seconds

    def files_per_s(seconds: float) -> float:
        return n / seconds

    def ms(seconds: float) -> float:
        return seconds * 1000

    def mib(value: float) -> float:
        return value / MiB

    out = [
        Metric("large.cold_write", f"{lm} cold write", "MiB/s", mib_per_s, True, chart="large"),
        Metric(
            "large.identical_write",
            f"{lm} identical content to a new path",
            "MiB/s",
            mib_per_s,
            True,
            chart="large",
        ),
        Metric(
            "large.cold_read",
            f"{lm} cold read (new process, empty cache)",
            "MiB/s",
            mib_per_s,
            True,
            chart="large",
        ),
        Metric(
            "large.warm_read",
            f"{lm} warm read (open('rb'), {config['chunk'] // MiB} MiB reads)",
            "MiB/s",
            mib_per_s,
            True,
            chart="large",
        ),
        Metric(
            "large.warm_read_whole",
            f"{lm} warm read (open('rb'), one read())",
            "MiB/s",
            mib_per_s,
            True,
            chart="large",
        ),
        Metric(
            "small.write", f"{n} x {small // 1024} KiB: write", "files/s", files_per_s, True, chart="small"
        ),
        Metric(
            "small.exists", f"{n} x {small // 1024} KiB: exists", "files/s", files_per_s, True, chart="small"
        ),
        Metric(
            "small.read_cold",
            f"{n} x {small // 1024} KiB: read, cold (new process, empty cache)",
            "files/s",
            files_per_s,
            True,
            chart="small",
        ),
        Metric(
            "small.read_warm",
            f"{n} x {small // 1024} KiB: read, warm (same process again)",
            "files/s",
            files_per_s,
            True,
            chart="small",
        ),
        Metric("small.listdir_writer", f"listdir of the {n} files (writer process)", "ms", ms, False),
        Metric(
            "small.listdir_fresh", f"listdir of the {n} files (new process, empty cache)", "ms", ms, False
        ),
    ]
    for direction in ("write", "read"):
        for size in config["mem_sizes"]:
            out.append(
                Metric(
                    f"mem.{direction}.{size}",
                    f"peak RSS growth, {direction} {_size(size)}",
                    "MiB",
                    mib,
                    False,
                    chart="mem",
                    no_ratio=("local",),
                )
            )
    if "versions_size" in config:
        out += version_metrics(config)
    pipe = ("cas", "s3")
    for run, name in (("run1", "first run"), ("rerun", "rerun, identical outputs")):
        out += [
            Metric(
                f"pipe.{run}.seconds",
                f"ZenML pipeline, {name}: wall time",
                "s",
                float,
                False,
                pipe,
                chart="pipe",
            ),
            Metric(
                f"pipe.{run}.requests",
                f"ZenML pipeline, {name}: S3 requests (client)",
                "requests",
                float,
                False,
                pipe,
            ),
        ]
        if config.get("server_counts"):
            out.append(
                Metric(
                    f"pipe.{run}.requests_server",
                    f"ZenML pipeline, {name}: S3 requests (moto log)",
                    "requests",
                    float,
                    False,
                    pipe,
                )
            )
    out += [
        Metric(
            "pipe.rerun.upload_bytes",
            "ZenML pipeline rerun: bytes uploaded (all PUT/POST bodies)",
            "MiB",
            mib,
            False,
            pipe,
        ),
        Metric(
            "pipe.rerun.blob_upload_bytes",
            "ZenML pipeline rerun: blob bytes uploaded",
            "bytes",
            float,
            False,
            ("cas",),
        ),
    ]
    return out


def version_metrics(config: Mapping[str, Any]) -> list[Metric]:
    """S2, S2b, S3 (bytes a second version adds) and S4 (what 1 MiB read at an offset fetches)."""
    vs, csv = _size(config["versions_size"]), _size(config["csv_size"])
    peers = tuple(config.get("version_peers", ("cas", "s3")))

    def percent(share: float) -> float:
        return 100 * share

    def mib(value: float) -> float:
        return value / MiB

    added = "bytes added to the bucket"
    s4 = f"S4: 1 MiB read at the middle of an uncached {vs} file"
    out = [
        Metric("ver.s2.added", f"S2: {vs} file, a copy with 10 x 4 KiB edits at a new path: {added}",
               "% of size", percent, False, peers),
        Metric("ver.s2b.added", f"S2b: {vs} file, a copy with 100 B inserted at 1000: {added}",
               "% of size", percent, False, peers),
        Metric("ver.s3.added", f"S3: CSV of at least {csv}, a copy with 10% more rows: {added}",
               "% of size", percent, False, peers),
        Metric("ver.s4.fetched", f"{s4}: bytes fetched (client)", "MiB", mib, False, peers),
        Metric("ver.s4.gets", f"{s4}: content GETs (client)", "GETs", float, False, peers),
    ]  # fmt: skip
    if config.get("server_counts"):
        out.append(
            Metric(
                "ver.s4.gets_server",
                f"{s4}: content GETs (moto log)",
                "GETs",
                float,
                False,
                peers,
            )
        )
    return out


def _size(size: int) -> str:
    return f"{size / 2**30:g} GiB" if size >= 2**30 else f"{size / MiB:g} MiB"


# -- statistics --------------------------------------------------------------------------------


def stats(values: Sequence[float | None]) -> dict[str, float | int] | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {"median": statistics.median(present), "min": min(present), "max": max(present), "n": len(present)}


def pairwise(cas: Sequence[float | None], peer: Sequence[float | None]) -> list[float]:
    """``peer / cas`` for each repetition where both were measured (cas > 0)."""
    return [p / c for c, p in zip(cas, peer, strict=False) if c is not None and p is not None and c > 0]


def summarise(raw: Raw, config: Mapping[str, Any]) -> dict[str, Any]:
    """Per metric: raw stats, displayed stats and ratios against each peer."""
    out: dict[str, Any] = {}
    for metric in metrics(config):
        per_peer = raw.get(metric.key, {})
        row: dict[str, Any] = {
            "label": metric.label,
            "unit": metric.unit,
            "raw": {},
            "display": {},
            "ratio": {},
        }
        for peer in metric.peers:
            values = list(per_peer.get(peer, []))
            row["raw"][peer] = stats(values)
            row["display"][peer] = stats([None if v is None else metric.convert(v) for v in values])
            if peer != "cas" and peer not in metric.no_ratio:
                ratios = pairwise(per_peer.get("cas", []), values)
                row["ratio"][peer] = stats(ratios) if ratios else None  # type: ignore[arg-type]
        out[metric.key] = row
    return out


# -- goals ---------------------------------------------------------------------------------------


def _ratio(summary: Mapping[str, Any], key: str, peer: str) -> float | None:
    r = summary.get(key, {}).get("ratio", {}).get(peer)
    return None if r is None else float(r["median"])


def _raw_max(summary: Mapping[str, Any], key: str, peer: str = "cas") -> float | None:
    r = summary.get(key, {}).get("raw", {}).get(peer)
    return None if r is None else float(r["max"])


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{fmt(value)}x"


def goals(summary: Mapping[str, Any], config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """P1-P7 of issue 4 and S2-S4 of issue 9, evaluated from this run's measurements (medians
    of pairwise ratios; memory, uploaded, added and fetched bytes: the worst repetition)."""
    lm = _size(config["large_size"])
    out: list[dict[str, Any]] = []

    def goal(gid: str, measure: str, measured: str, target: str, checks: list[bool | None]) -> None:
        status = "NOT MEASURED" if any(c is None for c in checks) else ("MET" if all(checks) else "NOT MET")
        out.append({"id": gid, "measure": measure, "measured": measured, "goal": target, "status": status})

    def at_least(value: float | None, bound: float) -> bool | None:
        return None if value is None else value >= bound

    def at_most(value: float | None, bound: float) -> bool | None:
        return None if value is None else value <= bound

    local, s3 = _ratio(summary, "large.warm_read", "local"), _ratio(summary, "large.warm_read", "s3")
    whole = _ratio(summary, "large.warm_read_whole", "local")
    goal(
        "P1",
        f"warm read of {lm} via open('rb'), in {config['chunk'] // MiB} MiB pieces and as one read()",
        f"pieces {_x(local)} local disk ({_x(s3)} S3 flavor); one read() {_x(whole)} local disk",
        ">= 0.85x local disk both ways (issue 9); >= 50x S3 flavor (issue 4)",
        [at_least(local, 0.85), at_least(whole, 0.85), at_least(s3, 50)],
    )
    r = _ratio(summary, "large.identical_write", "s3")
    goal(
        "P2",
        f"identical {lm} written to a new path",
        f"{_x(r)} S3 flavor",
        ">= 50x S3 flavor",
        [at_least(r, 50)],
    )
    r = _ratio(summary, "large.cold_write", "s3")
    goal("P3", f"cold write {lm}", f"{_x(r)} S3 flavor", ">= 1.0x S3 flavor", [at_least(r, 1.0)])
    r = _ratio(summary, "large.cold_read", "s3")
    goal("P4", f"cold read {lm}, empty cache", f"{_x(r)} S3 flavor", ">= 1.0x S3 flavor", [at_least(r, 1.0)])
    w, rc, e, rw = (
        _ratio(summary, f"small.{k}", "s3") for k in ("write", "read_cold", "exists", "read_warm")
    )
    goal(
        "P5",
        f"{config['small_n']} x {config['small_size'] // 1024} KiB write / read / exists",
        f"write {_x(w)}, read cold {_x(rc)}, exists {_x(e)}, read warm {_x(rw)} S3 flavor",
        ">= 1.0x S3 flavor cold; warm reads >= 5x",
        [at_least(w, 1.0), at_least(rc, 1.0), at_least(e, 1.0), at_least(rw, 5.0)],
    )
    small_size, big_size = min(config["mem_sizes"]), max(config["mem_sizes"])
    limit, flat_tolerance = 64 * MiB, 16 * MiB
    checks: list[bool | None] = []
    parts = []
    for direction in ("write", "read"):
        big = _raw_max(summary, f"mem.{direction}.{big_size}")
        small = _raw_max(summary, f"mem.{direction}.{small_size}")
        checks.append(at_most(big, limit))
        checks.append(None if big is None or small is None else big - small <= flat_tolerance)
        parts.append(f"{direction} {_mib(small)} -> {_mib(big)} MiB")
    goal(
        "P6",
        f"peak RSS growth writing and reading {_size(big_size)} (vs {_size(small_size)})",
        "; ".join(parts) + " (worst repetition)",
        f"<= 64 MiB and flat in file size (grows <= {flat_tolerance // MiB} MiB from "
        f"{_size(small_size)} to {_size(big_size)})",
        checks,
    )
    run1, rerun = _ratio(summary, "pipe.run1.requests", "s3"), _ratio(summary, "pipe.rerun.requests", "s3")
    cas1 = _median(summary, "pipe.run1.requests", "cas")
    s31 = _median(summary, "pipe.run1.requests", "s3")
    cas2 = _median(summary, "pipe.rerun.requests", "cas")
    s32 = _median(summary, "pipe.rerun.requests", "s3")
    blob = _raw_max(summary, "pipe.rerun.blob_upload_bytes")
    goal(
        "P7",
        "two-step ZenML pipeline, S3 requests (client) and rerun uploads",
        f"requests run 1: {_n(cas1)} vs {_n(s31)}, rerun: {_n(cas2)} vs {_n(s32)} (cas vs S3 flavor); "
        f"rerun blob bytes uploaded: {_n(blob)}",
        "no more S3 requests than the S3 flavor; rerun uploads 0 blob bytes",
        [at_least(run1, 1.0), at_least(rerun, 1.0), None if blob is None else blob == 0],
    )
    if "versions_size" not in config:
        return out
    vs, csv = _size(config["versions_size"]), _size(config["csv_size"])
    for gid, key, measure, bound in (
        ("S2", "ver.s2.added", f"{vs} file, then a copy with 10 scattered 4 KiB edits at a new path", 0.05),
        ("S2b", "ver.s2b.added", f"{vs} file, then a copy with 100 bytes inserted at offset 1000", 0.05),
        ("S3", "ver.s3.added", f"CSV of at least {csv}, then the same with 10% more rows", 0.12),
    ):
        share = _raw_max(summary, key)
        s3_share = _raw_max(summary, key, "s3")
        goal(
            gid,
            measure,
            f"{_pct(share)} added" + (f" (S3 flavor {_pct(s3_share)})" if s3_share is not None else ""),
            f"adds <= {bound:.0%} of its size (bytes of new blobs in the bucket)",
            [at_most(share, bound)],
        )
    fetched, gets = _raw_max(summary, "ver.s4.fetched"), _raw_max(summary, "ver.s4.gets")
    goal(
        "S4",
        f"read 1 MiB at the middle of an uncached {vs} file (new process, empty cache)",
        f"{_mib(fetched)} MiB in {_n(gets)} blob GETs (client)",
        "fetches <= 32 MiB in <= 4 blob GETs",
        [at_most(fetched, 32 * MiB), at_most(gets, 4)],
    )
    return out


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.2f}%"


def _median(summary: Mapping[str, Any], key: str, peer: str) -> float | None:
    r = summary.get(key, {}).get("raw", {}).get(peer)
    return None if r is None else float(r["median"])


def _mib(value: float | None) -> str:
    return "n/a" if value is None else fmt(value / MiB)


def _n(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


# -- formatting ------------------------------------------------------------------------------


def fmt(value: float) -> str:
    if math.isinf(value) or math.isnan(value):
        return str(value)
    a = abs(value)
    if a >= 100 or a == 0:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _cell(s: Mapping[str, Any] | None, suffix: str = "") -> str:
    if s is None:
        return "-"
    if s["n"] == 1 or s["min"] == s["max"]:
        return f"{fmt(s['median'])}{suffix}"
    return f"{fmt(s['median'])}{suffix} [{fmt(s['min'])}-{fmt(s['max'])}]"


def markdown(
    summary: Mapping[str, Any], goal_rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]
) -> str:
    others = [p for p in PEERS if p != "cas"]
    lines = [
        f"Benchmark run {meta['started']}, cas_store {meta.get('commit')} ({meta['mode']} mode, "
        f"{meta['repeat']} repetition(s), "
        f"{meta['endpoint_kind']}; {meta['elapsed_s']:.0f} s; load average before the run "
        f"{meta['load_average']['start'][0]:.2f}"
        f"{'; profiled' if meta.get('profiled') else ''}). Cells: median [min-max] over "
        "repetitions. **cas vs X** = X / cas_store per repetition (speed: cas throughput / X "
        "throughput; memory, time, requests: X / cas): > 1 means cas_store is better.",
        "",
        "| workload | unit | "
        + " | ".join(PEER_LABELS[p] for p in PEERS)
        + " | "
        + " | ".join(f"cas vs {PEER_LABELS[p]}" for p in others)
        + " |",
        "|---|---|" + "---:|" * (len(PEERS) + len(others)),
    ]
    for row in summary.values():
        cells = [_cell(row["display"].get(p)) if p in row["display"] else "" for p in PEERS]
        ratios = [_cell(row["ratio"].get(p), "x") if p in row["ratio"] else "" for p in others]
        lines.append(f"| {row['label']} | {row['unit']} | " + " | ".join(cells + ratios) + " |")
    lines += [
        "",
        "| goal | measure | measured | target | status |",
        "|---|---|---|---|---|",
    ]
    for g in goal_rows:
        status = g["status"] if g["status"] != "MET" else "**MET**"
        lines.append(f"| {g['id']} | {g['measure']} | {g['measured']} | {g['goal']} | {status} |")
    return "\n".join(lines) + "\n"


# -- chart -----------------------------------------------------------------------------------

_COLORS = {"cas": "#1b9e77", "s3": "#d95f02", "filecache": "#7570b3", "local": "#999999"}


def chart(summary: Mapping[str, Any], config: Mapping[str, Any], meta: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {key: (metric, summary[key]) for metric in metrics(config) if (key := metric.key) in summary}
    panels = [
        ("large", f"{_size(config['large_size'])} file (MiB/s, log scale; higher is better)", True),
        (
            "small",
            f"{config['small_n']} x {config['small_size'] // 1024} KiB files (files/s, log; higher "
            "is better)",
            True,
        ),
        ("mem", "peak RSS growth of a fresh process (MiB; lower is better)", False),
        ("pipe", "two-step ZenML pipeline: wall time (s; lower is better)", False),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(15, 10))
    for ax, (panel, title, log) in zip(axes.flat, panels, strict=True):
        items = [(m, r) for m, r in rows.values() if m.chart == panel]
        peers = [p for p in PEERS if any(r["display"].get(p) for _, r in items)]
        width = 0.8 / max(len(peers), 1)
        for i, peer in enumerate(peers):
            placed = [
                (j + (i - (len(peers) - 1) / 2) * width, row, st)
                for j, (_, row) in enumerate(items)
                if (st := row["display"].get(peer)) is not None
            ]
            ax.bar(
                [x for x, _, _ in placed],
                [st["median"] for _, _, st in placed],
                width,
                yerr=[
                    [st["median"] - st["min"] for *_, st in placed],
                    [st["max"] - st["median"] for *_, st in placed],
                ],
                capsize=2,
                label=PEER_LABELS[peer],
                color=_COLORS[peer],
            )
            for x, row, st in placed if panel == "pipe" else ():
                req = summary.get(row_key_requests(row), {}).get("raw", {}).get(peer)
                if req:
                    ax.annotate(
                        f"{req['median']:.0f} requests",
                        (x, st["max"]),
                        xytext=(0, 3),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        fontsize=8,
                    )
        ax.set_xticks(range(len(items)))
        ax.set_xticklabels([_short(m.label) for m, _ in items], rotation=12, ha="right", fontsize=8)
        if log:
            ax.set_yscale("log")
        if panel == "mem":
            ax.axhline(64, color="red", linestyle="--", linewidth=1, label="P6 limit (64 MiB)")
        ax.set_title(title, fontsize=10)
        if not items or not peers:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"cas_store vs peers on {meta['endpoint_kind']} ({meta['mode']} mode, "
        f"{meta['repeat']} repetition(s), "
        f"{meta['started']}); bars: median, whiskers: min-max",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def row_key_requests(row: Mapping[str, Any]) -> str:
    return "pipe.run1.requests" if "first run" in row["label"] else "pipe.rerun.requests"


def _short(label: str) -> str:
    for prefix in ("ZenML pipeline, ", "peak RSS growth, "):
        label = label.removeprefix(prefix)
    label = label.split(": ", 1)[-1] if "KiB: " in label else label
    return label.replace(" (new process, empty cache)", "\n(new process)").replace(": wall time", "")
