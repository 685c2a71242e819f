"""Start-up recovery survives a locked database: the worker keeps running, logs, and
re-queues its leftover jobs as soon as the lock is gone (found by the swarm: a worker
whose recovery hit "database is locked" died)."""

from __future__ import annotations

import asyncio
import sqlite3

from reference import Job
from reference.records import LogEvent, NewJob, WorkerRow
from reference.sqlite_store import SqliteStore
from sim.faults import LockHolder
from sim.host import Host, QueueSpec
from sim.world import World


class RecoveryNoop(Job):
    async def perform(self) -> None:
        return None


def test_recovery_waits_out_a_locked_database() -> None:
    world = World(1)
    path = f"{world.tmpdir}/queue.db"
    store = SqliteStore(path)
    now = world.clock.realtime()
    job_id = store.enqueue(NewJob(f"{__name__}.RecoveryNoop", "[]", "{}", now, now))
    # Left running by a previous life of worker 1 (its process is gone) with a long lease.
    store.register_worker(WorkerRow("sim:1.0", "sim", 1000, 1, "*", now, now))
    assert store.claim("sim:1.0", now=now, lease=3600, limit=1)[1]
    store.close()
    holder = LockHolder(path)
    spec = QueueSpec(open_store=lambda _i: SqliteStore(path, busy_timeout_ms=0), peers=(1,))
    host = Host(world, 1, queue=spec)

    async def main(w: World) -> None:
        assert holder.acquire()
        host.start()
        await asyncio.sleep(10)
        assert host.alive, host.failures
        holder.release()
        await asyncio.sleep(120)  # the next maintenance pass recovers
        await host.stop()

    try:
        world.run(main)
        events = [r.event for r in world.trace.records]
        assert LogEvent.STORE_ERROR.value in events
        assert LogEvent.JOBS_RECOVERED.value in events
        assert not host.failures
        conn = sqlite3.connect(path)
        try:
            (status,) = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        finally:
            conn.close()
        assert status == "done"
    finally:
        holder.close()
        world.close()
