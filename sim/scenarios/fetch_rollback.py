"""`fetch_error_rollback`: the 0.6.1 regression of the 0.6.0 fetch that never rolled back.

Two workers consume a real SQLite file through connections that raise
`sqlite3.OperationalError` inside fetch's transaction at seeded points (after BEGIN, inside
the UPDATE statement, before and at COMMIT), while a producer enqueues 150 jobs over half
an hour of virtual time; then faults stop and the queue must drain. Without the rollback a
faulted connection stays inside BEGIN IMMEDIATE: its next fetch fails with "cannot start a
transaction within a transaction" and the other worker finds the database locked.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from typing import TYPE_CHECKING

from reference import Job
from reference.records import LogEvent
from reference.sqlite_store import SqliteStore
from sim import invariants
from sim.faults import FETCH_SITES, FaultPlan, faulty_store_factory
from sim.host import Host, QueueSpec, poisson_load
from sim.scenario import Check, Scenario

if TYPE_CHECKING:
    import random

    from sim.faults import Injection
    from sim.world import World

JOBS = 150
WORKERS = 2
PRODUCE_FOR = 1800.0
DRAIN_DEADLINE = 3 * 3600.0
FAULT_RATE = 0.12


class RollbackWork(Job):
    """Sleeps a given virtual time, or fails every time (to exercise the retry path)."""

    # Exponential, with its default jitter: the retry-window check judges growing delays.
    options = {"retry": 2, "retry_delay": 5, "backoff": "exponential", "timeout": 120}

    async def perform(self, seconds: float, fail: bool) -> None:
        await asyncio.sleep(seconds)
        if fail:
            raise RuntimeError("this job always fails")


def db_path(world: World) -> str:
    return f"{world.tmpdir}/queue.db"


async def main(world: World) -> None:
    path = db_path(world)
    SqliteStore.create_schema(path)  # as the supervisor does, before any worker starts

    def traced(injection: Injection) -> None:
        world.emit("fault_injected", site=injection.site, call=injection.call)

    plan = FaultPlan(
        world.child_rng("store-faults"),
        dict.fromkeys(FETCH_SITES, FAULT_RATE),
        on_inject=traced,
    )
    world.faults = plan  # type: ignore[attr-defined]  # read back by the checks
    spec = QueueSpec(
        open_store=faulty_store_factory(path, plan), peers=tuple(range(1, WORKERS + 1))
    )
    hosts = [Host(world, i, concurrency=2, queue=spec) for i in range(1, WORKERS + 1)]

    def job(rng: random.Random) -> tuple[type[Job], tuple[object, ...]]:
        # A tenth run longer than the 60 s lease: their worker must keep renewing it.
        seconds = rng.uniform(70, 110) if rng.random() < 0.1 else rng.uniform(0, 20)
        return RollbackWork, (round(seconds, 3), rng.random() < 0.1)

    def quiesce() -> None:
        plan.quiesce()
        world.emit("faults_quiesced")

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
        before_drain=quiesce,
    )


def _final_rows(world: World) -> list[tuple[int, str, int]]:
    conn = sqlite3.connect(db_path(world))
    try:
        return conn.execute("SELECT id, status, attempts FROM jobs ORDER BY id").fetchall()
    finally:
        conn.close()


def checks(world: World) -> list[Check]:
    trace = world.trace
    plan: FaultPlan | None = getattr(world, "faults", None)
    injected = len(plan.injected) if plan is not None else 0
    # Faults fire inside claims ("fetch") and at the COMMIT of any transaction (a claim, a
    # recovery pass, a graceful stop): every store error must be one of them.
    fetch_errors = sum(1 for _ in trace.of(LogEvent.STORE_ERROR.value))
    enqueued = {int(str(r.get("job_id"))) for r in trace.of(LogEvent.JOB_ENQUEUED.value)}
    completed = Counter(int(str(r.get("job_id"))) for r in trace.of(LogEvent.JOB_COMPLETED.value))
    dead = Counter(int(str(r.get("job_id"))) for r in trace.of(LogEvent.JOB_DEAD.value))
    rows = _final_rows(world) if world._tmp is not None else []
    status = {job_id: st for job_id, st, _ in rows}
    attempts = {job_id: n for job_id, _, n in rows}
    lost = sorted(i for i in enqueued if status.get(i) not in ("done", "failed"))
    twice = sorted(i for i, n in completed.items() if n > 1)
    bad_failed = sorted(
        i for i in enqueued if status.get(i) == "failed" and (attempts.get(i) != 3 or dead[i] != 1)
    )
    done_mismatch = sorted(i for i in enqueued if status.get(i) == "done" and completed[i] != 1)
    running = sorted(i for i, st in status.items() if st == "running")
    superseded = sorted(int(str(r.get("job_id"))) for r in trace.of(LogEvent.JOB_SUPERSEDED.value))
    return [
        Check(
            "faults were injected inside fetch",
            injected > 0,
            f"{injected} injected",
        ),
        Check(
            "every store error was an injected fault (the next transaction works)",
            fetch_errors == injected,
            f"{fetch_errors} fetch errors, {injected} injected",
        ),
        Check("all jobs enqueued", len(enqueued) == JOBS, f"{len(enqueued)} enqueued"),
        Check("no job lost (each ends done or failed)", not lost, f"lost: {lost[:10]}"),
        Check("no job completed twice", not twice, f"twice: {twice[:10]}"),
        Check("done jobs completed exactly once", not done_mismatch, f"{done_mismatch[:10]}"),
        Check("failed jobs ran all 3 attempts", not bad_failed, f"{bad_failed[:10]}"),
        Check("nothing left running", not running, f"running: {running[:10]}"),
        *invariants.queue_history(world, invariants.retry_policies(RollbackWork)),
        Check(
            "no claim superseded while its worker lived (leases renewed)",
            not superseded,
            f"superseded: {superseded[:10]}",
        ),
    ]


SCENARIO = Scenario(
    name="fetch_error_rollback",
    summary="SQLite errors inside fetch's transaction: roll back, keep serving, lose nothing",
    seeds=(1, 2, 3, 4, 5),
    main=main,
    checks=checks,
)
