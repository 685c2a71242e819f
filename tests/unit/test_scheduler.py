"""The scheduler on virtual time: first runs, cadence, overlap skips, cron slots, the shared
semaphore, per-entry timeouts and graceful stop, driven through the real `Worker`."""

from __future__ import annotations

import asyncio
import random
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest

from reference.clock import MONOTONIC_BASE
from reference.counters import SEGMENT_SIZE, BufferCounters
from reference.records import LogEvent
from reference.registry import default_registry
from reference.runtime import Runtime, Worker
from reference.schedule import ScheduleEntry
from reference.triggers import CronSchedule
from sim.clock import SimClock, SkewProgram
from sim.offload import InlineOffload
from sim.trace import HostObserver, Trace
from tests.unit.engine_jobs import JOURNAL, Journal, run_virtual, timed_job

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sim.loop import SimEventLoop

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
UTC_ZONE = ZoneInfo("UTC")


@pytest.fixture(autouse=True)
def journal() -> Iterator[Journal]:
    JOURNAL.reset()
    yield JOURNAL
    JOURNAL.reset()


def every(name: str, period: float, seconds: float, *, timeout: float = 600.0) -> ScheduleEntry:
    return ScheduleEntry(
        name=name, job_class=timed_job(name, seconds), every=period, timeout=timeout, worker=1
    )


def cron(name: str, expr: str, seconds: float) -> ScheduleEntry:
    return ScheduleEntry(
        name=name,
        job_class=timed_job(name, seconds),
        cron=CronSchedule(expr, UTC_ZONE),
        timeout=600.0,
        worker=1,
    )


def jitters(seed: int, *caps: float) -> list[float]:
    """The startup jitters the scheduler draws, one `rng.random()` per entry in order."""
    rng = random.Random(seed)
    return [cap * rng.random() for cap in caps]


class Rig:
    """One real `Worker` (schedule only) on the running virtual loop."""

    def __init__(
        self,
        entries: list[ScheduleEntry],
        *,
        seed: int = 7,
        concurrency: int = 2,
        epoch: datetime = EPOCH,
        skew: SkewProgram | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        assert hasattr(loop, "now_ns")
        self.loop: SimEventLoop = loop  # type: ignore[assignment]
        self.clock = SimClock(loop, epoch, skew)
        self.trace = Trace(lambda: self.loop.now_ns)
        self.counters = BufferCounters(bytearray(SEGMENT_SIZE), 0, 1)
        runtime = Runtime(
            clock=self.clock,
            rng=random.Random(seed),
            registry=default_registry,
            offload=InlineOffload(),
            counters=self.counters,
            observer=HostObserver(self.trace, 1),
        )
        self.worker = Worker(runtime, index=1, entries=entries, concurrency=concurrency)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.worker.run())

    async def run_for(self, seconds: float) -> None:
        self.start()
        await asyncio.sleep(seconds)
        await self.stop()

    async def stop(self) -> float:
        """Stop the worker and return the loop time at which `Worker.run` returned."""
        assert self.task is not None
        self.worker.stop()
        await self.task
        return self.loop.time()

    def times(self, event: LogEvent, name: str) -> list[float]:
        key = "entry" if event is LogEvent.JOB_SKIPPED else "label"
        return [r.ns / 1e9 for r in self.trace.of(event.value) if r.get(key) == name]


def approx_list(values: list[float]) -> object:
    return pytest.approx(values, abs=1e-6)


# -- interval entries ------------------------------------------------------------------------


def test_interval_first_run_is_start_plus_jitter_plus_every_then_fixed_cadence() -> None:
    async def main() -> Rig:
        rig = Rig([every("tick", 10.0, 1.0)], seed=11)
        await rig.run_for(100.0)
        return rig

    rig = run_virtual(main)
    (j,) = jitters(11, 5.0)
    first = 10.0 + j
    expected = [first + 10.0 * k for k in range(10) if first + 10.0 * k < 100.0]
    assert rig.times(LogEvent.JOB_STARTED, "tick") == approx_list(expected)
    assert rig.times(LogEvent.JOB_SUCCEEDED, "tick") == approx_list([t + 1.0 for t in expected])
    assert rig.times(LogEvent.JOB_SKIPPED, "tick") == []


def test_short_interval_jitter_is_capped_by_the_period() -> None:
    async def main() -> Rig:
        rig = Rig([every("fast", 2.0, 0.0), every("slow", 60.0, 0.0)], seed=3)
        await rig.run_for(70.0)
        return rig

    rig = run_virtual(main)
    j_fast, j_slow = jitters(3, 2.0, 5.0)
    assert rig.times(LogEvent.JOB_STARTED, "fast")[0] == pytest.approx(2.0 + j_fast, abs=1e-6)
    assert rig.times(LogEvent.JOB_STARTED, "slow") == approx_list([60.0 + j_slow])


def test_same_seed_same_first_runs_different_seed_different() -> None:
    def firsts(seed: int) -> float:
        async def main() -> Rig:
            rig = Rig([every("e", 30.0, 0.0)], seed=seed)
            await rig.run_for(40.0)
            return rig

        return run_virtual(main).times(LogEvent.JOB_STARTED, "e")[0]

    assert firsts(5) == firsts(5)
    assert firsts(5) != firsts(6)


def test_run_longer_than_interval_skips_and_reschedules_without_burst() -> None:
    async def main() -> Rig:
        rig = Rig([every("long", 10.0, 25.0)], seed=2)
        await rig.run_for(200.0)
        return rig

    rig = run_virtual(main)
    (j,) = jitters(2, 5.0)
    fires = [10.0 + j + 10.0 * k for k in range(30) if 10.0 + j + 10.0 * k < 200.0]
    starts: list[float] = []
    skips: list[float] = []
    for t in fires:
        if starts and t < starts[-1] + 25.0:
            skips.append(t)
        else:
            starts.append(t)
    assert rig.times(LogEvent.JOB_STARTED, "long") == approx_list(starts)
    assert rig.times(LogEvent.JOB_SKIPPED, "long") == approx_list(skips)
    # Runs start only on the cadence, never when the long run ends (no catch-up burst).
    ends = rig.times(LogEvent.JOB_SUCCEEDED, "long")
    assert not {round(t, 6) for t in ends} & {round(t, 6) for t in starts}
    assert rig.counters.snapshot().total_skips == len(skips)
    state = rig.worker.scheduler.states[0]
    assert (state.runs, state.skips) == (len(starts), len(skips))


def test_next_run_after_a_stall_resumes_from_now_not_in_a_burst() -> None:
    async def main() -> tuple[float, float]:
        rig = Rig([every("e", 10.0, 0.0)])
        await asyncio.sleep(100.0)
        state = rig.worker.scheduler.states[0]
        late = rig.worker.scheduler.next_run(state, MONOTONIC_BASE + 5.0)  # 9 periods behind
        on_time = rig.worker.scheduler.next_run(state, MONOTONIC_BASE + 95.0)
        return late - MONOTONIC_BASE, on_time - MONOTONIC_BASE

    late, on_time = run_virtual(main)
    assert late == pytest.approx(110.0)
    assert on_time == pytest.approx(105.0)


# -- cron entries ----------------------------------------------------------------------------


def test_cron_fires_on_wall_slots_with_the_min_sleep_floor() -> None:
    # 50 ms before a minute boundary: the first delay is floored to 0.1 s, not 0.05 s.
    epoch = datetime(2026, 1, 1, 0, 0, 59, 950_000, tzinfo=UTC)

    async def main() -> Rig:
        rig = Rig([cron("minutely", "* * * * *", 1.0)], seed=4, epoch=epoch)
        await rig.run_for(250.0)
        return rig

    rig = run_virtual(main)
    (j,) = jitters(4, 5.0)
    starts = rig.times(LogEvent.JOB_STARTED, "minutely")
    assert starts[0] == pytest.approx(0.1 + j, abs=1e-6)
    assert starts[1:] == approx_list([60.05, 120.05, 180.05, 240.05])
    for t in starts[1:]:
        wall = epoch.timestamp() + t
        assert wall == pytest.approx(round(wall / 60.0) * 60.0, abs=1e-6)  # on the minute


def test_cron_never_fires_one_slot_twice_when_the_wall_clock_steps_back() -> None:
    epoch = datetime(2026, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)
    # At t=100 the wall clock steps back 30 s (NTP): the 00:02:00 slot, scheduled before the
    # step, then fires at wall 00:01:30; it must not fire again when the wall reaches 00:02.
    skew = SkewProgram([(100.0, -30.0)])

    async def main() -> Rig:
        rig = Rig([cron("c", "* * * * *", 0.0)], seed=9, epoch=epoch, skew=skew)
        await rig.run_for(280.0)
        return rig

    rig = run_virtual(main)
    (j,) = jitters(9, 5.0)
    assert rig.times(LogEvent.JOB_STARTED, "c") == approx_list([59.5 + j, 119.5, 209.5, 269.5])


def test_cron_overlap_skips_and_keeps_slots() -> None:
    epoch = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)

    async def main() -> Rig:
        rig = Rig([cron("slow", "* * * * *", 150.0)], seed=1, epoch=epoch)
        await rig.run_for(600.0)
        return rig

    rig = run_virtual(main)
    starts = rig.times(LogEvent.JOB_STARTED, "slow")
    skips = rig.times(LogEvent.JOB_SKIPPED, "slow")
    # A start every third slot, skips at the two slots in between, all on wall minutes.
    assert starts[1:] == approx_list([210.0, 390.0, 570.0])
    assert skips == approx_list([90.0, 150.0, 270.0, 330.0, 450.0, 510.0])
    assert rig.counters.snapshot().total_skips == 6


# -- concurrency, timeouts, stop -------------------------------------------------------------


def test_concurrency_one_runs_entries_due_together_one_after_the_other() -> None:
    async def main() -> Rig:
        rig = Rig([every("a", 100.0, 30.0), every("b", 100.0, 30.0)], seed=5, concurrency=1)
        await rig.run_for(150.0)
        return rig

    rig = run_virtual(main)
    ja, jb = jitters(5, 5.0, 5.0)
    first, second = ("a", "b") if ja <= jb else ("b", "a")
    t0 = 100.0 + min(ja, jb)
    assert rig.times(LogEvent.JOB_STARTED, first) == approx_list([t0])
    # The second waited for the only slot, and took it the instant the first finished.
    assert rig.times(LogEvent.JOB_STARTED, second) == approx_list([t0 + 30.0])
    assert JOURNAL.max_concurrent() == 1


def test_concurrency_two_lets_them_overlap() -> None:
    async def main() -> Rig:
        rig = Rig([every("a", 100.0, 30.0), every("b", 100.0, 30.0)], seed=5, concurrency=2)
        await rig.run_for(150.0)
        return rig

    rig = run_virtual(main)
    ja, jb = jitters(5, 5.0, 5.0)
    assert rig.times(LogEvent.JOB_STARTED, "a") == approx_list([100.0 + ja])
    assert rig.times(LogEvent.JOB_STARTED, "b") == approx_list([100.0 + jb])
    assert JOURNAL.max_concurrent() == 2


def test_per_entry_timeout_cancels_the_run() -> None:
    async def main() -> Rig:
        rig = Rig([every("hang", 1000.0, 500.0, timeout=3.0)], seed=8)
        await rig.run_for(1100.0)
        return rig

    rig = run_virtual(main)
    (start,) = rig.times(LogEvent.JOB_STARTED, "hang")
    assert rig.times(LogEvent.JOB_TIMED_OUT, "hang") == approx_list([start + 3.0])
    assert JOURNAL.times("end", "hang") == []
    assert rig.counters.snapshot().total_timeouts == 1


def test_graceful_stop_lets_the_running_job_finish_and_starts_nothing_new() -> None:
    async def main() -> tuple[Rig, float, float]:
        rig = Rig([every("work", 10.0, 7.0)], seed=6)
        rig.start()
        await asyncio.sleep(10.0 + jitters(6, 5.0)[0] + 2.0)  # 2 s into the first run
        stop_at = rig.loop.time()
        returned_at = await rig.stop()
        await asyncio.sleep(100.0)  # nothing fires afterwards either
        return rig, stop_at, returned_at

    rig, stop_at, returned_at = run_virtual(main)
    (start,) = rig.times(LogEvent.JOB_STARTED, "work")
    assert rig.times(LogEvent.JOB_SUCCEEDED, "work") == approx_list([start + 7.0])
    assert returned_at == pytest.approx(start + 7.0, abs=1e-6)
    assert start < stop_at
    events = [r.event for r in rig.trace.records]
    assert events[-4:] == ["job_started", "worker_stopping", "job_succeeded", "worker_stopped"]


def test_stop_before_anything_is_due_returns_at_once() -> None:
    async def main() -> tuple[Rig, float]:
        rig = Rig([every("later", 3600.0, 1.0)])
        rig.start()
        await asyncio.sleep(5.0)
        return rig, await rig.stop()

    rig, returned_at = run_virtual(main)
    assert returned_at == 5.0
    assert rig.times(LogEvent.JOB_STARTED, "later") == []


def test_stop_does_not_start_a_run_still_waiting_for_a_slot() -> None:
    async def main() -> tuple[Rig, float]:
        rig = Rig([every("a", 100.0, 30.0), every("b", 100.0, 30.0)], seed=5, concurrency=1)
        rig.start()
        await asyncio.sleep(110.0)  # one entry runs, the other waits for the only slot
        return rig, await rig.stop()

    rig, returned_at = run_virtual(main)
    ja, jb = jitters(5, 5.0, 5.0)
    first = "a" if ja <= jb else "b"
    second = "b" if first == "a" else "a"
    assert rig.times(LogEvent.JOB_STARTED, first) == approx_list([100.0 + min(ja, jb)])
    assert rig.times(LogEvent.JOB_STARTED, second) == []  # stop() came before it got a slot
    assert returned_at == pytest.approx(130.0 + min(ja, jb), abs=1e-6)
    assert rig.counters.snapshot().active_jobs == 0


def test_scheduler_repr() -> None:
    async def main() -> str:
        rig = Rig([every("r", 10.0, 0.0)])
        return repr(rig.worker.scheduler)

    assert run_virtual(main) == "Scheduler(entries=1, next_due=-)"


def test_a_cron_entry_that_runs_out_of_fire_times_is_retired_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Its year field ends at 2026: the 23:59 slot is its last. The worker must not die on
    # the next computation (croniter's "failed to find next date"), nor stop "tick".
    epoch = datetime(2026, 12, 31, 23, 58, 30, tzinfo=UTC)

    async def main() -> Rig:
        rig = Rig(
            [cron("last", "* * * * * 0 2026", 0.0), every("tick", 30.0, 0.0)],
            seed=12,
            epoch=epoch,
        )
        await rig.run_for(300.0)
        return rig

    rig = run_virtual(main)
    j_last, j_tick = jitters(12, 5.0, 5.0)
    assert rig.times(LogEvent.JOB_STARTED, "last") == approx_list([30.0 + j_last])
    ticks = [30.0 + j_tick + 30.0 * k for k in range(10) if 30.0 + j_tick + 30.0 * k < 300.0]
    assert rig.times(LogEvent.JOB_STARTED, "tick") == approx_list(ticks)
    last, tick = rig.worker.scheduler.states
    assert (last.retired, last.runs, tick.retired) == (True, 1, False)
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    # Retired when the run that fired the last slot was rescheduled, a few seconds later.
    assert re.fullmatch(
        r"schedule entry last will not run again: cron expression '\* \* \* \* \* 0 2026' has "
        r"no fire time after 2026-12-31T23:59:0\d\+00:00 \(none within 50 years\)",
        record.getMessage(),
    )


def test_a_cron_entry_with_no_fire_time_at_start_is_retired_at_once() -> None:
    async def main() -> Rig:
        rig = Rig([cron("gone", "* * * * * 0 2025", 0.0), every("tick", 30.0, 0.0)], seed=3)
        await rig.run_for(100.0)
        return rig

    rig = run_virtual(main)
    assert rig.times(LogEvent.JOB_STARTED, "gone") == []
    assert len(rig.times(LogEvent.JOB_STARTED, "tick")) == 3
    assert rig.worker.scheduler.states[0].retired
