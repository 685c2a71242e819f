"""`lease_takeover`: only a silent owner loses its jobs; wall-clock steps take nothing over.

Two workers with one slot each run long queue jobs (about 100 virtual s, past the 60 s
lease) while the wall clock steps forward by 150 s every 97 s (NTP corrections). Steps must
not make a live owner look dead: peers judge liveness by how long *they* have seen the same
heartbeat, on their monotonic clocks. Worker 1 also stalls twice (its heartbeats cannot be
written for 150 s, as when it is frozen or cut off from the store): worker 2 then judges it
dead, re-queues its job and takes it over (attempt a+1), and the old run must end
superseded, its outcome refused by the owner and attempt fence. Checks: takeovers happened,
all of them of worker 1's runs claimed before a stall, no outcome from a superseded
attempt, every job ends done, and the queue-history invariants.

Each takeover counts as a crash of the job (a stall past the lease is treated as a death),
so on some seeds a job taken over `max_crashes` times could end failed with
WorkerLostError; that is accepted and reported. Done rows finished over an hour of
(stepped) wall time ago are purged: a missing row counts as done if the trace saw the job
complete.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import sqlite3
from collections import Counter
from typing import TYPE_CHECKING

from reference import Job
from reference.consumer import DEFAULT_LEASE
from reference.records import LogEvent
from reference.sqlite_store import SqliteStore
from reference.upkeep import CHECKS_PER_LEASE
from sim import invariants
from sim.clock import SkewProgram
from sim.host import Host, final_jobs, poisson_load, sqlite_queue
from sim.scenario import Check, Scenario
from sim.world import World

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

    from reference.store import Store

WORKERS = 2
JOBS = 24
PRODUCE_FOR = 1200.0
STEP_EVERY = 97.0
STEP_BY = 150.0
DRAIN_DEADLINE = 3 * 3600.0
STALLED = 1  # the worker whose heartbeats stall
STALLS = ((300.0, 450.0), (800.0, 950.0))  # virtual s: its heartbeats fail meanwhile


class LongRun(Job):
    """Outlives its lease: kept only by renewal."""

    options = {"timeout": 600}

    async def perform(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def make_world(seed: int) -> World:
    steps = [(STEP_EVERY * k, STEP_BY * k) for k in range(1, int(PRODUCE_FOR // STEP_EVERY) + 1)]
    return World(seed, skew=SkewProgram(steps))


def db_path(world: World) -> str:
    return f"{world.tmpdir}/queue.db"


def stalled(world: World) -> bool:
    return any(start <= world.now() < end for start, end in STALLS)


def open_store(world: World, path: str) -> Callable[[int], Store]:
    """Each host's own connection; the stalled worker's heartbeats fail during a stall."""

    def open_for(host: int) -> Store:
        def hook(site: str) -> None:
            if host == STALLED and site == "heartbeat" and stalled(world):
                raise sqlite3.OperationalError("database is locked")

        return SqliteStore(path, busy_timeout_ms=0, fault_hook=hook)

    return open_for


async def main(world: World) -> None:
    path = db_path(world)
    spec = dataclasses.replace(
        sqlite_queue(world, path, WORKERS), open_store=open_store(world, path)
    )
    hosts = [Host(world, i, concurrency=1, queue=spec) for i in range(1, WORKERS + 1)]

    def job(rng: random.Random) -> tuple[type[Job], tuple[object, ...]]:
        return LongRun, (round(rng.uniform(80, 120), 3),)

    await poisson_load(
        world,
        hosts,
        spec,
        lambda: SqliteStore(path, busy_timeout_ms=0),
        jobs=JOBS,
        over=PRODUCE_FOR,
        job=job,
        drain_deadline=DRAIN_DEADLINE,
        drain_step=10,
    )


def _held_through_a_stall(world: World) -> tuple[list[int], list[int]]:
    """(runs the stalled worker held past the point where its peer must have judged it
    dead, the stalled worker's runs that ended superseded), as job ids.

    Its last heartbeat is at or before the stall's start; the peer sees that value within
    one maintenance pass (lease/CHECKS_PER_LEASE), judges the owner dead a lease later, at
    the next pass. A run claimed before the stall and still going then must end superseded.
    """
    ends = {
        LogEvent.JOB_COMPLETED.value,
        LogEvent.JOB_RETRY_SCHEDULED.value,
        LogEvent.JOB_DEAD.value,
        LogEvent.JOB_SUPERSEDED.value,
    }
    claimed: dict[tuple[int, int], float] = {}
    ended: dict[tuple[int, int], tuple[float, str]] = {}
    for r in world.trace.records:
        if r.host != STALLED or r.get("job_id") is None:
            continue
        key = (int(str(r.get("job_id"))), int(str(r.get("attempt"))))
        if r.event == LogEvent.JOB_CLAIMED.value:
            claimed[key] = r.ns / 1e9
        elif r.event in ends:
            ended[key] = (r.ns / 1e9, r.event)
    judged = DEFAULT_LEASE * (1 + 2 / CHECKS_PER_LEASE) + 1.0
    held, lost = [], []
    for key, at in claimed.items():
        end, event = ended.get(key, (math.inf, ""))
        if any(at <= start and end >= start + judged for start, _ in STALLS):
            held.append(key[0])
        if event == LogEvent.JOB_SUPERSEDED.value:
            lost.append(key[0])
    return held, lost


def checks(world: World) -> list[Check]:
    trace = world.trace
    held, lost = _held_through_a_stall(world)
    enqueued = {int(str(r.get("job_id"))) for r in trace.of(LogEvent.JOB_ENQUEUED.value)}
    superseded = list(trace.of(LogEvent.JOB_SUPERSEDED.value))
    not_stalled = [r.get("job_id") for r in superseded if r.host != STALLED]
    completed = {int(str(r.get("job_id"))) for r in trace.of(LogEvent.JOB_COMPLETED.value)}
    rows = final_jobs(world, db_path(world))
    final = Counter(
        "done"
        if rows.get(i, ("done" if i in completed else "missing", ""))[0] == "done"
        else "lost to max_crashes"
        if rows[i][0] == "failed" and rows[i][1].startswith("WorkerLostError")
        else f"{rows.get(i, ('missing', ''))[0]} (job {i})"
        for i in enqueued
    )
    unfinished = [k for k in final if k not in ("done", "lost to max_crashes")]
    return [
        Check(
            "every run the stalled owner held through a stall was taken over",
            set(held) <= set(lost),
            f"held {held}, superseded {lost}",
        ),
        Check(
            "only the stalled owner lost runs (clock steps took nothing over)",
            not not_stalled,
            f"superseded on other workers: {not_stalled[:5]}",
        ),
        Check(
            "every job ends done (or failed by max_crashes takeovers)",
            len(enqueued) == JOBS and not unfinished,
            f"{len(enqueued)} enqueued, final {dict(final)}",
        ),
        *invariants.queue_history(world, invariants.retry_policies(LongRun)),
        invariants.per_host_concurrency(trace, 1),
        invariants.bounded_steps(world, 1000),
    ]


SCENARIO = Scenario(
    name="lease_takeover",
    summary="a stalled owner's jobs are taken over, a clock step's never; stale outcomes refused",
    seeds=(1, 2, 3, 4, 5),
    main=main,
    checks=checks,
    make_world=make_world,
)
