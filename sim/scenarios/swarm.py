"""`swarm`: each seed draws a different world, with faults, and global invariants hold.

A world (`SwarmSpec`, plain data and JSON-round-trippable, so a failing one can be shrunk
and replayed) has 1-4 workers, interval and cron entries (some in Europe/Berlin), queue
producers with single and bulk enqueues, delays, failures, timeouts and retries, worker
crashes and restarts, lost wake-ups, SQLite faults inside fetch, complete and enqueue, and
wall-clock steps forward and back. Safety phase: all of it at once. Liveness phase: faults
stop, every worker is up, and the queue must drain (VOPR / Antithesis style).
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from reference import Job
from reference.errors import StoreError
from reference.records import LogEvent
from reference.schedule import ScheduleEntry
from reference.sqlite_store import SqliteStore
from reference.triggers import CronSchedule
from sim import invariants
from sim.clock import SkewProgram
from sim.faults import FaultPlan, faulty_store_factory
from sim.host import Host, QueueSpec, drain, producer_for
from sim.scenario import Check, Scenario
from sim.world import World, child_rng

if TYPE_CHECKING:
    import random

    from reference.producer import Producer
    from sim.faults import Injection

CRONS = ("*/5 * * * *", "*/2 * * * *", "0 * * * *", "30 2 * * *")
STORE_FAULT_SITES = (
    "fetch.after_begin",
    "fetch.statement",
    "fetch.before_commit",
    "complete",
    "enqueue",
    "enqueue_many.before_commit",
)
DRAIN_DEADLINE = 4 * 3600.0
RESTART_AFTER = 20.0


@dataclass(frozen=True, slots=True)
class EntrySpec:
    """One schedule entry of the world."""

    name: str
    worker: int
    duration: float
    timeout: float
    every: float | None = None
    cron: str | None = None
    tz: str = "UTC"


@dataclass(frozen=True, slots=True)
class SwarmSpec:
    """Everything a swarm run does, drawn from a seed or read back from JSON."""

    workers: int
    concurrency: int
    hours: float
    entries: tuple[EntrySpec, ...] = ()
    jobs: int = 0
    bulk_every: int = 0  # every n-th enqueue is a bulk of 3 (0: never)
    delayed_share: float = 0.0
    fail_share: float = 0.0
    slow_share: float = 0.0  # jobs that exceed their timeout
    retry: int = 0
    crashes: tuple[tuple[float, int], ...] = ()  # (virtual s, worker): restart 20 s later
    stops: tuple[tuple[float, int], ...] = ()  # (virtual s, worker): graceful stop, then same
    drops: tuple[tuple[float, int, float], ...] = ()  # (s, worker, seconds) lost wake-ups
    skew: tuple[tuple[float, float], ...] = ()  # (s, wall offset) NTP steps
    faults: tuple[tuple[str, float], ...] = ()  # (store site, per-call rate)
    epoch: str = "2026-03-29T00:30:00+00:00"  # the Berlin spring-forward night
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SwarmSpec:
        raw = json.loads(text)
        raw["entries"] = tuple(EntrySpec(**e) for e in raw.get("entries", ()))
        for key in ("crashes", "stops", "drops", "skew", "faults", "notes"):
            raw[key] = tuple(tuple(x) if isinstance(x, list) else x for x in raw.get(key, ()))
        return cls(**raw)


def draw(rng: random.Random) -> SwarmSpec:
    """A random world: the swarm's sampling of sizes, workloads and fault rates."""
    workers = rng.randint(1, 4)
    hours = rng.choice((1.0, 2.0, 3.0))
    entries = []
    for i in range(rng.randint(0, 5)):
        worker = rng.randint(1, workers)
        if rng.random() < 0.6:
            every = float(rng.randint(5, 300))
            duration = round(rng.uniform(0, 2 * every), 3)
            entries.append(
                EntrySpec(f"e{i}", worker, duration, duration * rng.choice((0.5, 2.0)), every=every)
            )
        else:
            duration = round(rng.uniform(0, 200), 3)
            entries.append(
                EntrySpec(
                    f"c{i}",
                    worker,
                    duration,
                    duration * rng.choice((0.5, 2.0)) + 1,
                    cron=rng.choice(CRONS),
                    tz=rng.choice(("UTC", "Europe/Berlin")),
                )
            )
    span = hours * 3600
    crashes = tuple(
        sorted(
            (round(rng.uniform(60, span * 0.8), 3), rng.randint(1, workers))
            for _ in range(rng.randint(0, 3))
        )
    )
    drops = tuple(
        sorted(
            (
                round(rng.uniform(0, span * 0.8), 3),
                rng.randint(1, workers),
                round(rng.uniform(10, 300), 3),
            )
            for _ in range(rng.randint(0, 3))
        )
    )
    skew = tuple(
        sorted(
            (round(rng.uniform(60, span * 0.8), 3), round(rng.uniform(-1800, 1800), 3))
            for _ in range(rng.randint(0, 2))
        )
    )
    faults = tuple(
        (site, round(rng.uniform(0.01, 0.15), 4))
        for site in STORE_FAULT_SITES
        if rng.random() < 0.5
    )
    # Drawn last, so the rest of each seed's world is what it was before stops existed.
    # Only with a peer to keep serving (a lone one-slot worker that its own schedule keeps
    # busy starves its queue after a restart re-phases the entries: no peer, no drain).
    stops = tuple(
        sorted(
            (round(rng.uniform(60, span * 0.8), 3), rng.randint(1, workers))
            for _ in range(rng.randint(0, 2) if workers > 1 else 0)
        )
    )
    return SwarmSpec(
        workers=workers,
        concurrency=rng.randint(1, 3),
        hours=hours,
        entries=tuple(entries),
        jobs=rng.randint(10, 120),
        bulk_every=rng.choice((0, 5, 10)),
        delayed_share=rng.choice((0.0, 0.2)),
        fail_share=rng.choice((0.0, 0.1, 0.3)),
        slow_share=rng.choice((0.0, 0.05)),
        retry=rng.randint(0, 3),
        crashes=crashes,
        stops=stops,
        drops=drops,
        skew=skew,
        faults=faults,
    )


class SwarmJob(Job):
    """A queued job: sleeps `seconds`, then fails if told to."""

    options = {"retry_delay": 2, "backoff": "exponential", "timeout": 60}

    async def perform(self, seconds: float, fail: bool) -> None:
        await asyncio.sleep(seconds)
        if fail:
            raise RuntimeError("swarm job told to fail")


def _entry_job(duration: float) -> type[Job]:
    """A Job class whose perform takes `duration` virtual seconds (one per distinct value)."""
    cached = _ENTRY_JOBS.get(duration)
    if cached is None:

        async def perform(self: Job) -> None:
            await asyncio.sleep(duration)

        name = f"SwarmEntry_{str(duration).replace('.', '_')}"
        cached = type(name, (Job,), {"perform": perform, "__module__": __name__})
        _ENTRY_JOBS[duration] = cached
    return cached


_ENTRY_JOBS: dict[float, type[Job]] = {}


class SwarmWorld(World):
    """A World carrying its spec and the store fault plan, for main and the checks."""

    def __init__(self, seed: int, spec: SwarmSpec) -> None:
        from datetime import datetime

        super().__init__(
            seed,
            epoch=datetime.fromisoformat(spec.epoch),
            skew=SkewProgram(spec.skew) if spec.skew else None,
        )
        self.spec = spec
        self.plan: FaultPlan | None = None
        self.enqueued: list[int] = []
        self.retry_budget: dict[int, int] = {}


def spec_for(seed: int) -> SwarmSpec:
    """The world seed `seed` draws."""
    return draw(child_rng(seed, "swarm-spec"))


def make_world(seed: int, spec: SwarmSpec | None = None) -> SwarmWorld:
    return SwarmWorld(seed, spec_for(seed) if spec is None else spec)


def _entries(spec: SwarmSpec) -> dict[int, list[ScheduleEntry]]:
    by_worker: dict[int, list[ScheduleEntry]] = defaultdict(list)
    for e in spec.entries:
        cron = None if e.cron is None else CronSchedule(e.cron, ZoneInfo(e.tz))
        by_worker[e.worker].append(
            ScheduleEntry(
                name=e.name,
                job_class=_entry_job(e.duration),
                every=e.every,
                cron=cron,
                timezone=None if e.cron is None else e.tz,
                timeout=e.timeout,
                worker=e.worker,
            )
        )
    return by_worker


async def main(world: World) -> None:
    assert isinstance(world, SwarmWorld)
    spec = world.spec
    path = f"{world.tmpdir}/queue.db"
    SqliteStore.create_schema(path)

    def traced(injection: Injection) -> None:
        world.emit("fault_injected", site=injection.site, call=injection.call)

    plan = FaultPlan(world.child_rng("store-faults"), dict(spec.faults), on_inject=traced)
    world.plan = plan
    peers = tuple(range(1, spec.workers + 1))
    queue = QueueSpec(open_store=faulty_store_factory(path, plan), peers=peers)
    by_worker = _entries(spec)
    hosts = [
        Host(world, i, entries=by_worker.get(i, ()), concurrency=spec.concurrency, queue=queue)
        for i in peers
    ]
    for host in hosts:
        host.start()
    producer_store = SqliteStore(path, busy_timeout_ms=0, fault_hook=plan.check)
    producer = producer_for(world, producer_store, queue)
    span = spec.hours * 3600
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(_produce(world, producer, span))
        tasks.create_task(_chaos(world, hosts))
        await asyncio.sleep(span)
    # Liveness: faults stop, everyone is up, the queue must drain.
    plan.quiesce()
    for i in peers:
        world.fabric.set_drop(queue.address(i), False)
    for host in hosts:
        if not host.alive:
            host.start()
    world.emit("liveness_phase")
    await drain(producer_store, deadline=DRAIN_DEADLINE, step=15)
    producer_store.close()
    for host in hosts:
        # Scheduled entries may still be mid-run; a graceful stop waits for them.
        await host.stop()


async def _produce(world: SwarmWorld, producer: Producer, span: float) -> None:
    spec = world.spec
    rng = world.child_rng("workload")
    gap = span * 0.7 / max(spec.jobs, 1)
    for n in range(spec.jobs):
        await asyncio.sleep(rng.expovariate(1 / gap))
        slow = rng.random() < spec.slow_share
        long_run = rng.random() < 0.05  # outlives its 60 s lease: renewal must hold it
        seconds = 90.0 if slow else 100.0 if long_run else round(rng.uniform(0, 10), 3)
        args = (seconds, rng.random() < spec.fail_share)
        options: dict[str, object] = {"retry": spec.retry}
        if long_run:
            options["timeout"] = 150
        delay = rng.uniform(1, 120) if rng.random() < spec.delayed_share else None
        try:
            if spec.bulk_every and n % spec.bulk_every == 0:
                calls = [(SwarmJob, args, options)] * 3
                ids = producer.enqueue_many(calls)
            else:
                ids = [producer.enqueue(SwarmJob, args, options=options, delay=delay)]
        except StoreError:
            world.emit("enqueue_failed")  # indeterminate op: nothing was stored
            continue
        world.enqueued.extend(ids)
        for job_id in ids:
            world.retry_budget[job_id] = spec.retry


async def _chaos(world: SwarmWorld, hosts: list[Host]) -> None:
    spec = world.spec
    events: list[tuple[float, int, str, float]] = [(t, h, "crash", 0.0) for t, h in spec.crashes]
    events += [(t, h, "stop", 0.0) for t, h in spec.stops]
    events += [(t, h, "drop", d) for t, h, d in spec.drops]
    events.sort()
    start = world.now()
    async with asyncio.TaskGroup() as tasks:
        for t, index, kind, seconds in events:
            await asyncio.sleep(max(0.0, start + t - world.now()))
            host = hosts[index - 1]
            if kind == "crash":
                tasks.create_task(_crash_and_restart(host))
            elif kind == "stop":
                tasks.create_task(_stop_and_restart(host))
            else:
                tasks.create_task(_drop_for(world, host, seconds))


async def _crash_and_restart(host: Host) -> None:
    await host.crash()
    await asyncio.sleep(RESTART_AFTER)
    if not host.alive:
        host.start()


async def _stop_and_restart(host: Host) -> None:
    """A graceful stop (a deploy) while the peers keep serving: the stopping worker keeps
    its running jobs, long ones included, heartbeating until they end."""
    if not host.alive:
        return
    host.world.emit("graceful_stop", host=host.index)
    await host.stop()
    await asyncio.sleep(RESTART_AFTER)
    if not host.alive:
        host.start()


async def _drop_for(world: World, host: Host, seconds: float) -> None:
    address = host.address
    assert address is not None
    world.fabric.set_drop(address, True)
    world.emit("wakeups_dropped", host=host.index, seconds=seconds)
    await asyncio.sleep(seconds)
    world.fabric.set_drop(address, False)


def _entries_never_overlap(world: SwarmWorld) -> Check:
    running: dict[str, int] = Counter()
    for r in world.trace.records:
        if r.event == "host_crash":
            host = int(str(r.get("host")))
            for e in world.spec.entries:
                if e.worker == host:
                    running[e.name] = 0
        label = str(r.get("label"))
        if r.event == LogEvent.JOB_STARTED.value and not label.startswith("tests"):
            running[label] += 1
            if running[label] > 1 and "#" not in label:
                return Check("no entry runs concurrently with itself", False, label)
        elif r.event in invariants.ENDS:
            running[label] -= 1
    return Check("no entry runs concurrently with itself", True)


def _interval_cadence(world: SwarmWorld) -> Check:
    """Each interval entry on a host never crashed or stopped early fires once per `every`.

    From the host's start to its graceful stop (WORKER_STOPPING) the scheduler has one due
    time per `every` on the monotonic clock (wall-clock steps do not move it), the first at
    `start + jitter + every`, jitter in `[0, min(every, 5))` (SPEC). Each due is one
    JOB_STARTED (possibly later, once a slot frees) or one JOB_SKIPPED (overlap), so their
    count lies in the range the unknown jitter allows; a burst catch-up goes over it, a
    lost fire under it. The one fire the trace cannot show: a due that waited for a slot
    (all `concurrency` held by other runs) until the stop, which then never starts it (SPEC:
    graceful stop starts no new runs), so it is counted when the stop found the entry idle
    and every slot of its host held.
    """
    crashed = {h for _, h in (*world.spec.crashes, *world.spec.stops)}
    fired = Counter(
        str(r.get("label")) for r in world.trace.of(LogEvent.JOB_STARTED.value)
    ) + Counter(str(r.get("entry")) for r in world.trace.of(LogEvent.JOB_SKIPPED.value))
    started: dict[int, int] = {}
    stopped: dict[int, int] = {}
    full_at_stop: dict[int, set[str]] = {}  # host: labels running, if every slot was held
    running: dict[int, Counter[str]] = defaultdict(Counter)
    for r in world.trace.records:
        if r.event == "host_start":
            started.setdefault(int(str(r.get("host"))), r.ns)
        elif r.event == LogEvent.JOB_STARTED.value:
            running[r.host][str(r.get("label"))] += 1
        elif r.event in invariants.ENDS:
            running[r.host][str(r.get("label"))] -= 1
        elif r.event == LogEvent.WORKER_STOPPING.value and r.host not in stopped:
            stopped[r.host] = r.ns
            busy = +running[r.host]
            if busy.total() >= world.spec.concurrency:
                full_at_stop[r.host] = set(busy)
    bad = []
    for e in world.spec.entries:
        if e.every is None or e.worker in crashed or e.worker not in stopped:
            continue
        span = (stopped[e.worker] - started[e.worker]) / 1e9 - e.every
        jitter = min(e.every, 5.0)
        low = max(0, math.floor((span - jitter) / e.every) + 1)
        high = max(0, math.floor(span / e.every) + 1)
        held = full_at_stop.get(e.worker)
        unseen = 1 if held is not None and e.name not in held else 0
        if not (low <= fired[e.name] + unseen and fired[e.name] <= high):
            bad.append(
                f"{e.name}: {fired[e.name]} fires (+{unseen} waiting for a slot at stop), "
                f"{low}..{high} expected"
            )
    return Check(
        "interval entries keep cadence across wall-clock steps", not bad, "; ".join(bad[:3])
    )


def _queue_history(world: SwarmWorld) -> list[Check]:
    trace = world.trace
    disturbances = sorted(
        [r.ns for r in trace.of("host_crash")] + [int(t * 1e9) for t, _ in world.spec.skew]
    )
    unexplained = [
        int(str(r.get("job_id")))
        for r in trace.of(LogEvent.JOB_SUPERSEDED.value)
        if not disturbances or disturbances[0] > r.ns
    ]
    wake_bad = []
    for r in trace.of(LogEvent.WAKE_SENT.value):
        path = str(r.get("path")).split()
        woke = [k for k, step in enumerate(path) if step.endswith((":delivered", ":pending"))]
        if len(path) > world.spec.workers or (woke and woke[0] != len(path) - 1):
            wake_bad.append(f"t={r.ns / 1e9:.3f} {path}")
    skips = sum(1 for _ in trace.of(LogEvent.JOB_SKIPPED.value))
    counted = sum(h.counters.snapshot().total_skips for h in world.hosts)
    return [
        *invariants.queue_history(world, invariants.retry_policies(SwarmJob)),
        Check(
            "a claim is superseded only after a crash or a clock step",
            not unexplained,
            f"{unexplained[:8]}",
        ),
        Check(
            "each wake-up stops at the first worker woken, <= N tries",
            not wake_bad,
            "; ".join(wake_bad[:2]),
        ),
        Check("every skip counted", skips == counted, f"{counted} counted, {skips} traced"),
    ]


def checks(world: World) -> list[Check]:
    assert isinstance(world, SwarmWorld)
    rows: dict[int, tuple[str, int]] = {}
    in_tx = False
    if world._tmp is not None:
        conn = sqlite3.connect(f"{world.tmpdir}/queue.db", timeout=0)
        try:
            rows = {i: (s, a) for i, s, a in conn.execute("SELECT id, status, attempts FROM jobs")}
            try:  # a store left inside a transaction would still hold the write lock
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            except sqlite3.OperationalError:
                in_tx = True
        finally:
            conn.close()
    completed = Counter(
        int(str(r.get("job_id"))) for r in world.trace.of(LogEvent.JOB_COMPLETED.value)
    )
    # Done jobs older than an hour are purged (SPEC), so a missing row is fine if the trace
    # saw the job complete.
    lost = [
        i
        for i in world.enqueued
        if rows.get(i, ("purged" if completed[i] else "missing", 0))[0]
        not in ("done", "failed", "purged")
    ]
    twice = [i for i, n in completed.items() if n > 1]
    early_fail = [
        i
        for i in world.enqueued
        if rows.get(i, ("", 0))[0] == "failed" and rows[i][1] < world.retry_budget[i] + 1
    ]
    running = [i for i, (s, _) in rows.items() if s == "running"]
    return [
        Check("no enqueued job lost", not lost, f"lost {lost[:8]}"),
        Check("no job completes twice", not twice, f"{twice[:8]}"),
        Check("failed jobs used all their retries", not early_fail, f"{early_fail[:8]}"),
        Check("nothing left running at shutdown", not running, f"{running[:8]}"),
        Check("the store is not left inside a transaction", not in_tx),
        invariants.per_host_concurrency(world.trace, world.spec.concurrency),
        _entries_never_overlap(world),
        _interval_cadence(world),
        *_queue_history(world),
        invariants.no_concurrent_runs(world.trace),
        invariants.bounded_steps(world, 5000),
    ]


SCENARIO = Scenario(
    name="swarm",
    summary="a random world per seed: workers, schedule, queue, crashes, faults, clock steps",
    seeds=tuple(range(1, 13)),
    main=main,
    checks=checks,
    make_world=make_world,
)
