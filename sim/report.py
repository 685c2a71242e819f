"""The report table printed by `python -m sim` and `python -m sim mutants`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sim.scenario import Outcome


def _human(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()

    lines = [fmt(header), fmt(["-" * w for w in widths])]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)


def catalog_report(results: dict[str, list[Outcome]]) -> str:
    """One row per scenario over all its seeds."""
    rows = []
    for name, outcomes in results.items():
        virtual = sum(o.virtual_seconds for o in outcomes)
        wall = sum(o.wall_seconds for o in outcomes)
        failed = [o for o in outcomes if not o.ok]
        rows.append(
            [
                name,
                str(len(outcomes)),
                _human(virtual),
                f"{wall:.2f} s",
                f"{virtual / wall:,.0f}x" if wall > 0 else "-",
                f"{sum(o.events for o in outcomes):,}",
                str(sum(len(o.checks) for o in outcomes)),
                "ok" if not failed else f"FAIL ({len(failed)} seeds)",
            ]
        )
    header = ["scenario", "seeds", "virtual", "wall", "ratio", "events", "checks", "result"]
    return table(rows, header)


def timing_line(o: Outcome) -> str:
    """Wall time and compression ratio: differs run to run, so it goes to stderr."""
    return (
        f"{o.scenario} seed {o.seed}: {_human(o.virtual_seconds)} virtual "
        f"({o.virtual_seconds:.0f} s) in {o.wall_seconds:.3f} s wall, ratio {o.ratio:,.0f}x"
    )


def outcome_summary(o: Outcome) -> str:
    """The deterministic part of a run's report: size, digest and every check."""
    lines = [
        f"{o.scenario} seed {o.seed}: {o.virtual_seconds:.3f} virtual s, {o.events:,} events, "
        f"trace digest {o.digest[:16]}"
    ]
    for c in o.checks:
        detail = f": {c.detail}" if c.detail else ""
        lines.append(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}{detail}")
    if o.error is not None:
        lines.append(f"  [FAIL] run completes: {shorten(o.error, 400)}")
    lines.append("  result: " + ("ok" if o.ok else "VIOLATION"))
    return "\n".join(lines)


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
