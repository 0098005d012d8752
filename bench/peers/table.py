"""Medians over rounds, the one printed table, and ratios against the best peer of a class."""

from __future__ import annotations

import math
import statistics

from bench.peers.spec import TITLES, WORKLOADS, Result

# the peers each jobwheel figure is held against (the backend classes)
REFERENCES = {
    "embedded": ("huey/SQLite",),
    "server": ("arq", "dramatiq"),
    "postgres": ("pgqueuer",),
    "baseline": ("grpc.aio echo",),
}
# which references a jobwheel system's ratios use, by its own backend class
COMPARED = {
    "embedded": ("embedded", "server", "baseline"),
    "postgres": ("postgres", "server", "baseline"),
}

Runs = dict[tuple[str, str], list[Result]]  # (system, workload) -> one Result per round


def median(results: list[Result]) -> Result:
    """Per key, the median over the rounds that reported it (NaN dropped)."""
    keys = {k for r in results for k in r}
    out: Result = {}
    for key in sorted(keys):
        values = [r[key] for r in results if key in r and not math.isnan(r[key])]
        out[key] = statistics.median(values) if values else math.nan
    return out


def _ms(value: float) -> str:
    """Milliseconds: a tenth below 10 ms, where whole ones would round sub-ms lateness to 0."""
    return f"{value:.1f}" if value < 10 else f"{value:,.0f}"


def cell(workload: str, result: Result | None) -> str:
    if result is None:
        return "-"
    if workload != "w4":
        rate = result.get("rate", math.nan)
        return "failed" if math.isnan(rate) else f"{rate:,.0f}"
    if math.isnan(result.get("p99", math.nan)):
        return "failed"
    text = f"{_ms(result['p50'])}/{_ms(result['p99'])} ({result.get('early', 0):.0f} early"
    missed = result.get("missed", 0)
    return text + (f", {missed:.0f} missed)" if missed else ")")


def ratio(workload: str, ours: Result | None, refs: list[Result]) -> str:
    """ours / best reference (rates); best reference p99 / ours (lateness): > 1 is ahead."""
    key = "p99" if workload == "w4" else "rate"
    mine = math.nan if ours is None else ours.get(key, math.nan)
    theirs = [r[key] for r in refs if not math.isnan(r.get(key, math.nan))]
    if math.isnan(mine) or not theirs or mine <= 0:
        return "-"
    best = min(theirs) if workload == "w4" else max(theirs)
    return f"{(best / mine if workload == 'w4' else mine / best):.2f}x"


def render(systems: list[tuple[str, str]], medians: dict[tuple[str, str], Result]) -> str:
    """`systems`: (name, backend class) in print order. Rows of figures, then ratio rows for
    each jobwheel system against the best reference peer of each class it is compared with."""
    header = ["system", *(TITLES[w] for w in WORKLOADS)]
    body = [[name, *(cell(w, medians.get((name, w))) for w in WORKLOADS)] for name, _ in systems]
    for name, backend in systems:
        if not name.startswith("jobwheel"):
            continue
        for cls in COMPARED.get(backend, ()):
            refs = REFERENCES[cls]
            ratios = [
                ratio(
                    w, medians.get((name, w)), [medians[(p, w)] for p in refs if (p, w) in medians]
                )
                for w in WORKLOADS
            ]
            if any(r != "-" for r in ratios):
                body.append([f"{name} vs {' / '.join(refs)}", *ratios])
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    lines = [fmt(header), "| " + " | ".join("-" * w for w in widths) + " |"]
    return "\n".join([*lines, *(fmt(line) for line in body)])
