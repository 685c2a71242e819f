"""The queue consumer: recover, then one loop that settles finished runs and claims.

Layer 2 (engine): asyncio over the `WorkerStore` and `Transport` protocols; reads time only
through the clock. One place claims: `_serve`. Everything else only signals it — a
wake-up datagram, a job that finished, a freed slot, the stop — by setting one event.
Each turn of the loop records the runs that finished since the last turn together with
the claims that refill their slots, in one store call (`WorkerStore.claim`), so a busy
worker pays well under a transaction per job. It claims only as many jobs as it has free
slots, so a busy worker never sits on a job an idle peer could run, and it never sleeps
past the earliest pending `run_at`, so a delayed job starts on time. Stopping, it claims
nothing more but goes on settling until its last run has ended, then releases what it
could not record and marks its owner row stopped (`upkeep.Upkeep.stop`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reference.counters import Outcome
from reference.errors import StoreError, StoreLockedError, StoreUnusableError
from reference.liveness import Probe, never_gone
from reference.options import JobOptions
from reference.records import LogEvent, Settlement, WorkerRow
from reference.runner import describe_error
from reference.upkeep import Upkeep, set_within
from reference.waker import POLL_INTERVAL, Doorbell, Waker

if TYPE_CHECKING:
    import random

    from reference.clock import Clock
    from reference.observe import Observer
    from reference.records import JobRow
    from reference.registry import Registry
    from reference.runner import Runner, Slots
    from reference.store import WorkerStore
    from reference.transport import Transport

logger = logging.getLogger(__name__)

STORE_BACKOFF_MIN = 0.05
# A store failing (not merely locked) for this long, from its first failure to its latest
# with no success between, is taken as broken for good: a read-only, corrupt or vanished
# file. The worker exits with one line rather than warn forever while its supervisor looks
# healthy; a deleted or replaced file ends it at the next check. A burst of failures then
# a quiet spell (every slot busy, nothing tried) is not a broken store: the span counts
# failures, not the silence after them (swarm seed 24 gave up on a working store so).
STORE_GIVE_UP = 30.0
# ... and only after this many failures with no success between.
STORE_GIVE_UP_FAILURES = 5
# A running job's lease: renewed every LEASE / 3 while it runs, so a worker must miss two
# renewals in a row (a crash, a frozen process) before a peer judges it dead.
DEFAULT_LEASE = 60.0


@dataclass(frozen=True, slots=True)
class QueueWiring:
    """What a queue-consuming worker needs: store, transport, its address and its peers."""

    store: WorkerStore
    transport: Transport
    address: str  # this worker's wake-up address
    peers: dict[int, str] = field(default_factory=dict)  # queue worker index -> address
    poll_interval: float = POLL_INTERVAL
    lease: float = DEFAULT_LEASE
    # Who this worker process is in the `workers` table: unique per process (the
    # composition root makes it from host, pid and a random token; "" -> "worker-<index>").
    owner: str = ""
    host: str = ""
    pid: int = 0
    # Is a peer's process certainly gone? (same host, pid not alive; the simulator asks
    # its world). Peers it cannot tell about are judged by their heartbeats alone.
    gone: Probe = never_gone


class Consumer:
    """Consumes the queue for one worker; owned by `Worker.run`'s task group."""

    def __init__(
        self,
        wiring: QueueWiring,
        *,
        index: int,
        clock: Clock,
        rng: random.Random,
        registry: Registry,
        observer: Observer,
        slots: Slots,
        runner: Runner,
    ) -> None:
        self._wiring = wiring
        self._store = wiring.store
        self._clock = clock
        self._rng = rng
        self._registry = registry
        self._observer = observer
        self._index = index
        self._slots = slots
        self._runner = runner
        self._wake = asyncio.Event()  # the one signal: something for _serve to do
        self._running: dict[int, int] = {}  # job id -> claimed attempt, until recorded
        self._settle: list[tuple[JobRow, str, Settlement]] = []  # finished, not yet recorded
        self._settle_failures = 0
        self._rings: list[int] = []  # hop counts of wake-ups not yet seen by the serve loop
        # Set by the serve loop when every slot is taken: a slot freed by a scheduled run
        # (not one of ours, which signals itself) must wake it too.
        self._slot_wanted = asyncio.Event()
        self._waker = Waker(
            wiring.transport,
            wiring.peers,
            self._rng,
            clock=clock,
            warn_every=wiring.poll_interval,
        )
        self._failing_since: float | None = None  # monotonic start of unbroken store failure
        self._last_failure = 0.0  # monotonic time of the latest failure
        self._failures_since_ok = 0
        self._last_store_error: StoreError | None = None
        self._stopping = asyncio.Event()  # replaced by run()'s; unset until then
        self._done = asyncio.Event()  # the serve loop ended: lease renewal may end too
        self._doorbell: Doorbell | None = None
        self.owner = wiring.owner or f"worker-{index}"
        now = clock.realtime()
        self._upkeep = Upkeep(
            wiring.store,
            WorkerRow(
                owner=self.owner,
                host=wiring.host,
                pid=wiring.pid,
                index=index,
                queues="*",
                started_at=now,
                heartbeat_at=now,
            ),
            lease=wiring.lease,
            clock=clock,
            observer=observer,
            running=self._running.keys,
            on_store_error=self._store_failed,
            gone=wiring.gone,
        )

    async def open(self) -> None:
        """Listen on this worker's wake-up address; `run` does it if not done yet.

        Raises:
            SocketInUseError: a live process listens there (the worker must not start).
        """
        if self._doorbell is None:
            self._doorbell = await Doorbell.open(self._wiring.transport, self._wiring.address)

    async def run(self, stopping: asyncio.Event, tasks: asyncio.TaskGroup) -> None:
        """Serve the queue until `stopping` and the last claimed run has been recorded.

        Job runs are tasks owned by `tasks`.
        """
        await self.open()
        doorbell = self._doorbell
        assert doorbell is not None
        self._stopping = stopping
        upkeep = self._upkeep
        helpers: list[asyncio.Task[None]] = []
        try:
            upkeep.recover()
            doorbell.watch(self._on_ring)
            helpers = [
                tasks.create_task(upkeep.beat(self._done), name="heartbeat"),
                tasks.create_task(upkeep.maintain(stopping, self._wake.set), name="maintenance"),
                tasks.create_task(self._wake_on_stop(stopping), name="stop-watch"),
                tasks.create_task(self._wake_on_free_slot(), name="slot-watch"),
                # Until the last outcome is recorded, a stop included: a store broken
                # during a stop must still end the worker rather than retry forever.
                tasks.create_task(self._watch_store(self._done), name="store-watch"),
            ]
            await self._serve(stopping, tasks)
        finally:
            self._done.set()
            for helper in helpers:
                helper.cancel()
            doorbell.close()
        upkeep.stop()

    async def _wake_on_stop(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        self._wake.set()

    async def _wake_on_free_slot(self) -> None:
        """Wake the serve loop when a slot frees while it waits for one."""
        while True:
            await self._slot_wanted.wait()
            await self._slots.wait_free()
            self._slot_wanted.clear()
            self._wake.set()

    def _store_failed(self, exc: StoreError) -> None:
        """Note a store failure; a lock held by a peer is contention, not breakage."""
        if isinstance(exc, StoreLockedError):
            return
        self._last_store_error = exc
        self._failures_since_ok += 1
        self._last_failure = self._clock.monotonic()
        if self._failing_since is None:
            self._failing_since = self._last_failure

    def _store_ok(self) -> None:
        self._failing_since = None
        self._failures_since_ok = 0

    async def _watch_store(self, done: asyncio.Event) -> None:
        """Each poll until `done`: is the store still the file we opened, and has it failed
        too long?

        Raises:
            StoreUnusableError: the worker must exit (its task group ends with this).
        """
        poll = self._wiring.poll_interval
        while not await set_within(done, poll):
            try:
                self._store.verify()
            except StoreUnusableError:
                raise
            except StoreError as exc:
                self._store_failed(exc)
            since = self._failing_since
            if (
                since is not None
                and self._failures_since_ok >= STORE_GIVE_UP_FAILURES
                and self._last_failure - since >= STORE_GIVE_UP
            ):
                raise StoreUnusableError(
                    f"the queue store kept failing for {STORE_GIVE_UP:.0f} s; giving up"
                    f" (last error: {self._last_store_error})"
                )

    async def _serve(self, stopping: asyncio.Event, tasks: asyncio.TaskGroup) -> None:
        """The one place that claims: settle what finished, claim for the free slots, wait."""
        poll = self._wiring.poll_interval
        while True:
            self._wake.clear()
            serving = not stopping.is_set()
            if not serving and not self._running:
                return
            free = self._claimable(serving)
            if self._rings:
                self._hand_on_rings(free)
            # Serving: the doorbell, the next run_at or the poll, whichever comes first.
            # Stopping: only our runs ending (they signal) can give this loop work.
            timeout: float | None = poll if serving else None
            if free or self._settle:
                rows = self._claim(free)
                if rows is None:  # the store failed: back off, then try again
                    timeout = min(poll, STORE_BACKOFF_MIN * 2 ** min(self._settle_failures, 6))
                elif not free:
                    continue  # only recorded outcomes: look again (stopping may be over)
                else:
                    for row in rows:
                        self._start(row, tasks)
                    if rows:
                        # Let the claimed jobs start before anything else: pickup latency.
                        await asyncio.sleep(0)
                    if len(rows) == free:
                        continue  # more may be due: claim again
                    timeout = self._until_next_due(poll)
            elif serving:
                self._slot_wanted.set()  # every slot taken: a freed one wakes us
            if timeout is None or timeout > 0:
                try:
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    def _claimable(self, serving: bool) -> int:
        """How many jobs to claim now: the free slots, none while stopping.

        `Slots.free` is 0 while a scheduled run waits for a slot: a freed slot goes to it.
        """
        return self._slots.free if serving else 0

    def _claim(self, limit: int) -> list[JobRow] | None:
        """Record the finished runs and claim up to `limit` jobs in one store call.

        None if the store failed: the finished runs stay queued for the next turn (their
        jobs stay leased meanwhile) and nothing was claimed.
        """
        batch, self._settle = self._settle, []
        try:
            recorded, rows = self._store.claim(
                self.owner,
                now=self._clock.realtime(),
                lease=self._wiring.lease,
                limit=limit,
                settle=[settlement for _, _, settlement in batch],
            )
        except StoreError as exc:
            self._settle = batch + self._settle
            self._store_failed(exc)
            self._settle_failures += 1
            self._observer.emit(LogEvent.STORE_ERROR, worker=self._index, op="fetch")
            logger.warning(
                "claiming%s failed (%s); retrying",
                f" and recording {len(batch)} outcomes" if batch else "",
                exc,
                extra={"event": LogEvent.STORE_ERROR, "worker": self._index},
            )
            return None
        self._settle_failures = 0
        self._store_ok()
        for (row, label, settlement), ok in zip(batch, recorded, strict=True):
            self._running.pop(row.id, None)
            self._report(row, label, settlement, ok)
        if limit:
            self._observer.emit(LogEvent.FETCH, worker=self._index, claimed=len(rows))
        return rows

    def _until_next_due(self, poll: float) -> float:
        try:
            next_at = self._store.next_run_at()
        except StoreError:
            return poll
        if next_at is None:
            return poll
        return max(0.0, min(poll, next_at - self._clock.realtime()))

    def _start(self, row: JobRow, tasks: asyncio.TaskGroup) -> None:
        if not self._slots.try_acquire():
            raise RuntimeError("claimed a job without a free slot")  # _serve claims <= free
        self._running[row.id] = row.attempts
        self._observer.emit(
            LogEvent.JOB_CLAIMED,
            worker=self._index,
            job_id=row.id,
            attempt=row.attempts,
            name=row.name,
            run_at=row.run_at,
        )
        tasks.create_task(self._execute(row), name=f"job:{row.id}")

    async def _execute(self, row: JobRow) -> None:
        """Run one claimed job, then queue its outcome for the serve loop to record."""
        label = f"{row.name}#{row.id}"
        try:
            settlement = await self._run_claimed(row, label)
        finally:
            self._slots.release()
        self._settle.append((row, label, settlement))
        self._wake.set()

    async def _run_claimed(self, row: JobRow, label: str) -> Settlement:
        try:
            job_cls = self._registry.resolve(row.name)
            args = json.loads(row.args)
            if not isinstance(args, list):
                raise TypeError("stored arguments are not a JSON array")
            options = JobOptions.from_json(row.options)
        except Exception as exc:  # an unknown name, or a row our producer would refuse
            # Not runnable in this process, now or on a retry: fail it for good, clearly
            # (json.loads of a row nested ~1,000 deep raises RecursionError, for one).
            return Settlement(row.id, row.attempts, error=describe_error(exc))
        result = await self._runner.run(job_cls, args, time_limit=options.timeout, label=label)
        if result.outcome is Outcome.SUCCESS:
            return Settlement(row.id, row.attempts)
        return Settlement(
            row.id,
            row.attempts,
            error=result.error or "unknown error",
            retry_at=self.retry_at(row, options),
        )

    def retry_at(self, row: JobRow, options: JobOptions) -> float | None:
        """When a failed run is retried, or None once its retries are spent.

        `attempts` counts runs started, so run n (1-based) may be retried while
        n <= retry: `retry` attempts after the first (SPEC).
        """
        if row.attempts > options.retry:
            return None
        return self._clock.realtime() + options.retry_delay_for(row.attempts, self._rng)

    def _report(self, row: JobRow, label: str, settlement: Settlement, ok: bool) -> None:
        fields = {"worker": self._index, "job_id": row.id, "attempt": row.attempts}
        error, retry_at = settlement.error, settlement.retry_at
        if not ok:
            self._observer.emit(LogEvent.JOB_SUPERSEDED, **fields)
            logger.warning(
                "%s: its claim was taken over (this worker was presumed dead); outcome dropped",
                label,
                extra={"event": LogEvent.JOB_SUPERSEDED, "worker": self._index},
            )
        elif error is None:
            self._observer.emit(LogEvent.JOB_COMPLETED, **fields)
        elif retry_at is not None:
            self._observer.emit(LogEvent.JOB_RETRY_SCHEDULED, **fields)
            logger.warning(
                "%s failed on attempt %d (%s); retrying in %.1f s",
                label,
                row.attempts,
                error,
                retry_at - self._clock.realtime(),
                extra={"event": LogEvent.JOB_RETRY_SCHEDULED, "worker": self._index},
            )
        else:
            self._observer.emit(LogEvent.JOB_DEAD, **fields)
            logger.error(
                "%s failed for good after %d attempts: %s",
                label,
                row.attempts,
                error,
                extra={"event": LogEvent.JOB_DEAD, "worker": self._index},
            )

    def _on_ring(self, hops: int) -> None:
        """A wake-up arrived (a loop callback of `Doorbell.watch`): only signal the loop."""
        self._rings.append(hops)
        self._wake.set()

    def _hand_on_rings(self, free: int) -> None:
        """Trace the wake-ups received; with no free slot, hand each on to an idle peer."""
        rings = self._rings
        self._rings = []
        for hops in rings:
            self._observer.emit(LogEvent.WAKE_RECEIVED, worker=self._index, hops=hops)
            if free or hops <= 0 or self._stopping.is_set():
                continue
            report = self._waker.pass_on(self._index, hops)
            self._observer.emit(
                LogEvent.WAKE_PASSED_ON,
                worker=self._index,
                to=report.woken,
                attempts=len(report.attempts),
            )

    def __repr__(self) -> str:
        return f"Consumer(worker={self._index}, running={len(self._running)}, {self._slots!r})"
