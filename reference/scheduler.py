"""The scheduler: a min-heap of schedule entries and one loop that sleeps until the earliest.

Layer 2 (engine): asyncio over layers 0-1; reads time only through the `Clock` it is given.
Overlap (SPEC, the 0.6.1 fix): an entry still running when due is skipped *and rescheduled*,
with a warning and a skip count. 0.6.0 re-pushed it without rescheduling, so its due time
stayed in the past and the loop spun; `python -m sim mutants` restores that to prove the
simulator catches it. A cron entry that runs out of fire times (a year field that has
passed) is retired with an error log; the worker and its other entries go on.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reference.records import LogEvent
from reference.triggers import (
    MIN_CRON_SLEEP,
    NoNextFireError,
    interval_first,
    interval_next,
    startup_jitter,
)

if TYPE_CHECKING:
    import random
    from collections.abc import Sequence
    from datetime import datetime

    from reference.clock import Clock
    from reference.counters import Counters
    from reference.observe import Observer
    from reference.runner import Runner, Slots
    from reference.schedule import ScheduleEntry

logger = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class EntryState:
    """One entry's mutable state inside the scheduler."""

    entry: ScheduleEntry
    running: bool = False
    last_slot: datetime | None = field(default=None)  # cron: the last wall slot scheduled
    runs: int = 0
    skips: int = 0
    retired: bool = False  # cron: no fire time left, so it is off the heap for good


class Scheduler:
    """Runs this worker's schedule entries on time, never one entry twice at once."""

    def __init__(
        self,
        entries: Sequence[ScheduleEntry],
        *,
        clock: Clock,
        rng: random.Random,
        runner: Runner,
        slots: Slots,
        counters: Counters,
        observer: Observer,
    ) -> None:
        self._clock = clock
        self._rng = rng
        self._runner = runner
        self._slots = slots
        self._counters = counters
        self._observer = observer
        self.states = [EntryState(entry) for entry in entries]
        # (due, seq, state): seq breaks ties in entry order, so equal due times never
        # compare EntryState objects and the firing order is deterministic.
        self._heap: list[tuple[float, int, EntryState]] = []

    def _first_run(self, state: EntryState) -> float:
        entry = state.entry
        now = self._clock.monotonic()
        jitter = startup_jitter(entry.every, self._rng)
        if entry.every is not None:
            return interval_first(now, entry.every, jitter)
        return self._cron_due(state, now) + jitter

    def _cron_due(self, state: EntryState, now: float) -> float:
        cron = state.entry.cron
        assert cron is not None
        wall = self._clock.wall()
        # Never schedule a slot at or before the one already scheduled: a wall clock a hair
        # behind the slot it just fired (float rounding) or stepped back by NTP would
        # otherwise fire that slot again 0.1 s later.
        ref = wall if state.last_slot is None or wall > state.last_slot else state.last_slot
        try:
            slot = cron.next_after(ref)
        except NoNextFireError as exc:
            self._retire(state, exc)
            return math.inf  # never pushed: callers check `state.retired`
        state.last_slot = slot
        return now + max((slot - wall).total_seconds(), MIN_CRON_SLEEP)

    def _retire(self, state: EntryState, exc: NoNextFireError) -> None:
        state.retired = True
        logger.error(
            "schedule entry %s will not run again: %s",
            state.entry.name,
            exc,
            extra={"entry": state.entry.name},
        )

    def next_run(self, state: EntryState, due: float) -> float:
        """The due time after a run (or skip) that was due at `due` (SPEC rescheduling).

        A cron entry with no fire time left is retired instead (`state.retired`, due inf).
        """
        now = self._clock.monotonic()
        if state.entry.every is not None:
            return interval_next(due, state.entry.every, now)
        return self._cron_due(state, now)

    def on_overlap(self, state: EntryState, due: float) -> float:
        """Skip a run whose previous one is still going, and reschedule (the 0.6.1 fix)."""
        self.record_skip(state, "its previous run is still going")
        return self.next_run(state, due)

    def record_skip(self, state: EntryState, why: str) -> None:
        """Count, trace and log (one warning line) one skipped tick of `state`'s entry."""
        state.skips += 1
        self._counters.skipped()
        self._observer.emit(LogEvent.JOB_SKIPPED, entry=state.entry.name)
        logger.warning(
            "skipping %s: %s",
            state.entry.name,
            why,
            extra={"event": LogEvent.JOB_SKIPPED, "entry": state.entry.name},
        )

    def start_run(
        self, state: EntryState, stopping: asyncio.Event, tasks: asyncio.TaskGroup
    ) -> None:
        """Start one run of `state`'s entry as a task owned by `tasks`."""
        state.running = True
        state.runs += 1
        tasks.create_task(self._run(state, stopping), name=f"entry:{state.entry.name}")

    async def run(self, stopping: asyncio.Event, tasks: asyncio.TaskGroup) -> None:
        """Fire entries until `stopping` is set; runs are tasks owned by `tasks`."""
        heap = self._heap
        heap.clear()
        for seq, state in enumerate(self.states):
            first = self._first_run(state)
            if not state.retired:
                heap.append((first, seq, state))
        # One heapify, not a push per entry; (due, seq) keys are unique, so the firing
        # order is the same.
        heapq.heapify(heap)
        sleeper = _Sleeper(stopping)
        watcher = tasks.create_task(sleeper.watch(), name="scheduler-stop-watch")
        try:
            await self._loop(heap, stopping, tasks, sleeper)
        finally:
            watcher.cancel()

    async def _loop(
        self,
        heap: list[tuple[float, int, EntryState]],
        stopping: asyncio.Event,
        tasks: asyncio.TaskGroup,
        sleeper: _Sleeper,
    ) -> None:
        while not stopping.is_set():
            now = self._clock.monotonic()
            # Fire everything due, at most one pass over the heap before yielding, so many
            # entries due at once cannot starve the loop and a bug that keeps an entry due
            # still yields (and the simulator's busy-loop guard sees it).
            budget = len(heap)
            while heap and heap[0][0] <= now and budget:
                budget -= 1
                due, seq, state = heapq.heappop(heap)
                if state.running:
                    next_due = self.on_overlap(state, due)
                else:
                    self.start_run(state, stopping, tasks)
                    next_due = self.next_run(state, due)
                if not state.retired:
                    heapq.heappush(heap, (next_due, seq, state))
            await sleeper.sleep(heap[0][0] - self._clock.monotonic() if heap else None)

    async def _run(self, state: EntryState, stopping: asyncio.Event) -> None:
        entry = state.entry
        try:
            await self._slots.acquire()
            try:
                if stopping.is_set():
                    # Fired before stop() but still queued for a slot: starting it now would
                    # be a new run after stop (SPEC: graceful stop starts no new runs).
                    logger.debug(
                        "not starting %s: the worker is stopping",
                        entry.name,
                        extra={"event": LogEvent.WORKER_STOPPING, "entry": entry.name},
                    )
                    return
                await self._runner.run(
                    entry.job_class, list(entry.args), time_limit=entry.timeout, label=entry.name
                )
            finally:
                self._slots.release()
        finally:
            state.running = False

    def __repr__(self) -> str:
        due = f"{self._heap[0][0]:.3f}" if self._heap else "-"
        return f"Scheduler(entries={len(self.states)}, next_due={due})"


class _Sleeper:
    """Sleeps until a deadline or until `stopping` is set, cheaply.

    The hot path of a large schedule is this sleep (once per firing pass), so it is one
    future and one timer handle; a single watcher task turns `stopping` into a wake-up,
    instead of an `asyncio.timeout` context and an `Event.wait` future per sleep.
    """

    __slots__ = ("_stopping", "_waiter")

    def __init__(self, stopping: asyncio.Event) -> None:
        self._stopping = stopping
        self._waiter: asyncio.Future[None] | None = None

    async def watch(self) -> None:
        await self._stopping.wait()
        _release(self._waiter)

    async def sleep(self, delay: float | None) -> None:
        """Sleep `delay` seconds (None: until stopped); return early once stopping."""
        if delay is not None and delay <= 0:
            await asyncio.sleep(0)
            return
        if self._stopping.is_set():
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        handle = None if delay is None else loop.call_later(delay, _release, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()


def _release(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
