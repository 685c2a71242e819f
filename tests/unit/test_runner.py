"""`Slots` (the shared concurrency limit) and `Runner` (one run: timeout, offload, counters)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from reference.clock import SystemClock
from reference.counters import SEGMENT_SIZE, BufferCounters, Outcome
from reference.offload import ThreadOffload
from reference.records import LogEvent
from reference.runner import CANCEL_GRACE, Runner, RunResult, Slots, clean_text, describe_error
from sim.clock import SimClock
from sim.offload import InlineOffload
from sim.trace import HostObserver, Trace
from tests.unit.engine_jobs import (
    JOURNAL,
    UNBLOCK,
    Boom,
    IgnoresCancel,
    Journal,
    Noop,
    OwnTimeout,
    Raises,
    ReturnsCoroutine,
    Sleepy,
    SyncBlocked,
    SyncBoom,
    SyncExits,
    SyncNoop,
    run_virtual,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from reference.job import Job

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def journal() -> Iterator[Journal]:
    JOURNAL.reset()
    yield JOURNAL
    JOURNAL.reset()


# -- Slots -----------------------------------------------------------------------------------


def test_slots_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0)


def test_slots_free_count_and_try_acquire() -> None:
    seen: list[int] = []

    async def main() -> None:
        slots = Slots(3, on_change=seen.append)
        assert slots.free == 3
        assert slots.try_acquire()
        assert slots.try_acquire(2)
        assert slots.free == 0
        assert not slots.try_acquire()
        slots.release(2)
        assert slots.free == 2
        assert not slots.try_acquire(3)
        slots.release()
        assert slots.free == 3
        assert repr(slots) == "Slots(free=3/3, waiting=0)"

    run_virtual(main)
    assert seen == [3, 2, 0, 2, 3]  # every change reported to the counters' capacity


def test_slots_waiters_are_served_fifo() -> None:
    order: list[str] = []

    async def main() -> None:
        slots = Slots(1)
        await slots.acquire()

        async def waiter(name: str) -> None:
            await slots.acquire()
            order.append(name)

        tasks = [asyncio.create_task(waiter(n)) for n in "abcd"]
        await asyncio.sleep(0)
        assert repr(slots) == "Slots(free=0/1, waiting=4)"
        for expected in range(1, 5):
            slots.release()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert len(order) == expected
        await asyncio.gather(*tasks)
        slots.release()
        assert slots.free == 1

    run_virtual(main)
    assert order == ["a", "b", "c", "d"]


def test_try_acquire_fails_while_waiters_queue() -> None:
    async def main() -> None:
        slots = Slots(2)
        await slots.acquire()
        await slots.acquire()
        queued = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        slots.release()  # handed straight to the waiter, not left free
        assert slots.free == 0
        assert not slots.try_acquire()
        await queued
        assert slots.free == 0
        slots.release()
        assert slots.free == 1
        assert slots.try_acquire()

    run_virtual(main)


def test_release_hands_the_slot_to_the_waiter_first() -> None:
    async def main() -> None:
        slots = Slots(1)
        await slots.acquire()
        waiter = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        slots.release()
        # Before the waiter even runs, nobody else can take its slot.
        assert not slots.try_acquire()
        await waiter
        assert slots.free == 0

    run_virtual(main)


def test_cancelled_waiter_gives_up_its_place() -> None:
    async def main() -> None:
        slots = Slots(1)
        await slots.acquire()
        first = asyncio.create_task(slots.acquire())
        second = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert repr(slots) == "Slots(free=0/1, waiting=1)"
        slots.release()
        await second  # the slot went to the next waiter
        slots.release()
        assert slots.free == 1

    run_virtual(main)


def test_waiter_cancelled_and_slot_released_in_the_same_step() -> None:
    # The cancelled future is still queued when release() runs: release skips it, and the
    # cancelled task must then just end cancelled, not trip over its missing future.
    async def main() -> None:
        slots = Slots(1)
        await slots.acquire()
        waiter = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        slots.release()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert slots.free == 1
        assert repr(slots) == "Slots(free=1/1, waiting=0)"

    run_virtual(main)


def test_waiter_cancelled_after_being_handed_a_slot_gives_it_back() -> None:
    async def main() -> None:
        slots = Slots(1)
        await slots.acquire()
        first = asyncio.create_task(slots.acquire())
        second = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        slots.release()  # handed to `first`...
        first.cancel()  # ...which is cancelled before it could run
        with pytest.raises(asyncio.CancelledError):
            await first
        await second  # the slot travelled on instead of leaking
        assert slots.free == 0
        slots.release()
        assert slots.free == 1

    run_virtual(main)


def test_over_release_is_an_error_and_changes_nothing() -> None:
    async def main() -> None:
        slots = Slots(2)
        with pytest.raises(RuntimeError, match="released more slots"):
            slots.release()
        assert slots.free == 2
        assert repr(slots) == "Slots(free=2/2, waiting=0)"
        assert slots.try_acquire()
        with pytest.raises(RuntimeError, match="released more slots"):
            slots.release(2)
        assert slots.free == 1
        assert slots.try_acquire()
        assert not slots.try_acquire()

    run_virtual(main)


def test_wait_free_returns_when_a_slot_frees() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        slots = Slots(1)
        await slots.wait_free()  # free already: returns at once
        assert slots.try_acquire()
        loop.call_later(3.0, slots.release)
        await slots.wait_free()
        return loop.time()

    assert run_virtual(main) == 3.0


# -- Runner ----------------------------------------------------------------------------------


class Bench:
    """A runner on the virtual loop, with real counters and a trace."""

    def __init__(self, worker: int = 1) -> None:
        loop = asyncio.get_running_loop()
        self.clock = SimClock(loop, EPOCH)
        self.offload = InlineOffload()
        self.counters = BufferCounters(bytearray(SEGMENT_SIZE), 0, worker)
        self.trace = Trace(lambda: loop_ns(loop))
        self.runner = Runner(
            clock=self.clock,
            offload=self.offload,
            counters=self.counters,
            observer=HostObserver(self.trace, worker),
            worker=worker,
        )

    async def run(self, cls: type[Job], args: list[object], limit: float = 30.0) -> RunResult:
        return await asyncio.create_task(self.runner.run(cls, args, time_limit=limit, label="L"))


def loop_ns(loop: asyncio.AbstractEventLoop) -> int:
    return round(loop.time() * 1e9)


def test_success_records_duration_and_counters() -> None:
    async def main() -> tuple[RunResult, Bench]:
        bench = Bench()
        await asyncio.sleep(10.0)
        return await bench.run(Sleepy, ["s", 2.5]), bench

    result, bench = run_virtual(main)
    assert result == RunResult(Outcome.SUCCESS, None, 2.5)
    snap = bench.counters.snapshot()
    assert (snap.total_runs, snap.total_successes, snap.total_failures, snap.active_jobs) == (
        1,
        1,
        0,
        0,
    )
    assert snap.last_run_at == EPOCH.timestamp() + 10.0
    assert snap.last_duration_ms == 2500.0
    assert [r.event for r in bench.trace.records] == ["job_started", "job_succeeded"]
    assert bench.trace.records[0].fields == {"worker": 1, "label": "L"}


def test_failure_records_type_and_message() -> None:
    async def main() -> tuple[RunResult, Bench]:
        bench = Bench()
        return await bench.run(Boom, []), bench

    result, bench = run_virtual(main)
    assert result.outcome is Outcome.FAILURE
    assert result.error == "RuntimeError: boom"
    assert bench.counters.snapshot().total_failures == 1
    failed = list(bench.trace.of(LogEvent.JOB_FAILED.value))
    assert [r.get("error") for r in failed] == ["RuntimeError: boom"]


def test_describe_error() -> None:
    assert describe_error(ValueError("bad value")) == "ValueError: bad value"
    assert describe_error(KeyError()) == "KeyError"


def test_async_job_is_cancelled_at_exactly_its_virtual_timeout() -> None:
    async def main() -> tuple[RunResult, float, Bench]:
        bench = Bench()
        result = await bench.run(Sleepy, ["slow", 100.0], limit=2.5)
        at = asyncio.get_running_loop().time()
        await asyncio.sleep(200.0)  # the cancelled job never comes back to finish
        return result, at, bench

    result, at, bench = run_virtual(main)
    assert at == 2.5
    assert result.outcome is Outcome.TIMEOUT
    assert result.duration == 2.5
    assert result.error == "TimeoutError: L exceeded its 2.5 s timeout"
    assert JOURNAL.times("start", "slow") == [0.0]
    assert JOURNAL.times("end", "slow") == []
    snap = bench.counters.snapshot()
    assert (snap.total_runs, snap.total_timeouts, snap.total_failures, snap.active_jobs) == (
        1,
        1,
        0,
        0,
    )
    assert [r.event for r in bench.trace.records] == ["job_started", "job_timed_out"]


def test_a_job_raising_timeout_error_itself_is_a_failure() -> None:
    async def main() -> tuple[RunResult, Bench]:
        bench = Bench()
        return await bench.run(OwnTimeout, [], limit=5.0), bench

    result, bench = run_virtual(main)
    assert result.outcome is Outcome.FAILURE
    assert result.error == "TimeoutError: my own timeout"
    snap = bench.counters.snapshot()
    assert (snap.total_failures, snap.total_timeouts) == (1, 0)


def test_sync_perform_goes_through_the_offload() -> None:
    async def main() -> tuple[list[RunResult], Bench]:
        bench = Bench()
        results = [await bench.run(SyncNoop, ["x"]), await bench.run(SyncBoom, [])]
        return results, bench

    (ok, failed), bench = run_virtual(main)
    assert bench.offload.calls == 2
    assert ok.outcome is Outcome.SUCCESS
    assert failed.error == "ValueError: sync boom"
    assert JOURNAL.times("start", "x") == [0.0]


def test_async_perform_does_not_use_the_offload() -> None:
    async def main() -> Bench:
        bench = Bench()
        await bench.run(Noop, ["a"])
        return bench

    assert run_virtual(main).offload.calls == 0


def test_plain_def_returning_a_coroutine_is_awaited() -> None:
    async def main() -> tuple[RunResult, Bench]:
        bench = Bench()
        return await bench.run(ReturnsCoroutine, ["c"]), bench

    result, bench = run_virtual(main)
    assert result == RunResult(Outcome.SUCCESS, None, 1.0)
    assert bench.offload.calls == 1
    assert JOURNAL.times("end", "c") == [1.0]


def test_counters_accumulate_over_runs() -> None:
    async def main() -> Bench:
        bench = Bench()
        for cls, args, limit in [
            (Noop, ["a"], 5.0),
            (Boom, [], 5.0),
            (Sleepy, ["z", 9.0], 1.0),
            (Noop, ["b"], 5.0),
        ]:
            await bench.run(cls, args, limit)
        return bench

    snap = run_virtual(main).counters.snapshot()
    assert (snap.total_runs, snap.total_successes, snap.total_failures, snap.total_timeouts) == (
        4,
        2,
        1,
        1,
    )
    assert snap.active_jobs == 0
    assert snap.last_duration_ms == 0.0


def test_active_jobs_counts_runs_in_flight() -> None:
    async def main() -> tuple[int, int]:
        bench = Bench()
        tasks = [
            asyncio.create_task(bench.runner.run(Sleepy, [str(i), 5.0], time_limit=9, label="p"))
            for i in range(3)
        ]
        await asyncio.sleep(1.0)
        during = bench.counters.snapshot().active_jobs
        await asyncio.gather(*tasks)
        return during, bench.counters.snapshot().active_jobs

    assert run_virtual(main) == (3, 0)


def test_cancellation_propagates_and_closes_the_run() -> None:
    async def main() -> Bench:
        bench = Bench()
        task = asyncio.create_task(bench.runner.run(Sleepy, ["x", 50.0], time_limit=99, label="c"))
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return bench

    snap = run_virtual(main).counters.snapshot()
    assert (snap.total_runs, snap.active_jobs, snap.total_failures) == (1, 0, 1)


def test_sync_job_in_a_real_thread_is_abandoned_at_its_timeout() -> None:
    offload = ThreadOffload()
    counters = BufferCounters(bytearray(SEGMENT_SIZE), 0, 1)
    from reference.observe import NULL_OBSERVER

    runner = Runner(
        clock=SystemClock(), offload=offload, counters=counters, observer=NULL_OBSERVER, worker=1
    )

    async def main() -> RunResult:
        return await asyncio.create_task(
            runner.run(SyncBlocked, [], time_limit=0.2, label="blocked")
        )

    UNBLOCK.clear()
    try:
        with asyncio.Runner() as loop_runner:
            result = loop_runner.run(main())
    finally:
        UNBLOCK.set()  # let the abandoned thread finish
    assert result.outcome is Outcome.TIMEOUT
    assert 0.2 <= result.duration < 5.0
    assert counters.snapshot().total_timeouts == 1
    assert JOURNAL.times("start", "blocked") == [None]


# -- the job boundary: anything a job raises is its outcome ---------------------------------


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("exit", "SystemExit: 3"),
        ("interrupt", "KeyboardInterrupt"),
        ("cancel", "CancelledError: L cancelled itself"),
        ("surrogate", "OSError: cannot open caf\\udce9.txt"),
        ("hostile-str", "HostileStr: <str() of the exception raised RuntimeError>"),
    ],
)
def test_anything_a_job_raises_is_its_failure(kind: str, error: str) -> None:
    """SystemExit, KeyboardInterrupt and a self-raised CancelledError would escape the loop
    (or the Exception-only boundary) and kill the worker; a lone surrogate or a hostile
    __str__ would fail the record of the outcome instead."""

    async def main() -> tuple[RunResult, Bench]:
        bench = Bench()
        return await bench.run(Raises, [kind]), bench

    result, bench = run_virtual(main)
    assert result.outcome is Outcome.FAILURE
    assert result.error == error
    result.error.encode("utf-8")  # storable: no lone surrogate left
    assert bench.counters.snapshot().total_failures == 1


def test_sync_job_calling_sys_exit_in_its_thread_is_a_failure() -> None:
    counters = BufferCounters(bytearray(SEGMENT_SIZE), 0, 1)
    from reference.observe import NULL_OBSERVER

    runner = Runner(
        clock=SystemClock(),
        offload=ThreadOffload(),
        counters=counters,
        observer=NULL_OBSERVER,
        worker=1,
    )

    async def main() -> RunResult:
        return await runner.run(SyncExits, [], time_limit=5.0, label="x")

    with asyncio.Runner() as loop_runner:
        result = loop_runner.run(main())
    assert (result.outcome, result.error) == (Outcome.FAILURE, "SystemExit: bye")


def test_a_huge_error_message_is_cut() -> None:
    async def main() -> RunResult:
        return await Bench().run(Raises, ["huge"])

    error = run_virtual(main).error
    assert error is not None
    assert len(error) < 9000
    assert error.endswith("more characters cut]")


def test_clean_text_keeps_ordinary_text() -> None:
    assert clean_text("plain") == "plain"
    assert clean_text("naïve ☃") == "naïve ☃"
    assert clean_text("a\udcffb") == "a\\udcffb"


def test_a_job_ignoring_cancellation_is_abandoned_after_the_grace() -> None:
    """Its slot must come back and the run must end (timed out) at timeout + grace; the job
    itself goes on untracked until it ends by itself."""

    async def main() -> tuple[RunResult, float, int, int]:
        bench = Bench()
        result = await bench.run(IgnoresCancel, [100.0], limit=2.0)
        at = asyncio.get_running_loop().time()
        abandoned = bench.runner.abandoned
        await asyncio.sleep(200.0)  # the job ends by itself at t=100
        return result, at, abandoned, bench.runner.abandoned

    result, at, abandoned_then, abandoned_later = run_virtual(main)
    assert at == 2.0 + CANCEL_GRACE
    assert result.outcome is Outcome.TIMEOUT
    assert (
        result.error
        == "TimeoutError: L exceeded its 2 s timeout and ignored cancellation; abandoned"
    )
    assert (abandoned_then, abandoned_later) == (1, 0)
    assert JOURNAL.times("cancel", "stubborn") == [2.0]
    assert JOURNAL.times("end", "stubborn") == [100.0]


def test_a_job_that_ends_within_the_grace_is_a_timeout() -> None:
    async def main() -> RunResult:
        return await Bench().run(IgnoresCancel, [3.0], limit=2.0)

    result = run_virtual(main)
    assert result.outcome is Outcome.TIMEOUT
    assert result.error == "TimeoutError: L exceeded its 2 s timeout"
    assert JOURNAL.times("end", "stubborn") == [3.0]


def test_the_workers_hard_stop_still_cancels_the_job() -> None:
    async def main() -> None:
        bench = Bench()
        task = asyncio.create_task(bench.runner.run(Sleepy, ["hs", 50.0], time_limit=99, label="c"))
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(100.0)

    run_virtual(main)
    assert JOURNAL.times("end", "hs") == []
