"""Properties of the real `Scheduler` on virtual time, over random schedules.

For random sets of interval entries (periods 1..600 s) and cron entries, with job durations
from 0 to twice the period, shared slots and some tight timeouts, a few virtual hours of the
real scheduler must show: no entry running concurrently with itself, no busy loop, every
firing either a start or a skip, heap pops in non-decreasing due order, reschedules never in
the past and never more than one interval ahead, and cron firings on wall-clock slots.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from property_tests.profiles import scaled
from reference.clock import MONOTONIC_BASE
from reference.counters import SEGMENT_SIZE, BufferCounters
from reference.records import LogEvent
from reference.runner import Runner, Slots
from reference.schedule import ScheduleEntry
from reference.scheduler import Scheduler
from reference.triggers import MIN_CRON_SLEEP, CronSchedule
from sim.clock import SimClock
from sim.loop import BusyLoopDetected, LoopStats, SimEventLoop
from sim.offload import InlineOffload
from sim.trace import HostObserver, Trace
from tests.unit.engine_jobs import JOURNAL, timed_job

if TYPE_CHECKING:
    from reference.clock import Clock
    from reference.scheduler import EntryState

HOURS = 3.0
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# Far above what a legitimate instant needs, far below a spin; the loop raises
# BusyLoopDetected past it, so a regression fails fast instead of grinding.
STEP_LIMIT = 2_000
CRONS = {"* * * * *": 60.0, "*/2 * * * *": 120.0, "*/5 * * * *": 300.0}
END_EVENTS = frozenset(
    {LogEvent.JOB_SUCCEEDED.value, LogEvent.JOB_FAILED.value, LogEvent.JOB_TIMED_OUT.value}
)


@dataclass(frozen=True)
class Pop:
    """One entry taken off the heap: when, its due time, the next due time, which entry."""

    now: float
    due: float
    next_due: float
    name: str


class RecordingScheduler(Scheduler):
    """The real scheduler, noting every heap pop through the public `next_run` hook.

    Each pop calls `next_run` exactly once, directly for a start or via `on_overlap` for a
    skip, so the pops seen here are the entries' firings in heap order.
    """

    def __init__(self, *args: Any, clock: Clock, **kwargs: Any) -> None:
        super().__init__(*args, clock=clock, **kwargs)
        self.test_clock = clock
        self.pops: list[Pop] = []

    def next_run(self, state: EntryState, due: float) -> float:
        nxt = super().next_run(state, due)
        self.pops.append(Pop(self.test_clock.monotonic(), due, nxt, state.entry.name))
        return nxt


@dataclass(frozen=True)
class Spec:
    """One generated entry: interval `period` or a cron expression, and its job's shape."""

    name: str
    period: float
    cron: str | None
    duration: float
    timeout: float

    def entry(self) -> ScheduleEntry:
        job = timed_job(self.name, self.duration)
        if self.cron is None:
            return ScheduleEntry(
                name=self.name, job_class=job, every=self.period, timeout=self.timeout, worker=1
            )
        return ScheduleEntry(
            name=self.name,
            job_class=job,
            cron=CronSchedule(self.cron, ZoneInfo("UTC")),
            timeout=self.timeout,
            worker=1,
        )


@st.composite
def specs(draw: st.DrawFn) -> list[Spec]:
    n = draw(st.integers(1, 4))
    out: list[Spec] = []
    for i in range(n):
        cron = draw(st.none() | st.sampled_from(sorted(CRONS)))
        period = CRONS[cron] if cron is not None else float(draw(st.integers(1, 600)))
        duration = period * draw(st.integers(0, 20)) / 10.0  # 0 .. 2x the period
        tight = draw(st.booleans()) and duration > 0
        timeout = max(duration / 2, 0.5) if tight else 2 * period + 1
        out.append(Spec(f"e{i}", period, cron, duration, timeout))
    return out


@dataclass
class Outcome:
    scheduler: RecordingScheduler
    trace: Trace
    stats: LoopStats
    counters: BufferCounters
    epoch_seconds: float


def simulate(entries: list[Spec], *, seed: int, concurrency: int, phase: float) -> Outcome:
    epoch = EPOCH + timedelta(seconds=phase)

    async def main() -> Outcome:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, SimEventLoop)
        clock = SimClock(loop, epoch)
        trace = Trace(lambda: loop.now_ns)
        counters = BufferCounters(bytearray(SEGMENT_SIZE), 0, 1)
        observer = HostObserver(trace, 1)
        runner = Runner(
            clock=clock, offload=InlineOffload(), counters=counters, observer=observer, worker=1
        )
        scheduler = RecordingScheduler(
            [s.entry() for s in entries],
            clock=clock,
            rng=random.Random(seed),
            runner=runner,
            slots=Slots(concurrency),
            counters=counters,
            observer=observer,
        )
        stopping = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(scheduler.run(stopping, tasks))
            await asyncio.sleep(HOURS * 3600)
            stopping.set()
        return Outcome(scheduler, trace, loop.stats, counters, epoch.timestamp())

    factory = functools.partial(SimEventLoop, max_steps_per_instant=STEP_LIMIT)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


@settings(max_examples=scaled(30), deadline=None)
@given(
    entries=specs(),
    seed=st.integers(0, 2**32 - 1),
    concurrency=st.integers(1, 3),
    phase=st.floats(0.0, 3600.0, allow_nan=False),
)
def test_scheduler_properties(
    entries: list[Spec], seed: int, concurrency: int, phase: float
) -> None:
    JOURNAL.reset()
    out = simulate(entries, seed=seed, concurrency=concurrency, phase=phase)
    JOURNAL.reset()
    sched, trace = out.scheduler, out.trace
    by_name = {s.name: s for s in entries}

    # An entry never runs concurrently with itself: per label, starts and ends alternate.
    open_runs: dict[str, bool] = {}
    starts: Counter[str] = Counter()
    for record in trace.records:
        label = record.get("label")
        if record.event == LogEvent.JOB_STARTED.value:
            assert isinstance(label, str)
            assert not open_runs.get(label), f"{label} started while running at {record.ns}"
            open_runs[label] = True
            starts[label] += 1
        elif record.event in END_EVENTS:
            assert isinstance(label, str)
            assert open_runs.get(label), f"{label} ended without running"
            open_runs[label] = False
    assert not any(open_runs.values())  # the stop waited for every run

    # Never a busy loop: few loop iterations at any one virtual instant.
    assert out.stats.max_steps_at_one_instant <= 20 + 10 * len(entries), out.stats

    # Every firing is a start or a skip, and both are counted.
    fires = Counter(p.name for p in sched.pops)
    skipped = Counter(str(r.get("entry")) for r in trace.of(LogEvent.JOB_SKIPPED.value))
    for state in sched.states:
        name = state.entry.name
        assert state.runs + state.skips == fires[name]
        assert state.skips == skipped[name]
        # A run still waiting for a slot when stop() came is dropped, at most one per entry.
        assert state.runs - starts[name] in (0, 1)
        assert fires[name] >= 1
    assert out.counters.snapshot().total_skips == sum(skipped.values())

    # Heap order, and rescheduling never in the past nor more than one interval ahead.
    previous_due = float("-inf")
    for pop in sched.pops:
        assert pop.due >= previous_due, "heap popped out of order"
        previous_due = pop.due
        assert pop.due <= pop.now + 1e-9, "popped before due"
        assert pop.next_due > pop.due
        assert pop.next_due >= pop.now
        spec = by_name[pop.name]
        if spec.cron is None:
            assert pop.next_due <= pop.now + spec.period + 1e-6
            on_cadence = abs(pop.next_due - (pop.due + spec.period)) < 1e-6
            restarted = abs(pop.next_due - (pop.now + spec.period)) < 1e-6
            assert on_cadence or restarted
        else:
            assert pop.next_due - pop.now >= MIN_CRON_SLEEP - 1e-9
            assert pop.next_due - pop.now <= spec.period + 1e-6

    # Cron entries fire on their wall-clock slots (after the jittered first run).
    for spec in entries:
        if spec.cron is None:
            continue
        own = [p for p in sched.pops if p.name == spec.name]
        for pop in own[1:]:
            wall = out.epoch_seconds + (pop.now - MONOTONIC_BASE)
            offset = wall % spec.period
            assert min(offset, spec.period - offset) < 1e-4, (spec, wall)


def test_the_property_catches_the_060_busy_loop() -> None:
    """The 0.6.0 skip branch (re-push without reschedule) must fail these properties."""
    from sim.mutants import MUTANTS

    mutant = next(m for m in MUTANTS if m.name == "overlap_skip_no_reschedule")
    spec = [Spec("slow", 60.0, "* * * * *", 150.0, 200.0)]
    simulate(spec, seed=1, concurrency=2, phase=30.0)  # the real code: fine
    with mutant.applied(), pytest.raises(BusyLoopDetected, match="busy loop"):
        simulate(spec, seed=1, concurrency=2, phase=30.0)
