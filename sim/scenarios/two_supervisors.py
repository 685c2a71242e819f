"""`two_supervisors`: two machines' supervisors on one store; whole supervisors crash and restart.

Machines A and B each run a supervisor of two workers, indexes 1 and 2, with its own
wake-up network (a second `Fabric`): the same indexes, the same placement, two sets of
owners. A producer on A enqueues 120 jobs over an hour (a few longer than the 60 s lease,
kept only by heartbeats); both machines load one schedule (an `every: 30` entry, from the
`schedules` rows). At seeded times one whole supervisor is killed (every worker of it at
once, as SIGKILL of its process group) or stopped gracefully, and comes back after a while
with new owners. A starting supervisor's workers must leave the other machine's running
jobs alone: wave 1's recovery by worker index took them for its own leftovers and ran them
a second time, at once. Checks: no job runs twice at once, every job settles exactly once
(done, or failed by `max_crashes` after real crashes), each tick fires once, the
queue-history invariants, no worker died of an error.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

from reference import Job
from reference.records import LogEvent
from reference.schedule import ScheduleEntry
from reference.sharding import worker_for
from reference.sqlite_store import SqliteStore
from sim import invariants
from sim.fabric import Fabric
from sim.host import Host, drain, final_jobs, producer_for, sqlite_queue
from sim.scenario import Check, Scenario

if TYPE_CHECKING:
    from sim.world import World

JOBS = 120
PRODUCE_FOR = 3600.0
DRAIN_DEADLINE = 3 * 3600.0
EVERY = 30.0
MACHINES = ("simA", "simB")


class Chore(Job):
    """Mostly short; one in eight outlives the lease."""

    options = {"timeout": 600}

    async def perform(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Tick(Job):
    """The schedule's short job."""

    async def perform(self) -> None:
        await asyncio.sleep(0.5)


def db_path(world: World) -> str:
    return f"{world.tmpdir}/queue.db"


def supervisors(world: World) -> dict[str, list[Host]]:
    """Both machines' workers: trace hosts 1-2 on A, 11-12 on B (both have a worker 1)."""
    spec = sqlite_queue(world, db_path(world), 2, schedule_rows=True)
    name = "every_30"
    entry = ScheduleEntry(
        name=name, job_class=Tick, every=EVERY, timeout=30.0, worker=worker_for(name, 2, None)
    )
    fabrics = {MACHINES[0]: world.fabric, MACHINES[1]: Fabric(world.child_rng("fabric-b"))}
    return {
        machine: [
            Host(
                world,
                index,
                entries=[entry],
                queue=spec,
                machine=machine,
                fabric=fabrics[machine],
                trace_id=index + 10 * m,
            )
            for index in (1, 2)
        ]
        for m, machine in enumerate(MACHINES)
    }


async def turbulence(world: World, machines: dict[str, list[Host]], until: float) -> None:
    """Kill or stop one whole supervisor at a time, then bring it back with new owners."""
    rng = world.child_rng("supervisors")
    while world.now() < until:
        await asyncio.sleep(rng.uniform(120, 600))
        machine = rng.choice(MACHINES)
        graceful = rng.random() < 0.3
        world.emit("supervisor_down", machine=machine, graceful=graceful)
        for host in machines[machine]:
            if graceful:
                await host.stop()
            else:
                await host.crash()
        await asyncio.sleep(rng.uniform(20, 240))
        world.emit("supervisor_up", machine=machine)
        for host in machines[machine]:
            host.start()


async def main(world: World) -> None:
    machines = supervisors(world)
    hosts = [host for group in machines.values() for host in group]
    for host in hosts:
        host.start()
    producer_store = SqliteStore(db_path(world), busy_timeout_ms=0)
    producer = producer_for(world, producer_store, machines[MACHINES[0]][0].queue)  # type: ignore[arg-type]
    rng = world.child_rng("workload")
    chaos = world.loop.create_task(turbulence(world, machines, PRODUCE_FOR))
    try:
        for _ in range(JOBS):
            await asyncio.sleep(rng.expovariate(JOBS / PRODUCE_FOR))
            seconds = rng.uniform(70, 110) if rng.random() < 0.125 else rng.uniform(0.5, 20)
            producer.enqueue(Chore, (round(seconds, 3),), options=None)
        world.emit("producer_done")
        await chaos
        for host in hosts:
            if not host.alive:
                host.start()
        waited = await drain(producer_store, deadline=DRAIN_DEADLINE, step=10)
        world.emit("drain_wait_over", waited=waited)
    finally:
        chaos.cancel()
        producer_store.close()
        for host in hosts:
            await host.stop()


def checks(world: World) -> list[Check]:
    trace = world.trace
    enqueued = {int(str(r.get("job_id"))) for r in trace.of(LogEvent.JOB_ENQUEUED.value)}
    completed = Counter(int(str(r.get("job_id"))) for r in trace.of(LogEvent.JOB_COMPLETED.value))
    rows = final_jobs(world, db_path(world))
    final = Counter(
        "done once"
        if rows.get(i, ("done", ""))[0] == "done" and completed[i] == 1
        else "lost to max_crashes"
        if rows.get(i, ("", ""))[0] == "failed" and rows[i][1].startswith("WorkerLostError")
        else f"{rows.get(i, ('missing', ''))[0]} completed {completed[i]}x (job {i})"
        for i in enqueued
    )
    odd = [k for k in final if k not in ("done once", "lost to max_crashes")]
    downs = sum(1 for _ in trace.of("supervisor_down"))
    return [
        Check("whole supervisors went down and came back", downs > 0, f"{downs} times"),
        Check(
            "every job settles exactly once (done once, or failed by real crashes)",
            len(enqueued) == JOBS and not odd,
            f"{len(enqueued)} enqueued, final {dict(final)}",
        ),
        invariants.no_concurrent_runs(trace),
        invariants.each_tick_fires_once(trace),
        *invariants.queue_history(world, invariants.retry_policies(Chore)),
        invariants.per_host_concurrency(trace, 2),
        invariants.bounded_steps(world, 1000),
    ]


SCENARIO = Scenario(
    name="two_supervisors",
    summary="two machines' supervisors share one store; whole supervisors crash and restart",
    seeds=(1, 2, 3, 4, 5),
    main=main,
    checks=checks,
)
