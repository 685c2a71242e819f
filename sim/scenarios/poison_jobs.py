"""`poison_jobs`: jobs that kill their worker, ignore cancellation or call `sys.exit()`.

Two workers with two slots each drain a Poisson stream of ordinary jobs into which a few
poison jobs are mixed: `KillsWorker` takes its whole host down (as `os._exit`, a segfault
or the OOM killer would; a simulated supervisor restarts the host a second later),
`IgnoresCancel` swallows its timeout's cancellation for hours, and `Exits` calls
`sys.exit()`. Checks: every ordinary job is done exactly once; a killer runs at most
`max_crashes` times and ends `failed`; every run ends within its timeout plus the cancel
grace (a stubborn job is abandoned, its slot freed); `sys.exit()` fails the job. A job
that ran beside a killer dies with it (SIGKILL takes the whole process): every job but the
killers allows 50 crashes, so only the killers reach their limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, ClassVar

from reference import Job, current_worker
from reference.options import DEFAULT_MAX_CRASHES, DEFAULT_TIMEOUT
from reference.records import LogEvent
from reference.runner import CANCEL_GRACE
from reference.sqlite_store import SqliteStore
from sim import invariants
from sim.host import Host, drain, producer_for, sqlite_queue
from sim.scenario import Check, Scenario

if TYPE_CHECKING:
    from sim.trace import Trace
    from sim.world import World

WORKERS = 2
CONCURRENCY = 2
ORDINARY = 400
PRODUCE_FOR = 400.0
POISON_EACH = 3  # killers, stubborn and exiting jobs, each
RESTART_AFTER = 1.0  # the simulated supervisor's restart delay
STUBBORN_TIMEOUT = 2.0
DRAIN_DEADLINE = 900.0


class Chunk(Job):
    """An ordinary job. It may share a worker with a killer and die with it, so it allows
    more crashes than the default (README: a bystander's crashes count too)."""

    options: ClassVar[dict[str, object]] = {"max_crashes": 50}

    async def perform(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class KillsWorker(Job):
    """Takes its host down from inside the run; the host comes back `RESTART_AFTER` later."""

    world: ClassVar[World | None] = None

    async def perform(self) -> None:
        world = KillsWorker.world
        assert world is not None
        (host,) = [h for h in world.hosts if h.index == current_worker()]
        loop = asyncio.get_running_loop()
        loop.call_soon(_supervise_crash, host)
        await asyncio.sleep(3600.0)  # never returns: its process is gone


class IgnoresCancel(Job):
    """Swallows every cancellation and goes on for hours of virtual time."""

    options: ClassVar[dict[str, object]] = {"timeout": STUBBORN_TIMEOUT, "max_crashes": 50}

    async def perform(self) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + 10_000.0
        while loop.time() < end:
            with contextlib.suppress(asyncio.CancelledError):  # the poison: swallowed
                await asyncio.sleep(end - loop.time())


class Exits(Job):
    """Calls sys.exit() (argparse and click do) from inside a run."""

    options: ClassVar[dict[str, object]] = {"max_crashes": 50}

    async def perform(self) -> None:
        sys.exit(3)


_restarts: set[asyncio.Task[None]] = set()  # owned here until each restart is done
_stopping: list[bool] = [False]


def _supervise_crash(host: Host) -> None:
    task = asyncio.get_running_loop().create_task(_crash_and_restart(host))
    _restarts.add(task)
    task.add_done_callback(_restarts.discard)


async def _crash_and_restart(host: Host) -> None:
    await host.crash()
    await asyncio.sleep(RESTART_AFTER)
    if not _stopping[0] and not host.alive:
        host.start()


def db_path(world: World) -> str:
    return f"{world.tmpdir}/queue.db"


async def main(world: World) -> None:
    KillsWorker.world = world
    _stopping[0] = False
    path = db_path(world)
    spec = sqlite_queue(world, path, WORKERS)
    hosts = [Host(world, i, concurrency=CONCURRENCY, queue=spec) for i in range(1, WORKERS + 1)]
    for host in hosts:
        host.start()
    rng = world.child_rng("workload")
    poison: list[type[Job]] = [KillsWorker, IgnoresCancel, Exits] * POISON_EACH
    stream: list[type[Job]] = [Chunk] * ORDINARY + poison
    rng.shuffle(stream)
    store = SqliteStore(path, busy_timeout_ms=0)
    producer = producer_for(world, store, spec)
    try:
        for cls in stream:
            await asyncio.sleep(rng.expovariate(len(stream) / PRODUCE_FOR))
            args: tuple[object, ...] = (round(rng.uniform(0.2, 1.5), 3),) if cls is Chunk else ()
            producer.enqueue(cls, args, options=None)
        world.emit("producer_done")
        waited = await drain(store, deadline=DRAIN_DEADLINE, step=1.0)
        world.emit("drain_wait_over", waited=waited)
    finally:
        _stopping[0] = True
        store.close()
        for task in list(_restarts):
            await task
        for host in hosts:
            await host.stop()
        KillsWorker.world = None


def _rows(world: World) -> dict[int, tuple[str, str, str | None]]:
    """id -> (class name, status, last_error) from the final database."""
    conn = sqlite3.connect(db_path(world))
    try:
        return {
            int(i): (str(name), str(status), err)
            for i, name, status, err in conn.execute(
                "SELECT id, class_name, status, last_error FROM jobs"
            )
        }
    finally:
        conn.close()


def runs_end_in_time(trace: Trace, bound: float) -> Check:
    """Every run on a live host ends within `bound` s of its start (timeout + cancel grace):
    a job that ignores cancellation must not hold its slot, or a stop, for ever."""
    open_runs: dict[int, dict[str, int]] = defaultdict(dict)
    worst, worst_label = 0, ""
    for r in trace.records:
        if r.event in ("host_crash", "host_stopped"):
            open_runs[int(str(r.get("host")))].clear()
        elif r.event == LogEvent.JOB_STARTED.value:
            open_runs[r.host][str(r.get("label"))] = r.ns
        elif r.event in invariants.ENDS:
            started = open_runs[r.host].pop(str(r.get("label")), None)
            if started is not None and r.ns - started > worst:
                worst, worst_label = r.ns - started, str(r.get("label"))
    end = trace.records[-1].ns if trace.records else 0
    for runs in open_runs.values():
        for label, started in runs.items():
            if end - started > worst:
                worst, worst_label = end - started, f"{label} (never ended)"
    return Check(
        f"every run ends within {bound:g} s (timeout + cancel grace)",
        worst / invariants.NS <= bound,
        f"longest {worst / invariants.NS:.3f} s: {worst_label}",
    )


def checks(world: World) -> list[Check]:
    trace = world.trace
    rows = _rows(world) if world._tmp is not None else {}
    by_class: dict[str, list[int]] = defaultdict(list)
    for job_id, (name, _, _) in sorted(rows.items()):
        by_class[name.rsplit(".", 1)[-1]].append(job_id)
    completed = Counter(int(str(r.get("job_id"))) for r in trace.of(LogEvent.JOB_COMPLETED.value))
    starts = Counter(str(r.get("label")) for r in trace.of(LogEvent.JOB_STARTED.value))

    def runs(job_id: int) -> int:
        return starts[f"{rows[job_id][0]}#{job_id}"]

    ordinary = by_class["Chunk"]
    not_once = [i for i in ordinary if completed[i] != 1 or rows[i][1] != "done"]
    killers = by_class["KillsWorker"]
    bad_killers = [
        (i, rows[i][1], runs(i))
        for i in killers
        if rows[i][1] != "failed"
        or not str(rows[i][2]).startswith("WorkerLostError")
        or runs(i) > DEFAULT_MAX_CRASHES
    ]
    stubborn = by_class["IgnoresCancel"]
    abandoned = Counter(str(r.get("label")) for r in trace.of(LogEvent.JOB_ABANDONED.value))
    bad_stubborn = [
        i for i in stubborn if rows[i][1] != "failed" or abandoned[f"{rows[i][0]}#{i}"] != 1
    ]
    exits = by_class["Exits"]
    bad_exits = [i for i in exits if (rows[i][1], rows[i][2]) != ("failed", "SystemExit: 3")]
    return [
        Check(
            "every ordinary job done exactly once",
            len(ordinary) == ORDINARY and not not_once,
            f"{len(ordinary)} stored, not once: {not_once[:10]}",
        ),
        Check(
            f"a job that kills its worker runs <= {DEFAULT_MAX_CRASHES} times, then fails",
            len(killers) == POISON_EACH and not bad_killers,
            f"{bad_killers[:5]}",
        ),
        Check(
            "a job ignoring cancellation is abandoned once and fails",
            len(stubborn) == POISON_EACH and not bad_stubborn,
            f"{bad_stubborn[:5]}",
        ),
        Check(
            "sys.exit() in a job fails it",
            len(exits) == POISON_EACH and not bad_exits,
            f"{bad_exits[:5]}",
        ),
        runs_end_in_time(trace, DEFAULT_TIMEOUT + CANCEL_GRACE + 0.01),
        *invariants.queue_history(world),
        invariants.per_host_concurrency(trace, CONCURRENCY),
        invariants.bounded_steps(world, 1000),
    ]


SCENARIO = Scenario(
    name="poison_jobs",
    summary="jobs that kill their worker, ignore cancellation or sys.exit(): the queue drains",
    seeds=(1, 2, 3, 4, 5),
    main=main,
    checks=checks,
)
