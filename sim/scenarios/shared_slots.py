"""`shared_slots`: scheduled runs and queue jobs share each worker's slots under load.

Two workers with two slots each consume a queue fed faster than it drains at times, while
each also runs an interval entry whose job takes most of its period. Finished queue jobs
refill their slots in the same transaction that records them (`claim(settle=...)`), so
the consumer must count only the slots that are really free: a slot freed while a
scheduled run waits for one goes to that run, never to another queue job. Checks: never more jobs
running than slots, every queue job done exactly once, the entries keep their cadence.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from typing import TYPE_CHECKING

from reference import Job
from reference.records import LogEvent
from reference.schedule import ScheduleEntry
from reference.sqlite_store import SqliteStore
from sim import invariants
from sim.host import Host, poisson_load, sqlite_queue
from sim.scenario import Check, Scenario

if TYPE_CHECKING:
    from sim.world import World

WORKERS = 2
CONCURRENCY = 2
PERIOD = 7.0  # each worker's interval entry
ENTRY_SECONDS = 3.0
PRODUCE_FOR = 1200.0
JOBS = 3000  # about 2.5 a second: bursts fill every slot, lulls let the queue empty
DRAIN_DEADLINE = 600.0


class Tick(Job):
    """The interval entries' job: holds a slot for most of its period."""

    async def perform(self) -> None:
        await asyncio.sleep(ENTRY_SECONDS)


class Chunk(Job):
    """A queue job of a given virtual duration."""

    async def perform(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def db_path(world: World) -> str:
    return f"{world.tmpdir}/queue.db"


def entry_name(worker: int) -> str:
    return f"tick{worker}"


async def main(world: World) -> None:
    path = db_path(world)
    spec = sqlite_queue(world, path, WORKERS, schedule_rows=True)
    # As production workers do, every host loads the whole schedule from the rows; each
    # entry is pinned to (placed on) its own worker, which fires it.
    entries = [
        ScheduleEntry(name=entry_name(i), job_class=Tick, every=PERIOD, timeout=60.0, worker=i)
        for i in range(1, WORKERS + 1)
    ]
    hosts = [
        Host(world, i, entries=entries, concurrency=CONCURRENCY, queue=spec)
        for i in range(1, WORKERS + 1)
    ]
    await poisson_load(
        world,
        hosts,
        spec,
        lambda: SqliteStore(path, busy_timeout_ms=0),
        jobs=JOBS,
        over=PRODUCE_FOR,
        job=lambda rng: (Chunk, (round(rng.uniform(0.2, 1.5), 3),)),
        drain_deadline=DRAIN_DEADLINE,
        drain_step=1,
    )


def _final_status(world: World) -> Counter[str]:
    conn = sqlite3.connect(db_path(world))
    try:
        return Counter(st for (st,) in conn.execute("SELECT status FROM jobs"))
    finally:
        conn.close()


def checks(world: World) -> list[Check]:
    trace = world.trace
    enqueued = {int(str(r.get("job_id"))) for r in trace.of(LogEvent.JOB_ENQUEUED.value)}
    completed = Counter(int(str(r.get("job_id"))) for r in trace.of(LogEvent.JOB_COMPLETED.value))
    not_once = sorted(i for i in enqueued if completed[i] != 1)
    status = _final_status(world) if world._tmp is not None else Counter()
    starts = Counter(str(r.get("label")) for r in trace.of(LogEvent.JOB_STARTED.value))
    # An entry's run may wait for a slot up to the longest queue job (1.5 s) past its due.
    want = int(PRODUCE_FOR / (PERIOD + 1.5))
    slow = {
        entry_name(i): starts[entry_name(i)]
        for i in range(1, WORKERS + 1)
        if starts[entry_name(i)] < want
    }
    return [
        invariants.per_host_concurrency(trace, CONCURRENCY),
        invariants.no_idle_slot_while_due(
            trace, epoch=world.clock.epoch.timestamp(), concurrency=CONCURRENCY, max_wait=0.5
        ),
        Check(
            "every queue job done exactly once",
            len(enqueued) == JOBS and not not_once and status == Counter(done=JOBS),
            f"{len(enqueued)} enqueued, not exactly once: {not_once[:10]}, final {dict(status)}",
        ),
        Check(
            f"each entry ran at least {want} times (its cadence held under queue load)",
            not slow,
            f"short: {slow}",
        ),
        *invariants.queue_history(world, invariants.retry_policies(Chunk)),
        invariants.bounded_steps(world, 1000),
    ]


SCENARIO = Scenario(
    name="shared_slots",
    summary="interval entries and a busy queue on 2 workers x 2 slots: never over the limit",
    seeds=(1, 2, 3, 4, 5),
    main=main,
    checks=checks,
)
