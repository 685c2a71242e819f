"""The shared scheduler on virtual time over a real SQLite file: placement and grace, the
CAS (each tick once across workers), cadence across restarts, misfires, pause and clock
steps, driven through the real `Worker` with a `schedules` store."""

from __future__ import annotations

import asyncio
import itertools
import random
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest

from reference.counters import SEGMENT_SIZE, BufferCounters
from reference.records import LogEvent
from reference.registry import default_registry
from reference.row_scheduler import PAUSE_RECHECK, PLACEMENT_GRACE
from reference.runtime import Runtime, Worker
from reference.schedule import ScheduleEntry
from reference.sqlite_store import SqliteStore
from reference.triggers import CronSchedule
from sim.clock import SimClock, SkewProgram
from sim.offload import InlineOffload
from sim.trace import HostObserver, Trace
from tests.unit.engine_jobs import JOURNAL, Journal, run_virtual, timed_job

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
T0 = EPOCH.timestamp()


@pytest.fixture(autouse=True)
def journal() -> Iterator[Journal]:
    JOURNAL.reset()
    yield JOURNAL
    JOURNAL.reset()


def every(name: str, period: float, *, placed: int = 1, grace: float = 60.0) -> ScheduleEntry:
    return ScheduleEntry(
        name=name,
        job_class=timed_job(name, 0.5),
        every=period,
        timeout=30.0,
        worker=placed,
        misfire_grace=grace,
    )


class Cluster:
    """Workers on one virtual loop, each with its own connection to one database."""

    def __init__(self, db: Path, entries: list[ScheduleEntry], *, skew: SkewProgram | None = None):
        loop = asyncio.get_running_loop()
        self.clock = SimClock(loop, EPOCH, skew)
        self.trace = Trace(lambda: loop.now_ns)  # type: ignore[attr-defined]
        self.db = db
        self.entries = entries
        SqliteStore.create_schema(db)
        self.admin = SqliteStore(db, busy_timeout_ms=0)
        self.running: dict[int, tuple[Worker, asyncio.Task[None], SqliteStore]] = {}
        self.boots = 0

    def start(self, index: int) -> None:
        self.boots += 1
        store = SqliteStore(self.db, busy_timeout_ms=0)
        runtime = Runtime(
            clock=self.clock,
            rng=random.Random(self.boots),
            registry=default_registry,
            offload=InlineOffload(),
            counters=BufferCounters(bytearray(SEGMENT_SIZE), 0, index),
            observer=HostObserver(self.trace, index),
        )
        worker = Worker(runtime, index=index, entries=self.entries, schedules=store)
        self.running[index] = (worker, asyncio.create_task(worker.run()), store)

    async def stop(self, index: int) -> None:
        worker, task, store = self.running.pop(index)
        worker.stop()
        await task
        store.close()

    async def stop_all(self) -> None:
        for index in list(self.running):
            await self.stop(index)
        self.admin.close()

    def fires(self, name: str) -> list[tuple[float, int, float]]:
        """(virtual s, worker, tick) of every fire of `name`."""
        return [
            (r.ns / 1e9, r.host, float(r.get("tick")))  # type: ignore[arg-type]
            for r in self.trace.of(LogEvent.ENTRY_FIRED.value)
            if r.get("entry") == name
        ]

    def skips(self, name: str) -> int:
        return sum(1 for r in self.trace.of(LogEvent.JOB_SKIPPED.value) if r.get("entry") == name)


@contextmanager
def _open(db: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(db)
    try:
        yield store
    finally:
        store.close()


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_the_placed_worker_fires_each_tick_once_and_the_other_never(tmp_path: Path) -> None:
    async def main() -> Cluster:
        c = Cluster(tmp_path / "q.db", [every("tick", 10.0, placed=1)])
        c.start(1)
        c.start(2)
        await asyncio.sleep(100.0)
        await c.stop_all()
        return c

    c = run_virtual(main)
    fires = c.fires("tick")
    assert len(fires) >= 8
    assert {w for _, w, _ in fires} == {1}
    ticks = [t for _, _, t in fires]
    assert len(set(ticks)) == len(ticks)
    assert gaps([at for at, _, _ in fires]) == pytest.approx([10.0] * (len(fires) - 1))


def test_without_its_placed_worker_an_entry_fires_after_the_grace_then_on_cadence(
    tmp_path: Path,
) -> None:
    async def main() -> Cluster:
        c = Cluster(tmp_path / "q.db", [every("tick", 10.0, placed=1)])
        c.start(2)  # worker 1 never runs
        await asyncio.sleep(60.0)
        await c.stop_all()
        return c

    c = run_virtual(main)
    fires = c.fires("tick")
    assert {w for _, w, _ in fires} == {2}
    first_tick = fires[0][2]
    assert fires[0][0] == pytest.approx(first_tick - T0 + PLACEMENT_GRACE)
    # Having fired in worker 1's stead, worker 2 keeps the 10 s cadence of the ticks and
    # fires the later ones on time (no grace per tick).
    assert gaps([t for _, _, t in fires]) == pytest.approx([10.0] * (len(fires) - 1))
    assert [at for at, _, _ in fires[1:]] == pytest.approx([t - T0 for _, _, t in fires[1:]])
    assert len(fires) >= 5


def test_cadence_survives_a_restart(tmp_path: Path) -> None:
    async def main() -> Cluster:
        c = Cluster(tmp_path / "q.db", [every("slow", 30.0)])
        c.start(1)
        await asyncio.sleep(40.0)  # one fire, at 30 + jitter
        await c.stop(1)
        await asyncio.sleep(5.0)
        c.start(1)  # a fresh start would first fire 30 + jitter from now, at >= 75 s
        await asyncio.sleep(80.0)
        await c.stop_all()
        return c

    c = run_virtual(main)
    times = [at for at, _, _ in c.fires("slow")]
    assert len(times) == 4
    assert gaps(times) == pytest.approx([30.0, 30.0, 30.0])


def test_a_tick_missed_by_less_than_misfire_grace_fires_once_at_start(tmp_path: Path) -> None:
    async def main() -> Cluster:
        c = Cluster(tmp_path / "q.db", [every("tick", 100.0, grace=60.0)])
        c.start(1)
        await asyncio.sleep(1.0)
        await c.stop(1)
        await asyncio.sleep(140.0)  # its tick (~100-105 s) passes with nothing running
        c.start(1)
        await asyncio.sleep(1.0)
        await c.stop_all()
        return c

    c = run_virtual(main)
    fires = c.fires("tick")
    assert [round(at) for at, _, _ in fires] == [141]
    assert c.skips("tick") == 0


def test_an_older_miss_is_skipped_counted_and_the_cadence_kept(tmp_path: Path) -> None:
    async def main() -> Cluster:
        c = Cluster(tmp_path / "q.db", [every("tick", 100.0, grace=60.0)])
        c.start(1)
        await asyncio.sleep(1.0)
        await c.stop(1)
        await asyncio.sleep(250.0)  # its tick is ~150 s past at the restart
        c.start(1)
        await asyncio.sleep(100.0)
        await c.stop_all()
        return c

    c = run_virtual(main)
    assert c.skips("tick") == 1
    ((at, _, tick),) = c.fires("tick")
    # The missed tick was at 100 + jitter (< 105); the next in its cadence is 200 later.
    assert 300.0 <= at < 305.0
    assert at == pytest.approx(tick - T0)
    with _open(c.db) as store:
        row = store.get_schedule("tick")
    assert row is not None
    assert (row.fires, row.skips, row.last_fire) == (1, 1, pytest.approx(tick))


def test_a_paused_entry_does_not_fire_until_resumed(tmp_path: Path) -> None:
    async def main() -> Cluster:
        c = Cluster(tmp_path / "q.db", [every("tick", 10.0)])
        c.start(1)
        await asyncio.sleep(1.0)
        assert c.admin.set_paused("tick", True)
        await asyncio.sleep(50.0)
        assert c.fires("tick") == []
        assert c.admin.set_paused("tick", False)
        await asyncio.sleep(50.0)
        await c.stop_all()
        return c

    c = run_virtual(main)
    times = [at for at, _, _ in c.fires("tick")]
    assert times
    assert times[0] <= 51.0 + PAUSE_RECHECK + 1e-6
    assert len(times) >= 4


def test_a_clock_step_back_neither_refires_a_tick_nor_starves_the_entry(tmp_path: Path) -> None:
    async def main() -> Cluster:
        skew = SkewProgram([(35.0, -3600.0)])
        c = Cluster(tmp_path / "q.db", [every("tick", 10.0)], skew=skew)
        c.start(1)
        c.start(2)
        await asyncio.sleep(120.0)
        await c.stop_all()
        return c

    c = run_virtual(main)
    fires = c.fires("tick")
    ticks = [t for _, _, t in fires]
    assert len(set(ticks)) == len(ticks)
    assert gaps([at for at, _, _ in fires]) == pytest.approx([10.0] * (len(fires) - 1))
    assert len(fires) >= 10


def test_an_overlapping_tick_is_skipped_once_by_cas_and_counted(tmp_path: Path) -> None:
    slow = ScheduleEntry(
        name="slow", job_class=timed_job("slow", 25.0), every=10.0, timeout=60.0, worker=1
    )

    async def main() -> Cluster:
        c = Cluster(tmp_path / "q.db", [slow])
        c.start(1)
        c.start(2)
        await asyncio.sleep(100.0)
        await c.stop_all()
        return c

    c = run_virtual(main)
    fires = c.fires("slow")
    # A 25 s run on a 10 s cadence: each run is followed by two skipped ticks.
    assert c.skips("slow") >= 2 * (len(fires) - 1)
    assert {w for _, w, _ in fires} == {1}
    with _open(c.db) as store:
        row = store.get_schedule("slow")
    assert row is not None
    assert (row.fires, row.skips) == (len(fires), c.skips("slow"))


def test_a_clock_step_forward_does_not_burst(tmp_path: Path) -> None:
    async def main() -> Cluster:
        skew = SkewProgram([(35.0, 3600.0)])
        c = Cluster(tmp_path / "q.db", [every("tick", 10.0)], skew=skew)
        c.start(1)
        await asyncio.sleep(100.0)
        await c.stop_all()
        return c

    c = run_virtual(main)
    times = [at for at, _, _ in c.fires("tick")]
    # One fire per 10 s of real time across the hour jumped over: no catch-up of 360 ticks.
    assert gaps(times) == pytest.approx([10.0] * (len(times) - 1))
    assert 8 <= len(times) <= 10


def test_a_cron_entry_fires_each_minute_slot_once_from_two_workers(tmp_path: Path) -> None:
    minute = ScheduleEntry(
        name="minute",
        job_class=timed_job("minute", 1.0),
        cron=CronSchedule("* * * * *", ZoneInfo("UTC")),
        timeout=30.0,
        worker=2,
    )

    async def main() -> Cluster:
        c = Cluster(tmp_path / "q.db", [minute])
        c.start(1)
        c.start(2)
        await asyncio.sleep(600.0)
        await c.stop_all()
        return c

    c = run_virtual(main)
    fires = c.fires("minute")
    assert [t - T0 for _, _, t in fires] == [60.0 * k for k in range(1, 11)]
    assert {w for _, w, _ in fires} == {2}
