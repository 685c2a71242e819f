"""The shared scheduler: schedule entries as rows of the store, each tick fired once by CAS.

Layer 2 (engine): asyncio over the `ScheduleStore` protocol; reads time only through the
clock it is given. `Worker` uses it whenever it has a store (the production worker always
does); without one, `reference.scheduler.Scheduler` keeps the in-memory, sharded behaviour.
"""

# How a tick is fired once across every worker and supervisor sharing one store
# ------------------------------------------------------------------------------
# Every worker loads every entry and, at start, syncs them into the `schedules` table
# (`ScheduleStore.sync_schedules`): a new entry's row gets its first fire time; an
# unchanged entry keeps its row's `next_fire`, so an `every: N` entry fires N seconds
# after its last fire, not N seconds after each start. A tick is the row's `next_fire`
# value; whoever fires (or skips) it first moves the row on with
#     UPDATE schedules SET next_fire = <next> ... WHERE name = ? AND next_fire = <tick>
# and of all the workers that read one value exactly one sees that UPDATE change a row.
# The winner runs the job in its own slots; the others re-read the row and sleep on.
#
# Placement (crc32 of the name, or the `worker:` pin; the gem's assignment) only decides
# who tries first: the placed worker tries at `next_fire`, every other worker reads the row
# at `next_fire + PLACEMENT_GRACE` and fires it only if it is still there. So a dead placed
# worker costs one grace per tick it misses, not the tick. A worker that fired in its
# stead keeps firing that entry on time (no grace) until it loses a claim, which is how
# cadence survives the failover. Under two supervisors both "worker k"s are placed: they
# race for each tick and the CAS lets one win.
#
# Misfires: a tick read from the store (at start, after a pause, after losing a claim)
# that is more than the entry's `misfire_grace` past the moment this worker would have
# fired it was missed while nothing ran: it is skipped, not fired (the winner of that skip
# logs one line and counts it), and the entry resumes at its next tick after now. A tick
# less late fires once. A tick this worker set itself and woke up late for (a stalled loop)
# fires, as the in-memory scheduler does (no burst catch-up either way).
#
# Clocks: rows hold wall POSIX seconds (`clock.realtime()`); waits are monotonic deltas
# from the wall time read when the row was (re)read, so a wall-clock step changes no wait
# already under way. Stepped back, an interval entry's next fire is `now + every` (never
# later, so it is not starved) and a cron entry's next slot is after the one just fired
# (never the same one again); and the CAS means no tick value fires twice whatever the
# clocks say. Stepped forward, the wait under way still ends on time; the next fire is
# computed from the new wall time, so the ticks jumped over are not caught up.

from __future__ import annotations

import heapq
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from reference.errors import StoreError
from reference.records import LogEvent, NewSchedule
from reference.registry import job_name
from reference.scheduler import EntryState, Scheduler, _Sleeper
from reference.triggers import NoNextFireError, startup_jitter

if TYPE_CHECKING:
    import asyncio
    import random
    from collections.abc import Sequence

    from reference.clock import Clock
    from reference.counters import Counters
    from reference.observe import Observer
    from reference.records import ScheduleRow
    from reference.runner import Runner, Slots
    from reference.schedule import ScheduleEntry
    from reference.store import ScheduleStore

logger = logging.getLogger(__name__)

PLACEMENT_GRACE = 5.0
"""Seconds a worker that is not an entry's placed worker waits past a tick before it fires
it: long enough that a live placed worker (woken on time, one SQLite write) always wins,
short enough that a dead one delays its entries by only this much."""
PAUSE_RECHECK = 2.0
"""How often (seconds) a paused entry's row is read again, to notice `resume`."""
STORE_RETRY = 1.0
"""Seconds before an entry whose row could not be read or written is tried again."""


@dataclass(slots=True, eq=False)
class RowState:
    """What one worker knows of one entry's row."""

    state: EntryState
    placed: bool  # this worker is the entry's placed worker (crc32 or pin)
    expected: float | None = None  # the row's next_fire as last read or set here
    loaded: bool = True  # `expected` was read from the store (start, re-read), not set here
    paused: bool = False
    acting: bool = False  # not placed, but fired the last tick: fires on time, no grace


class RowScheduler(Scheduler):
    """Fires every entry of the schedule from the store's rows; owned by `Worker.run`."""

    def __init__(
        self,
        entries: Sequence[ScheduleEntry],
        *,
        store: ScheduleStore,
        index: int,
        clock: Clock,
        rng: random.Random,
        runner: Runner,
        slots: Slots,
        counters: Counters,
        observer: Observer,
    ) -> None:
        super().__init__(
            entries,
            clock=clock,
            rng=rng,
            runner=runner,
            slots=slots,
            counters=counters,
            observer=observer,
        )
        self._store = store
        self._index = index
        self.rows = [RowState(st, placed=st.entry.worker == index) for st in self.states]
        self._row_heap: list[tuple[float, int, RowState]] = []

    def seed(self, entry: ScheduleEntry, now: float) -> NewSchedule:
        """The row a new (or changed) entry starts with: its first fire after `now`."""
        if entry.every is not None:
            first: float | None = now + startup_jitter(entry.every, self._rng) + entry.every
        else:
            assert entry.cron is not None
            try:
                first = entry.cron.next_after(_utc(now)).timestamp()
            except NoNextFireError:
                first = None  # checked at load; a year field that has passed since: never
        return NewSchedule(
            name=entry.name,
            spec=entry.spec,
            next_fire=first,
            class_name=job_name(entry.job_class),
            args=entry.args_json,
            queue=entry.queue,
            priority=entry.priority,
        )

    def next_fire(self, state: EntryState, tick: float, now: float) -> float | None:
        """The fire after `tick`, fired (or skipped) at wall time `now`; None: no more.

        Interval: `tick + every`, or `now + every` if that is past or the clock stepped
        back (no burst, never starved). Cron: the slot after the later of `now` and `tick`.
        """
        entry = state.entry
        if entry.every is not None:
            nxt = tick + entry.every
            if nxt <= now or nxt > now + entry.every:
                nxt = now + entry.every
            return nxt
        return self._cron_after(state, max(now, tick))

    def after_misfire(self, state: EntryState, tick: float, now: float) -> float | None:
        """The first tick after `now` in the cadence of `tick` (a missed tick is skipped)."""
        every = state.entry.every
        if every is not None:
            return tick + (math.floor((now - tick) / every) + 1) * every
        return self._cron_after(state, max(now, tick))

    def _cron_after(self, state: EntryState, wall: float) -> float | None:
        assert state.entry.cron is not None
        try:
            return state.entry.cron.next_after(_utc(wall)).timestamp()
        except NoNextFireError as exc:
            self._retire(state, exc)
            return None

    async def run(self, stopping: asyncio.Event, tasks: asyncio.TaskGroup) -> None:
        """Sync the rows, then fire entries until `stopping` is set."""
        sleeper = _Sleeper(stopping)
        watcher = tasks.create_task(sleeper.watch(), name="scheduler-stop-watch")
        try:
            rows = await self._sync(stopping, sleeper)
            if stopping.is_set():
                return
            heap = self._row_heap
            heap.clear()
            for seq, (rs, row) in enumerate(zip(self.rows, rows, strict=True)):
                due = self._adopt(rs, row)
                if due is not None:
                    heap.append((due, seq, rs))
            heapq.heapify(heap)
            while not stopping.is_set():
                now = self._clock.monotonic()
                budget = len(heap)  # one pass before yielding, as the in-memory loop
                while heap and heap[0][0] <= now and budget:
                    budget -= 1
                    _, seq, rs = heapq.heappop(heap)
                    due = self._step(rs, stopping, tasks)
                    if due is not None:
                        heapq.heappush(heap, (due, seq, rs))
                await sleeper.sleep(heap[0][0] - self._clock.monotonic() if heap else None)
        finally:
            watcher.cancel()

    async def _sync(self, stopping: asyncio.Event, sleeper: _Sleeper) -> list[ScheduleRow]:
        """Sync every entry's row, retrying while the store fails (a locked database)."""
        while True:
            now = self._clock.realtime()
            try:
                return self._store.sync_schedules(
                    [self.seed(rs.state.entry, now) for rs in self.rows], now=now
                )
            except StoreError as exc:
                logger.warning(
                    "schedule rows not synced (retrying in %g s): %s",
                    STORE_RETRY,
                    exc,
                    extra={"event": LogEvent.STORE_ERROR, "worker": self._index},
                )
            await sleeper.sleep(STORE_RETRY)
            if stopping.is_set():
                return []

    def _offset(self, rs: RowState) -> float:
        return 0.0 if rs.placed or rs.acting else PLACEMENT_GRACE

    def _due(self, rs: RowState, fire: float) -> float:
        """The monotonic time at which to act on the tick at wall time `fire`."""
        delay = fire + self._offset(rs) - self._clock.realtime()
        return self._clock.monotonic() + max(delay, 0.0)

    def _adopt(self, rs: RowState, row: ScheduleRow | None) -> float | None:
        """Take `row` as this entry's truth; return when to act next (None: never)."""
        if row is None:
            logger.warning(
                "schedule entry %s has no row in the store any more; not firing it",
                rs.state.entry.name,
                extra={"event": LogEvent.STORE_ERROR, "entry": rs.state.entry.name},
            )
            return None
        rs.expected, rs.paused, rs.loaded, rs.acting = row.next_fire, row.paused, True, False
        if row.next_fire is None:
            rs.state.retired = True
            return None
        if row.paused:
            return self._clock.monotonic() + PAUSE_RECHECK
        return self._due(rs, row.next_fire)

    def _step(
        self, rs: RowState, stopping: asyncio.Event, tasks: asyncio.TaskGroup
    ) -> float | None:
        """Act on the entry's tick: fire, skip or re-read; return when to act next."""
        name = rs.state.entry.name
        try:
            if rs.paused or not (rs.placed or rs.acting):
                # Not this worker's to fire first (or paused): read before writing; most
                # of the time the placed worker has moved the row on already.
                row = self._store.get_schedule(name)
                if row is None or row.paused or rs.paused or row.next_fire != rs.expected:
                    return self._adopt(rs, row)  # moved on, paused, or just resumed
            return self._claim(rs, stopping, tasks)
        except StoreError as exc:
            logger.warning(
                "schedule entry %s: store error (retrying in %g s): %s",
                name,
                STORE_RETRY,
                exc,
                extra={"event": LogEvent.STORE_ERROR, "entry": name},
            )
            return self._clock.monotonic() + STORE_RETRY

    def _claim(
        self, rs: RowState, stopping: asyncio.Event, tasks: asyncio.TaskGroup
    ) -> float | None:
        state, tick = rs.state, rs.expected
        assert tick is not None
        entry = state.entry
        now = self._clock.realtime()
        late = now - (tick + self._offset(rs))
        fired = False
        if rs.loaded and late > entry.misfire_grace:
            nxt = self.after_misfire(state, tick, now)
            won = self._store.claim_fire(entry.name, expected=tick, next_fire=nxt, fired_at=None)
            if won:
                self.record_skip(
                    state,
                    f"its tick at {_utc(tick).astimezone():%Y-%m-%d %H:%M:%S} was missed by"
                    f" {late:.0f} s, more than misfire_grace ({entry.misfire_grace:g} s)",
                )
        elif state.running:
            nxt = self.next_fire(state, tick, now)
            won = self._store.claim_fire(entry.name, expected=tick, next_fire=nxt, fired_at=None)
            if won:
                self.record_skip(state, "its previous run is still going")
        else:
            nxt = self.next_fire(state, tick, now)
            won = fired = self._store.claim_fire(
                entry.name, expected=tick, next_fire=nxt, fired_at=now
            )
            if won:
                self._observer.emit(
                    LogEvent.ENTRY_FIRED, entry=entry.name, tick=tick, worker=self._index
                )
                if not (rs.placed or rs.acting):
                    logger.info(
                        "worker %d fires %s in its placed worker %d's stead (it missed a tick)",
                        self._index,
                        entry.name,
                        entry.worker,
                        extra={"event": LogEvent.ENTRY_FIRED, "entry": entry.name},
                    )
                self.start_run(state, stopping, tasks)
        if not won:
            return self._adopt(rs, self._store.get_schedule(entry.name))
        rs.expected, rs.loaded = nxt, False
        # Firing in the placed worker's stead makes this worker act for it (on time, no
        # grace) until it loses a claim; winning only a skip does not.
        rs.acting = not rs.placed and (rs.acting or fired)
        if nxt is None:
            state.retired = True
            return None
        return self._due(rs, nxt)

    def __repr__(self) -> str:
        due = f"{self._row_heap[0][0]:.3f}" if self._row_heap else "-"
        return f"RowScheduler(worker={self._index}, entries={len(self.rows)}, next_due={due})"


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
