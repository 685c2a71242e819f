"""`Host`: one simulated worker process, built from the reference runtime and sim adapters.

A host constructs exactly what `reference.worker.serve` constructs (`Runtime`, `Worker`,
`QueueWiring`) but from the world's clock, a seeded RNG, the in-memory fabric, an inline
offload, counters over a bytearray and its own connection to the world's real SQLite
file. `crash()` kills it like SIGKILL (no job settles, its socket file stays, its database
connection closes); `restart()` brings the same index back, as the supervisor would.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reference.consumer import DEFAULT_LEASE, QueueWiring
from reference.counters import SEGMENT_SIZE, BufferCounters
from reference.producer import Producer
from reference.registry import default_registry
from reference.runtime import Runtime, Worker
from reference.sqlite_store import SqliteStore
from reference.waker import POLL_INTERVAL, Waker, socket_address
from sim.offload import InlineOffload
from sim.trace import HostObserver

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Sequence

    from reference.job import Job
    from reference.schedule import ScheduleEntry
    from reference.store import ScheduleStore, Store
    from sim.fabric import Fabric
    from sim.world import World

SOCKET_DIR = "/sim/sockets"


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """How hosts reach the queue: a store factory (one connection per host) and peers."""

    open_store: Callable[[int], Store]
    peers: tuple[int, ...]
    poll_interval: float = POLL_INTERVAL  # the runtime's defaults, not restated
    lease: float = DEFAULT_LEASE
    addresses: dict[int, str] = field(default_factory=dict)
    # The `schedules` rows' store (one more connection per host, as `reference.worker` opens
    # one); None: hosts fire their entries from memory, sharded as given.
    open_schedules: Callable[[int], ScheduleStore] | None = None

    def address(self, index: int) -> str:
        return self.addresses.get(index) or socket_address(SOCKET_DIR, index)


def sqlite_queue(
    world: World, path: str, workers: int, *, schedule_rows: bool = False
) -> QueueSpec:
    """Create the queue database at `path` (as the supervisor does, before any worker
    starts) and a spec whose hosts 1..`workers` each open their own connection to it.

    `schedule_rows`: hosts fire schedule entries from the `schedules` rows, as production
    workers do (each host then loads the whole schedule; placement picks who tries first).
    """
    SqliteStore.create_schema(path)
    return QueueSpec(
        open_store=lambda _host: SqliteStore(path, busy_timeout_ms=0),
        peers=tuple(range(1, workers + 1)),
        open_schedules=(lambda _host: SqliteStore(path, busy_timeout_ms=0))
        if schedule_rows
        else None,
    )


def producer_for(world: World, store: Store, queue: QueueSpec) -> Producer:
    """A producer 'process' on the world: its own store connection, waking over the fabric."""
    addresses = {i: queue.address(i) for i in queue.peers}
    return Producer(
        store,
        clock=world.clock,
        waker=Waker(world.fabric, addresses, world.child_rng("producer"), clock=world.clock),
        observer=HostObserver(world.trace, 0),
    )


def final_jobs(world: World, path: str) -> dict[int, tuple[str, str]]:
    """job id -> (status, last_error or "") of every row left in the database at `path`
    (empty once the world's files are gone), for a scenario's checks."""
    if world._tmp is None:
        return {}
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT id, status, last_error FROM jobs").fetchall()
    finally:
        conn.close()
    return {int(i): (str(st), str(err or "")) for i, st, err in rows}


async def drain(store: Store, *, deadline: float, step: float) -> float:
    """Wait until nothing is pending or running (or `deadline` virtual s); return the wait."""
    waited = 0.0
    while waited < deadline:
        stats = store.stats()
        if stats.pending == 0 and stats.running == 0:
            break
        await asyncio.sleep(step)
        waited += step
    return waited


async def poisson_load(
    world: World,
    hosts: Sequence[Host],
    queue: QueueSpec,
    open_producer_store: Callable[[], Store],
    *,
    jobs: int,
    over: float,
    job: Callable[[random.Random], tuple[type[Job], tuple[object, ...]]],
    drain_deadline: float,
    drain_step: float,
    before_drain: Callable[[], None] = lambda: None,
) -> None:
    """Start `hosts`, enqueue `jobs` jobs at Poisson times over `over` virtual seconds
    (`job(rng)` gives each one's class and arguments), call `before_drain`, wait until the
    queue drains (or `drain_deadline`), then stop the hosts gracefully."""
    for host in hosts:
        host.start()
    producer_store = open_producer_store()
    producer = producer_for(world, producer_store, queue)
    rng = world.child_rng("workload")
    try:
        for _ in range(jobs):
            await asyncio.sleep(rng.expovariate(jobs / over))
            cls, args = job(rng)
            producer.enqueue(cls, args, options=None)
        world.emit("producer_done")
        before_drain()
        waited = await drain(producer_store, deadline=drain_deadline, step=drain_step)
        world.emit("drain_wait_over", waited=waited)
    finally:
        producer_store.close()
        for host in hosts:
            await host.stop()


class Host:
    """One worker 'process' in the world; `start`, `stop`, `crash`, `restart`."""

    def __init__(
        self,
        world: World,
        index: int,
        *,
        entries: Sequence[ScheduleEntry] = (),
        concurrency: int = 2,
        queue: QueueSpec | None = None,
        machine: str = "sim",
        fabric: Fabric | None = None,
        trace_id: int | None = None,
    ) -> None:
        """`machine` names the host (one supervisor's set of workers, one kernel): its
        owners' `workers.host`, the scope of the `liveness` probe. `fabric` is that
        machine's wake-up network (the world's by default) and `trace_id` this worker's
        host number in the trace (its index by default; two machines both have a worker 1).
        """
        self.world = world
        self.index = index
        self.machine = machine
        self.fabric = fabric or world.fabric
        self.trace_id = index if trace_id is None else trace_id
        self.entries = tuple(entries)
        self.concurrency = concurrency
        self.queue = queue
        self.counters = BufferCounters(bytearray(SEGMENT_SIZE), 0, index)
        self.offload = InlineOffload()
        self.worker: Worker | None = None
        self.store: Store | None = None
        self.schedule_store: ScheduleStore | None = None
        self.incarnation = 0
        # Errors that killed this host's worker (not crashes we injected): a runtime bug.
        self.failures: list[str] = []
        self._task: asyncio.Task[None] | None = None
        world.hosts.append(self)

    @property
    def address(self) -> str | None:
        return None if self.queue is None else self.queue.address(self.index)

    @property
    def owner(self) -> str:
        """This incarnation's owner id in the `workers` table."""
        return f"{self.machine}:{self.index}.{self.incarnation}"

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Boot the worker: a fresh runtime, store connection and doorbell."""
        if self.alive:
            raise RuntimeError(f"host {self.index} is already running")
        self.incarnation += 1
        world = self.world
        runtime = Runtime(
            clock=world.clock,
            rng=world.child_rng(f"host{self.trace_id}.{self.incarnation}"),
            registry=default_registry,
            offload=self.offload,
            counters=self.counters,
            observer=HostObserver(world.trace, self.trace_id),
        )
        wiring = None
        if self.queue is not None:
            self.store = self.queue.open_store(self.index)
            wiring = QueueWiring(
                store=self.store,
                transport=self.fabric,
                address=self.queue.address(self.index),
                peers={i: self.queue.address(i) for i in self.queue.peers},
                poll_interval=self.queue.poll_interval,
                lease=self.queue.lease,
                owner=self.owner,
                host=self.machine,
                pid=self.trace_id * 1000 + self.incarnation,
                gone=lambda row: world.owner_gone(row, self.machine),
            )
        if self.queue is not None and self.queue.open_schedules is not None and self.entries:
            self.schedule_store = self.queue.open_schedules(self.index)
        self.worker = Worker(
            runtime,
            index=self.index,
            entries=self.entries,
            concurrency=self.concurrency,
            queue=wiring,
            schedules=self.schedule_store,
        )
        world.emit("host_start", host=self.trace_id, incarnation=self.incarnation)
        self._task = world.loop.create_task(self.worker.run(), name=f"host{self.trace_id}")
        self._task.add_done_callback(self._on_exit)

    def _on_exit(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        from sim.scenario import describe

        error = describe(task.exception())  # type: ignore[arg-type]
        self.failures.append(error)
        self.world.emit("host_died", host=self.trace_id, error=error.split(":")[0])

    async def stop(self) -> None:
        """Stop gracefully (SIGTERM): running jobs finish, then the host is down."""
        if self.worker is not None:
            self.worker.stop()
        if self._task is not None and not self._task.done():
            await self._task
        self._close_store()
        self.world.emit("host_stopped", host=self.trace_id)

    async def crash(self) -> None:
        """Kill the host at once (SIGKILL): nothing settles, the socket file stays."""
        if not self.alive:
            return
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        # A killed process never unlinks its socket: leave a stale file (sends REFUSED).
        address = self.address
        if address is not None:
            self.fabric.plant_stale(address)
        self._close_store()
        self.world.emit("host_crash", host=self.trace_id)

    async def restart(self) -> None:
        """Crash if running, then start again under the same index."""
        await self.crash()
        self.start()

    def _close_store(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.schedule_store is not None:
            self.schedule_store.close()
            self.schedule_store = None

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._close_store()

    def __repr__(self) -> str:
        state = "up" if self.alive else "down"
        return f"Host({self.machine}:{self.index}, {state}, incarnation={self.incarnation})"
