"""`python -m sim`: the catalog (default), `list`, `run NAME --seed S [--trace]`, `mutants`.

Exit status 1 on any violation (or, for `mutants`, any mutant not caught); each violation
prints the exact command that replays it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from sim.mutants import MUTANTS
from sim.report import catalog_report, outcome_summary, shorten, table, timing_line
from sim.scenario import run_scenario
from sim.scenarios import CATALOG, by_name

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sim.scenario import Outcome


def _catalog(names: Sequence[str] | None) -> int:
    scenarios = CATALOG if not names else tuple(by_name(n) for n in names)
    results: dict[str, list[Outcome]] = {}
    for scenario in scenarios:
        results[scenario.name] = [run_scenario(scenario, seed) for seed in scenario.seeds]
    print(catalog_report(results))
    failures = [o for outcomes in results.values() for o in outcomes if not o.ok]
    for o in failures:
        print()
        print(outcome_summary(o))
        print(f"  replay: {o.replay_command()}")
    return 1 if failures else 0


def _run(name: str, seed: int, trace: bool) -> int:
    outcome = run_scenario(by_name(name), seed, keep_trace=trace)
    if trace:
        for line in outcome.trace:
            print(line)
    print(outcome_summary(outcome), flush=True)
    print(timing_line(outcome), file=sys.stderr)
    if not outcome.ok:
        print(f"  replay: {outcome.replay_command()}")
    return 0 if outcome.ok else 1


def _mutants() -> int:
    """Apply each mutant, run its scenarios on every default seed, report the catches."""
    rows = []
    caught_count = 0
    for mutant in MUTANTS:
        seeds = caught = 0
        first = ""
        with mutant.applied():
            for name in mutant.caught_by:
                scenario = by_name(name)
                for seed in scenario.seeds:
                    outcome = run_scenario(scenario, seed)
                    seeds += 1
                    if not outcome.ok:
                        caught += 1
                        if not first:
                            v = outcome.violations[0]
                            first = f"{name}: {v.name} ({shorten(v.detail, 50)})"
        caught_count += bool(caught)
        result = f"caught {caught}/{seeds} seeds" if caught else "MISSED"
        rows.append([mutant.name, result, first or mutant.restores])
    print(table(rows, ["mutant", "result", "first violation"]))
    print(f"\nmutation score: {caught_count}/{len(MUTANTS)} caught")
    return 0 if caught_count == len(MUTANTS) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("list", help="list the scenarios")
    run = sub.add_parser("run", help="run one scenario on one seed")
    run.add_argument("name")
    run.add_argument("--seed", type=int, required=True)
    run.add_argument("--trace", action="store_true", help="print the trace first")
    sub.add_parser("mutants", help="re-introduce known bugs; each must be caught")
    cat = sub.add_parser("catalog", help="run the catalog (the default)")
    cat.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for scenario in CATALOG:
                print(f"{scenario.name:<28} {scenario.summary} (seeds {list(scenario.seeds)})")
            return 0
        if args.command == "run":
            return _run(args.name, args.seed, args.trace)
        if args.command == "mutants":
            return _mutants()
        return _catalog(getattr(args, "names", None))
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BrokenPipeError:  # `| head`: the reader left; that is not an error
        sys.stderr.close()
        raise SystemExit(0) from None
