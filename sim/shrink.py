"""Shrink a failing swarm world to a smaller one that still fails.

Greedy delta debugging over `SwarmSpec`: try removing each crash, drop, clock step, fault
site and schedule entry, then shrinking the numbers (workers, jobs, hours, retries,
concurrency, shares), keeping every change after which the same seed still fails, until a
whole pass changes nothing. The result is printed as JSON that `python -m sim run swarm
--seed S --spec JSON` replays exactly.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from sim.scenario import Scenario, run_scenario
from sim.scenarios import swarm

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sim.scenario import Outcome
    from sim.scenarios.swarm import SwarmSpec


def scenario_for(spec: SwarmSpec) -> Scenario:
    """The swarm scenario pinned to one world description."""
    return dataclasses.replace(swarm.SCENARIO, make_world=lambda seed: swarm.make_world(seed, spec))


def run_spec(spec: SwarmSpec, seed: int) -> Outcome:
    return run_scenario(scenario_for(spec), seed)


def _with(spec: SwarmSpec, **changes: Any) -> SwarmSpec:
    return dataclasses.replace(spec, **changes)


def _fit_workers(spec: SwarmSpec, workers: int) -> SwarmSpec:
    return _with(
        spec,
        workers=workers,
        entries=tuple(e for e in spec.entries if e.worker <= workers),
        crashes=tuple(c for c in spec.crashes if c[1] <= workers),
        drops=tuple(d for d in spec.drops if d[1] <= workers),
    )


def candidates(spec: SwarmSpec) -> Iterator[SwarmSpec]:
    """Smaller variants of `spec`, most drastic first."""
    for name in ("crashes", "drops", "skew", "faults", "entries"):
        items = getattr(spec, name)
        if items:
            yield _with(spec, **{name: ()})
        for i in range(len(items)):
            yield _with(spec, **{name: items[:i] + items[i + 1 :]})
    if spec.workers > 1:
        yield _fit_workers(spec, 1)
        yield _fit_workers(spec, spec.workers - 1)
    if spec.jobs > 1:
        yield _with(spec, jobs=spec.jobs // 2)
        yield _with(spec, jobs=spec.jobs - 1)
    if spec.hours > 1.0:
        yield _with(spec, hours=1.0)
    for name, floor in (("concurrency", 1), ("retry", 0), ("bulk_every", 0)):
        if getattr(spec, name) > floor:
            yield _with(spec, **{name: floor})
    for name in ("delayed_share", "fail_share", "slow_share"):
        if getattr(spec, name) > 0:
            yield _with(spec, **{name: 0.0})


def shrink(
    spec: SwarmSpec,
    seed: int,
    *,
    fails: Callable[[SwarmSpec], bool] | None = None,
    max_runs: int = 400,
) -> tuple[SwarmSpec, int]:
    """Return the smallest failing variant found and the number of runs it took."""
    still_fails = fails or (lambda s: not run_spec(s, seed).ok)
    runs = 0
    changed = True
    while changed and runs < max_runs:
        changed = False
        for candidate in candidates(spec):
            runs += 1
            if still_fails(candidate):
                spec = candidate
                changed = True
                break
            if runs >= max_runs:
                break
    return spec, runs


def size(spec: SwarmSpec) -> int:
    """A rough measure of a world's size, for reports and tests."""
    return (
        spec.workers
        + spec.jobs
        + len(spec.entries)
        + len(spec.crashes)
        + len(spec.drops)
        + len(spec.skew)
        + len(spec.faults)
        + spec.retry
        + spec.concurrency
    )
