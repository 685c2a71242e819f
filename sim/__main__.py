"""`python -m sim`: the catalog (default), `list`, `run NAME --seed S [--trace]`, `mutants`,
and `soak --minutes N [--scenario NAME]` (fresh seeds past the defaults until time is up).

Exit status 1 on any violation (or, for `mutants`, any mutant not caught); each violation
prints the exact command that replays it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import TYPE_CHECKING

from sim.mutants import MUTANTS
from sim.report import catalog_report, outcome_summary, shorten, table, timing_line
from sim.scenario import Outcome, describe, run_scenario
from sim.scenarios import CATALOG, by_name

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sim.scenario import Scenario


def _run_guarded(scenario: Scenario, seed: int) -> Outcome:
    """`run_scenario`, with a CancelledError escaping the run reported as a violation.

    `run_scenario` turns Exception and SystemExit from the run into a violation, but a
    CancelledError (a BaseException) that escapes `main` would end the whole command; here
    it becomes a failing outcome instead (seen under cancel_swallower_holds_its_slot).
    """
    started = time.perf_counter()
    try:
        return run_scenario(scenario, seed)
    except asyncio.CancelledError as exc:
        return Outcome(
            scenario=scenario.name,
            seed=seed,
            virtual_seconds=0.0,
            wall_seconds=time.perf_counter() - started,
            events=0,
            checks=(),
            error=f"escaped the run: {describe(exc)}",
            digest="",
        )


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


def _soak(minutes: float, name: str, start: int | None) -> int:
    """Run seeds of `name` from `start` (default: past its default seeds) for `minutes`.

    Always runs at least one seed. Each failing seed prints its violations and replay
    command as it is found; the summary line (seeds, seeds/min) goes last.
    """
    scenario = by_name(name)
    seed = max(scenario.seeds) + 1 if start is None else start
    first = seed
    started = time.perf_counter()
    deadline = started + minutes * 60.0
    failures: list[int] = []
    while True:
        outcome = _run_guarded(scenario, seed)
        if not outcome.ok:
            failures.append(seed)
            print(f"{name} seed {seed}: VIOLATION (trace digest {outcome.digest[:16]})")
            for v in outcome.violations:
                detail = f": {shorten(v.detail, 400)}" if v.detail else ""
                print(f"  [FAIL] {v.name}{detail}")
            print(f"  replay: {outcome.replay_command()}", flush=True)
        seed += 1
        if time.perf_counter() >= deadline:
            break
    wall = time.perf_counter() - started
    ran = seed - first
    print(
        f"soak {name}: {ran} seeds ({first}..{seed - 1}) in {wall:.1f} s, "
        f"{ran / wall * 60:.1f} seeds/min, {len(failures)} failed"
        + (f": {failures[:20]}" if failures else "")
    )
    return 1 if failures else 0


def _run(name: str, seed: int, trace: bool, spec: str | None = None) -> int:
    scenario = by_name(name)
    if spec is not None:
        if name != "swarm":
            print("error: --spec applies to the swarm scenario only", file=sys.stderr)
            return 2
        from sim.scenarios.swarm import SwarmSpec
        from sim.shrink import scenario_for

        scenario = scenario_for(SwarmSpec.from_json(spec))
    outcome = run_scenario(scenario, seed, keep_trace=trace)
    if trace:
        for line in outcome.trace:
            print(line)
    print(outcome_summary(outcome), flush=True)
    print(timing_line(outcome), file=sys.stderr)
    if not outcome.ok and spec is None:
        print(f"  replay: {outcome.replay_command()}")
    return 0 if outcome.ok else 1


def _shrink(name: str, seed: int) -> int:
    if name != "swarm":
        print("error: shrinking works on the swarm scenario's worlds", file=sys.stderr)
        return 2
    from sim.scenarios.swarm import SCENARIO, spec_for
    from sim.shrink import run_spec, shrink, size

    spec = spec_for(seed)
    first = run_spec(spec, seed)
    if first.ok:
        print(f"swarm seed {seed} passes; nothing to shrink")
        return 0
    print(f"swarm seed {seed} fails ({first.violations[0].name}); world size {size(spec)}")
    small, runs = shrink(spec, seed)
    final = run_spec(small, seed)
    still = final.violations[0].name if final.violations else "(no longer fails)"
    print(f"shrunk to size {size(small)} in {runs} runs; still fails: {still}")
    world = small.to_json()
    print(f"world: {world}")
    print(f"replay: python -m sim run {SCENARIO.name} --seed {seed} --spec '{world}' --trace")
    return 1


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
                    outcome = _run_guarded(scenario, seed)
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
    run.add_argument("--spec", help="swarm only: the world as JSON (from `shrink`)")
    shrink = sub.add_parser("shrink", help="reduce a failing swarm seed to a smaller world")
    shrink.add_argument("name")
    shrink.add_argument("--seed", type=int, required=True)
    sub.add_parser("mutants", help="re-introduce known bugs; each must be caught")
    soak = sub.add_parser("soak", help="run fresh seeds until the time is up")
    soak.add_argument("--minutes", type=float, required=True, help="wall time (may be 0.1)")
    soak.add_argument("--scenario", default="swarm", help="scenario name (default: swarm)")
    soak.add_argument("--start", type=int, help="first seed (default: past the default seeds)")
    cat = sub.add_parser("catalog", help="run the catalog (the default)")
    cat.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for scenario in CATALOG:
                print(f"{scenario.name:<28} {scenario.summary} (seeds {list(scenario.seeds)})")
            return 0
        if args.command == "run":
            return _run(args.name, args.seed, args.trace, args.spec)
        if args.command == "shrink":
            return _shrink(args.name, args.seed)
        if args.command == "mutants":
            return _mutants()
        if args.command == "soak":
            if not args.minutes >= 0:  # also refuses NaN
                print("error: --minutes must be >= 0", file=sys.stderr)
                return 2
            return _soak(args.minutes, args.scenario, args.start)
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
