"""`notifier_ring_fallback`: wake one worker that can take the job, past dead and busy ones.

Five workers on the in-memory fabric: a seeded subset dead (socket file gone, or a file
whose listener crashed), some busy (a schedule entry holds their only slot for hours),
the rest idle. A producer enqueues on virtual time, and once every live worker is crashed
and restarted. The producer must wake exactly one worker on the happy path, fall back
around the ring past unavailable ones, and a busy worker must hand the wake-up on, so no
due job waits for a poll while a live worker has a free slot.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from reference import Job
from reference.records import LogEvent
from reference.schedule import ScheduleEntry
from reference.sqlite_store import SqliteStore
from sim import invariants
from sim.host import Host, QueueSpec, drain, producer_for
from sim.scenario import Check, Scenario

if TYPE_CHECKING:
    from sim.trace import Trace
    from sim.world import World

WORKERS = 5
JOBS = 120
POLL = 5.0
NS = 1_000_000_000
# A due job with a free live slot somewhere must start well inside one poll.
MAX_PICKUP = 1.0
_WOKE = ("delivered", "pending")


class RingWork(Job):
    """A short queued job."""

    async def perform(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Hog(Job):
    """Holds its worker's only slot for hours: makes that worker busy."""

    async def perform(self) -> None:
        await asyncio.sleep(10 * 3600)


def db_path(world: World) -> str:
    return f"{world.tmpdir}/queue.db"


def _free_live(hosts: list[Host]) -> int:
    return sum(h.worker.slots.free for h in hosts if h.alive and h.worker is not None)


async def main(world: World) -> None:
    path = db_path(world)
    SqliteStore.create_schema(path)
    rng = world.child_rng("ring")
    indexes = list(range(1, WORKERS + 1))
    dead = sorted(rng.sample(indexes, rng.randint(1, WORKERS - 2)))
    alive = [i for i in indexes if i not in dead]
    busy: list[int] = sorted(rng.sample(alive, rng.randint(1, len(alive) - 1)))
    world.emit("world", dead=" ".join(map(str, dead)), busy=" ".join(map(str, busy)))

    def open_store(_index: int) -> SqliteStore:
        return SqliteStore(path, busy_timeout_ms=0)

    spec = QueueSpec(open_store=open_store, peers=tuple(indexes), poll_interval=POLL)
    hosts: list[Host] = []
    for i in indexes:
        entries = []
        if i in busy:
            entries = [
                ScheduleEntry(name=f"hog{i}", job_class=Hog, every=1.0, timeout=1e6, worker=i)
            ]
        hosts.append(Host(world, i, entries=entries, concurrency=1 if i in busy else 2, queue=spec))
    for i in dead:
        if rng.random() < 0.5:  # listener gone, file left behind: REFUSED
            hosts[i - 1].start()
    for i in alive:
        hosts[i - 1].start()
    await asyncio.sleep(10)  # hogs take their slots (first run within every + jitter)
    for host in hosts:
        if host.index in dead and host.alive:
            await host.crash()

    store = SqliteStore(path, busy_timeout_ms=0)
    producer = producer_for(world, store, spec)
    try:
        for n in range(JOBS):
            if n == JOBS // 2:
                # Every live worker dies at once; jobs enqueued now wake nobody and must
                # still run once the workers are back (recovery + the first fetch).
                await asyncio.sleep(1)  # the last job is claimed (its pickup is judged)
                for i in alive:
                    await hosts[i - 1].crash()
                for _ in range(5):
                    job_id = producer.enqueue(RingWork, (0.5,), options=None)
                    world.emit("enqueued", job_id=job_id, free_live=0)
                await asyncio.sleep(30)
                for i in alive:
                    hosts[i - 1].start()
                await asyncio.sleep(10)
            await asyncio.sleep(rng.expovariate(1 / 20))
            free = _free_live(hosts)
            job_id = producer.enqueue(RingWork, (round(rng.uniform(0, 2), 3),), options=None)
            world.emit("enqueued", job_id=job_id, free_live=free)
        await drain(store, deadline=600, step=5)
    finally:
        store.close()
        for host in hosts:
            if host.index in busy:
                await host.crash()  # its hog would hold a graceful stop for hours
            elif host.alive:
                await host.stop()


def _liveness(trace: Trace) -> list[tuple[int, int, bool]]:
    """(ns, host, up) transitions of each host's listener, from the world events."""
    out = []
    for r in trace.records:
        if r.event == "host_start":
            out.append((r.ns, int(str(r.get("host"))), True))
        elif r.event in ("host_crash", "host_stopped"):
            out.append((r.ns, int(str(r.get("host"))), False))
    return out


def checks(world: World) -> list[Check]:
    trace = world.trace
    transitions = _liveness(trace)
    live: set[int] = set()
    ti = 0
    no_live_woken: list[str] = []
    extra_attempts: list[str] = []
    too_many: list[str] = []
    past_success: list[str] = []
    wakes = 0
    for r in trace.records:
        while ti < len(transitions) and transitions[ti][0] <= r.ns:
            _, host, up = transitions[ti]
            (live.add if up else live.discard)(host)
            ti += 1
        if r.event != LogEvent.WAKE_SENT.value:
            continue
        wakes += 1
        attempts = int(str(r.get("attempts")))
        path = str(r.get("path")).split()
        when = f"t={r.ns / NS:.3f}"
        if attempts > WORKERS:
            too_many.append(when)
        if live and r.get("woken") is None:
            no_live_woken.append(f"{when} live={sorted(live)} path={path}")
        if path and int(path[0].split(":")[0]) in live and attempts != 1:
            extra_attempts.append(f"{when} path={path}")
        woke_at = [k for k, step in enumerate(path) if step.split(":")[1] in _WOKE]
        if woke_at and woke_at[0] != len(path) - 1:
            past_success.append(f"{when} path={path}")
    enqueued_at: dict[int, tuple[int, int]] = {}
    for r in trace.of("enqueued"):
        enqueued_at[int(str(r.get("job_id")))] = (r.ns, int(str(r.get("free_live"))))
    claimed_at: dict[int, int] = {}
    for r in trace.of(LogEvent.JOB_CLAIMED.value):
        claimed_at.setdefault(int(str(r.get("job_id"))), r.ns)
    completed = {int(str(r.get("job_id"))) for r in trace.of(LogEvent.JOB_COMPLETED.value)}
    slow = sorted(
        (round((claimed_at[j] - ns) / NS, 3), j)
        for j, (ns, free) in enqueued_at.items()
        if free > 0 and j in claimed_at and (claimed_at[j] - ns) / NS > MAX_PICKUP
    )
    never_ran = sorted(j for j in enqueued_at if j not in completed)
    return [
        Check("wake-ups were sent", wakes >= JOBS, f"{wakes} sent"),
        Check(
            "a live worker is woken whenever one exists",
            not no_live_woken,
            "; ".join(no_live_woken[:3]),
        ),
        Check(f"at most {WORKERS} attempts per wake-up", not too_many, ", ".join(too_many[:3])),
        Check(
            "exactly one attempt when the first choice is alive",
            not extra_attempts,
            "; ".join(extra_attempts[:3]),
        ),
        Check(
            "no attempt after a worker was woken",
            not past_success,
            "; ".join(past_success[:3]),
        ),
        Check("every job runs", not never_ran, f"never ran: {never_ran[:10]}"),
        Check(
            f"no job waits > {MAX_PICKUP:g}s while a live worker has a free slot",
            not slow,
            ", ".join(f"job {j} waited {w}s" for w, j in slow[-3:]),
        ),
        *invariants.queue_history(world, invariants.retry_policies(RingWork, Hog)),
    ]


SCENARIO = Scenario(
    name="notifier_ring_fallback",
    summary="wake one worker past dead (missing/refused) and busy ones; never wait a poll",
    seeds=(1, 2, 3, 4, 5, 6, 7, 8),
    main=main,
    checks=checks,
)
