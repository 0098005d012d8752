"""Result rows and the printed table."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    scenario: str
    figure: str
    baseline: str = "-"
    ratio: str = "-"
    target: str = "-"
    met: bool | None = None
    notes: list[str] = field(default_factory=list)


def rate(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}"


def millis(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def table(rows: list[Row]) -> str:
    """A GitHub-flavoured Markdown table (readable as plain text too)."""
    header = ("scenario", "jobwheel", "baseline (same run)", "ratio", "target", "met")
    body = [
        (
            r.scenario,
            r.figure,
            r.baseline,
            r.ratio,
            r.target,
            "-" if r.met is None else ("yes" if r.met else "NO"),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]

    def fmt(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    lines = [fmt(header), "| " + " | ".join("-" * w for w in widths) + " |"]
    lines += [fmt(line) for line in body]
    return "\n".join(lines)


def notes(rows: list[Row]) -> str:
    return "\n".join(f"- {r.scenario}: {n}" for r in rows for n in r.notes)
