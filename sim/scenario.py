"""`Scenario`, `Check`, `Outcome` and `run_scenario`: one seeded run, checked.

A scenario drives a `World` (its `main`) and then judges it (its `checks`). A run that
raises out of the loop (`BusyLoopDetected`, `SimulationStalled`, a runtime bug) is itself
a violation, and the checks still run on what the trace holds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sim.loop import BusyLoopDetected, SimulationStalled
from sim.world import World

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


@dataclass(frozen=True, slots=True)
class Check:
    """One invariant's verdict on one run."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named, seeded simulation with its invariants."""

    name: str
    summary: str
    seeds: tuple[int, ...]
    main: Callable[[World], Awaitable[None]]
    checks: Callable[[World], list[Check]]
    make_world: Callable[[int], World] = World


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one run: timings, size, verdicts and the trace digest."""

    scenario: str
    seed: int
    virtual_seconds: float
    wall_seconds: float
    events: int
    checks: tuple[Check, ...]
    error: str | None
    digest: str
    trace: tuple[str, ...] = field(default=())

    @property
    def violations(self) -> list[Check]:
        bad = [c for c in self.checks if not c.ok]
        if self.error is not None:
            bad.insert(0, Check("run completes", False, self.error))
        return bad

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def ratio(self) -> float:
        return self.virtual_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def replay_command(self) -> str:
        return f"python -m sim run {self.scenario} --seed {self.seed} --trace"


def describe(exc: BaseException) -> str:
    """`Type: message`, with the leaves of an exception group spelled out."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def run_scenario(scenario: Scenario, seed: int, *, keep_trace: bool = False) -> Outcome:
    """Run `scenario` on `seed` and check it; the same seed gives the same trace."""
    world = scenario.make_world(seed)
    error: str | None = None
    started = time.perf_counter()
    try:
        try:
            world.run(scenario.main)
        except BusyLoopDetected as exc:
            error = f"busy loop: {exc}"
        except SimulationStalled as exc:
            error = f"stalled: {exc}"
        except (Exception, SystemExit, asyncio.CancelledError) as exc:  # a runtime bug
            # SystemExit too: a job's sys.exit() that escapes the job boundary ends the
            # loop (and, in production, the worker); it must be a violation, not our exit.
            # So is a CancelledError escaping a run (a mutant's unowned cancellation).
            error = describe(exc)
        wall = time.perf_counter() - started
        reads = sorted(set(world.real_reads))
        died = [f"host {h.index}: {e}" for h in world.hosts for e in h.failures]
        checks = (
            *scenario.checks(world),
            Check("no worker died of an error", not died, "; ".join(died[:3])),
            Check(
                "runtime read no real clock or global random",
                not reads,
                ", ".join(reads[:5]),
            ),
        )
        return Outcome(
            scenario=scenario.name,
            seed=seed,
            virtual_seconds=world.now(),
            wall_seconds=wall,
            events=len(world.trace),
            checks=checks,
            error=error,
            digest=world.trace.digest(),
            trace=tuple(world.trace.lines()) if keep_trace else (),
        )
    finally:
        world.close()
