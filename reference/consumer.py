"""The queue consumer: recover, then wait on the doorbell or the poll, claim, run, settle.

Layer 2 (engine): asyncio over the `Store` and `Transport` protocols; reads time only
through the clock. It claims only as many jobs as the worker has free slots, so a busy
worker never sits on a job an idle peer could run, and it never sleeps past the earliest
pending `run_at`, so a delayed job starts on time rather than at the next poll.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reference.counters import Outcome
from reference.errors import StoreError, StoreLockedError, StoreUnusableError
from reference.options import JobOptions
from reference.records import LogEvent, WorkerRow
from reference.runner import describe_error
from reference.waker import POLL_INTERVAL, Doorbell, Waker

if TYPE_CHECKING:
    import random

    from reference.clock import Clock
    from reference.observe import Observer
    from reference.records import JobRow
    from reference.registry import Registry
    from reference.runner import Runner, Slots
    from reference.store import Store
    from reference.transport import Transport

logger = logging.getLogger(__name__)

# SPEC: done jobs older than an hour are cleaned every five minutes.
PURGE_EVERY = 300.0
PURGE_OLDER_THAN = 3600.0
# Rows of workers that stopped (or went silent) are kept this long for `queue workers`.
WORKER_ROWS_KEPT = 86400.0
# Writing a job's outcome is retried this many times (a locked database) before the job is
# left to its lease: a lost completion means a duplicate run, so it is worth a few tries.
SETTLE_TRIES = 5
STORE_BACKOFF_MIN = 0.05
# A store failing (not merely locked) for this long is taken as broken for good: a read-only,
# corrupt or vanished file. The worker exits with one line rather than warn forever while
# its supervisor looks healthy; a deleted or replaced file ends it at the next check.
STORE_GIVE_UP = 30.0
# ... and only after this many failures with no success between: one transient error
# followed by a quiet spell (every slot busy, nothing to claim) is not a broken store.
STORE_GIVE_UP_FAILURES = 5
# A running job's lease: renewed every LEASE / 3 while it runs, so a worker must miss two
# renewals in a row (a crash, a frozen process) before another worker re-queues its job.
DEFAULT_LEASE = 60.0


@dataclass(frozen=True, slots=True)
class QueueWiring:
    """What a queue-consuming worker needs: store, transport, its address and its peers."""

    store: Store
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
        self._wake = asyncio.Event()
        # Set with _wake by a doorbell that already claimed (and found nothing more due):
        # the serve loop then only re-reads the next run_at. Any other wake-up clears it.
        self._due_check_only = False
        self._finished: list[tuple[JobRow, str]] = []  # successes awaiting _flush_finished
        self._fatal: Exception | None = None  # a bug in a loop callback, for _serve to raise
        # Set by the serve loop when it found every slot taken: a slot freed by a scheduled
        # run (not one of ours, which sets _wake itself) must wake it too.
        self._slot_wanted = asyncio.Event()
        self._running: dict[int, int] = {}  # job id -> claimed attempt
        self._waker = Waker(
            wiring.transport,
            wiring.peers,
            self._rng,
            clock=clock,
            warn_every=wiring.poll_interval,
        )
        self._store_failures = 0
        self._failing_since: float | None = None  # monotonic start of unbroken store failure
        self._failures_since_ok = 0
        self._last_store_error: StoreError | None = None
        self._recovered = False
        self._serving = True
        self._drained = asyncio.Event()  # set once serving ended and no job is running
        self._stopping = asyncio.Event()  # replaced by run()'s; unset until then
        self._tasks: asyncio.TaskGroup | None = None  # run()'s: where claimed jobs run
        self._doorbell: Doorbell | None = None
        self.owner = wiring.owner or f"worker-{index}"
        self._registered = False

    async def open(self) -> None:
        """Listen on this worker's wake-up address; `run` does it if not done yet.

        Raises:
            SocketInUseError: a live process listens there (the worker must not start).
        """
        if self._doorbell is None:
            self._doorbell = await Doorbell.open(self._wiring.transport, self._wiring.address)

    async def run(self, stopping: asyncio.Event, tasks: asyncio.TaskGroup) -> None:
        """Serve the queue until `stopping`; job runs are tasks owned by `tasks`."""
        await self.open()
        doorbell = self._doorbell
        assert doorbell is not None
        self._stopping, self._tasks = stopping, tasks
        helpers: list[asyncio.Task[None]] = []
        try:
            self._recovered = self._recover()
            tasks.create_task(self._renew_leases(), name="lease-renewal")
            doorbell.watch(self._on_ring)
            helpers = [
                tasks.create_task(self._maintain(stopping), name="queue-maintenance"),
                tasks.create_task(self._wake_on_stop(stopping), name="stop-watch"),
                tasks.create_task(self._wake_on_free_slot(), name="slot-watch"),
                tasks.create_task(self._watch_store(stopping), name="store-watch"),
            ]
            await self._serve(stopping, tasks)
        finally:
            # The helpers only serve the loop that just ended. Job runs (also in `tasks`)
            # are left to finish, and lease renewal goes on until the last one has.
            self._serving = False
            self._check_drained()
            for helper in helpers:
                helper.cancel()
            doorbell.close()

    def _nudge(self, *, claim: bool = True) -> None:
        """Wake the serve loop: to claim (the default), or only to re-read the next run_at."""
        if claim:
            self._due_check_only = False
        elif not self._wake.is_set():
            self._due_check_only = True
        self._wake.set()

    async def _wake_on_stop(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        self._nudge()

    async def _wake_on_free_slot(self) -> None:
        """Wake the serve loop when a slot frees while it waits for one."""
        while True:
            await self._slot_wanted.wait()
            await self._slots.wait_free()
            self._slot_wanted.clear()
            self._nudge()

    def _store_failed(self, exc: StoreError) -> None:
        """Note a store failure; a lock held by a peer is contention, not breakage."""
        if isinstance(exc, StoreLockedError):
            return
        self._last_store_error = exc
        self._failures_since_ok += 1
        if self._failing_since is None:
            self._failing_since = self._clock.monotonic()

    def _store_ok(self) -> None:
        self._failing_since = None
        self._failures_since_ok = 0

    async def _watch_store(self, stopping: asyncio.Event) -> None:
        """Each poll: is the store still the file we opened, and has it failed too long?

        Raises:
            StoreUnusableError: the worker must exit (its task group ends with this).
        """
        poll = self._wiring.poll_interval
        while not await _stopped_within(stopping, poll):
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
                and self._clock.monotonic() - since >= STORE_GIVE_UP
            ):
                raise StoreUnusableError(
                    f"the queue store kept failing for {STORE_GIVE_UP:.0f} s; giving up"
                    f" (last error: {self._last_store_error})"
                )

    def _recover(self) -> bool:
        """Re-queue this worker's leftover running jobs and any expired lease; True if done.

        A store error here (say, locked by a peer) must not kill the worker: it logs, and
        the maintenance loop tries again, while leases cover the jobs meanwhile.
        """
        now = self._clock.realtime()
        try:
            if not self._registered:
                self._store.register_worker(
                    WorkerRow(
                        owner=self.owner,
                        host=self._wiring.host,
                        pid=self._wiring.pid,
                        index=self._index,
                        queues="*",
                        started_at=now,
                        heartbeat_at=now,
                    )
                )
                self._registered = True
            own = self._store.requeue_running(self._index, now=now)
            expired = self._store.requeue_expired(now=now)
        except StoreError as exc:
            self._store_failed(exc)
            self._observer.emit(LogEvent.STORE_ERROR, worker=self._index, op="recover")
            logger.warning(
                "start-up recovery failed (%s); retrying during maintenance",
                exc,
                extra={"event": LogEvent.STORE_ERROR, "worker": self._index},
            )
            return False
        if own or expired:
            logger.info(
                "re-queued %d jobs left running by this worker and %d with expired leases",
                own,
                expired,
                extra={"event": LogEvent.JOBS_REQUEUED, "worker": self._index},
            )
        self._observer.emit(LogEvent.JOBS_RECOVERED, worker=self._index, own=own, expired=expired)
        return True

    async def _serve(self, stopping: asyncio.Event, tasks: asyncio.TaskGroup) -> None:
        poll = self._wiring.poll_interval
        while not stopping.is_set():
            if self._fatal is not None:
                raise self._fatal
            self._wake.clear()
            due_check_only, self._due_check_only = self._due_check_only, False
            free = self._slots.free
            timeout: float | None = poll
            if free and due_check_only:
                timeout = self._until_next_due(poll)
            elif free and self._finished:
                pass  # the pending flush claims for these slots, and wakes us if any are left
            elif free:
                rows = self._claim(free)
                if rows is None:  # the store failed: back off, then try again
                    timeout = min(poll, STORE_BACKOFF_MIN * 2 ** min(self._store_failures, 6))
                else:
                    for row in rows:
                        self._start(row, tasks)
                    if rows:
                        # Let the claimed jobs start before anything else: pickup latency.
                        await asyncio.sleep(0)
                    if len(rows) == free:
                        continue  # more may be due: claim again
                    timeout = self._until_next_due(poll)
            else:
                self._slot_wanted.set()
            # No free slot: any slot freeing wakes us (_wake_on_free_slot; our own jobs'
            # slots are refilled by the flush first). Free but nothing due: the doorbell,
            # the next run_at, or the poll, whichever comes first.
            if timeout is None or timeout > 0:
                try:
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    def _claim(self, free: int) -> list[JobRow] | None:
        try:
            rows = self._store.fetch_due(
                self._index, now=self._clock.realtime(), lease=self._wiring.lease, limit=free
            )
        except StoreError as exc:
            self._store_failed(exc)
            self._store_failures += 1
            self._observer.emit(LogEvent.STORE_ERROR, worker=self._index, op="fetch")
            logger.warning(
                "fetch failed (%s); retrying",
                exc,
                extra={"event": LogEvent.STORE_ERROR, "worker": self._index},
            )
            return None
        self._store_failures = 0
        self._store_ok()
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
        # Every slot busy, some with scheduled runs (ours are the running jobs not waiting
        # for a flush), filled here or by a callback the serve loop did not see: the slot
        # a scheduled run frees must wake it. Our own are refilled by the flush.
        holding = len(self._running) - len(self._finished)
        if not self._slots.free and holding < self._slots.size:
            self._slot_wanted.set()
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
        batched = False
        try:
            batched = await self._execute_claimed(row)
        finally:
            self._slots.release()
            if not batched:  # a batched success is settled (and refilled) by the flush
                self._running.pop(row.id, None)
                self._nudge()  # the serve loop claims for the freed slot
                self._check_drained()

    def _check_drained(self) -> None:
        if not self._serving and not self._running:
            self._drained.set()

    async def _execute_claimed(self, row: JobRow) -> bool:
        """Run one claimed job and record its outcome; True if a batched flush records it."""
        label = f"{row.name}#{row.id}"
        try:
            job_cls = self._registry.resolve(row.name)
            args = json.loads(row.args)
            if not isinstance(args, list):
                raise TypeError("stored arguments are not a JSON array")
            options = JobOptions.from_json(row.options)
        except Exception as exc:  # an unknown name, or a row our producer would refuse
            # Not runnable in this process, now or on a retry: fail it for good, clearly
            # (json.loads of a row nested ~1,000 deep raises RecursionError, for one).
            await self._settle(row, label, describe_error(exc), None)
            return False
        result = await self._runner.run(job_cls, args, time_limit=options.timeout, label=label)
        if result.outcome is Outcome.SUCCESS:
            self._batch_success(row, label)
            return True
        retry_at = self.retry_at(row, options)
        await self._settle(row, label, result.error or "unknown error", retry_at)
        return False

    def retry_at(self, row: JobRow, options: JobOptions) -> float | None:
        """When a failed run is retried, or None once its retries are spent.

        `attempts` counts runs started, so run n (1-based) may be retried while
        n <= retry: `retry` attempts after the first (SPEC).
        """
        if row.attempts > options.retry:
            return None
        return self._clock.realtime() + options.retry_delay_for(row.attempts, self._rng)

    def _claimable(self) -> int:
        """How many jobs this worker may claim now: its free slots, none while stopping.

        `Slots.free` is 0 while a scheduled run waits for a slot: a freed slot goes to it.
        """
        if not self._serving or self._stopping.is_set() or self._tasks is None:
            return 0
        return self._slots.free

    # -- batched completions: the successes of one loop step, written with the next claims

    def _batch_success(self, row: JobRow, label: str) -> None:
        """Queue a success for the flush at the next loop step; the job stays leased."""
        self._finished.append((row, label))
        if len(self._finished) == 1:
            asyncio.get_running_loop().call_soon(self._flush_finished)

    def _flush_finished(self) -> None:
        """Record every queued success and claim for the free slots, in one transaction.

        A busy worker's hot path: jobs that finish in the same loop step share one write,
        which also refills their slots, so draining costs well under a transaction per job.
        On a store error each success falls back to its own retried write.
        """
        try:
            self._flush(self._finished)
        except Exception as exc:  # a bug: in a loop callback it must still stop the worker
            self._fail_from_callback(exc)

    def _flush(self, batch: list[tuple[JobRow, str]]) -> None:
        self._finished = []
        if not batch:
            return
        limit = self._claimable()
        try:
            done, rows = self._store.complete_and_fetch(
                [(row.id, row.attempts) for row, _ in batch],
                now=self._clock.realtime(),
                worker=self._index,
                lease=self._wiring.lease,
                limit=limit,
            )
        except StoreError as exc:
            self._store_failed(exc)
            self._observer.emit(LogEvent.STORE_ERROR, worker=self._index, op="settle")
            logger.warning(
                "recording %d outcomes failed (%s); retrying each",
                len(batch),
                exc,
                extra={"event": LogEvent.STORE_ERROR, "worker": self._index},
            )
            assert self._tasks is not None  # set by run() before any job could start
            for row, label in batch:
                self._tasks.create_task(self._settle_alone(row, label), name=f"settle:{row.id}")
            self._nudge()
            return
        self._store_ok()
        for (row, label), ok in zip(batch, done, strict=True):
            self._report(row, label, None, None, ok)
            self._running.pop(row.id, None)
        if limit:
            self._observer.emit(LogEvent.FETCH, worker=self._index, claimed=len(rows))
        if rows and self._tasks is not None:
            for row in rows:
                self._start(row, self._tasks)
        if len(rows) < limit or not limit:
            self._nudge()  # slots left: the serve loop re-checks (and reads the next run_at)
        self._check_drained()

    async def _settle_alone(self, row: JobRow, label: str) -> None:
        try:
            await self._settle(row, label, None, None)
        finally:
            self._running.pop(row.id, None)
            self._check_drained()

    async def _settle(
        self, row: JobRow, label: str, error: str | None, retry_at: float | None
    ) -> None:
        """Write the run's outcome, retrying a failing store a few times."""
        for attempt in range(SETTLE_TRIES):
            now = self._clock.realtime()
            try:
                if error is None:
                    ok = self._store.complete(row.id, attempt=row.attempts, now=now)
                else:
                    ok = self._store.fail(
                        row.id, error, attempt=row.attempts, retry_at=retry_at, now=now
                    )
            except StoreError as exc:
                self._store_failed(exc)
                self._observer.emit(LogEvent.STORE_ERROR, worker=self._index, op="settle")
                logger.warning(
                    "recording the outcome of %s failed (%s); try %d of %d",
                    label,
                    exc,
                    attempt + 1,
                    SETTLE_TRIES,
                    extra={"event": LogEvent.STORE_ERROR, "worker": self._index},
                )
                await asyncio.sleep(STORE_BACKOFF_MIN * 2**attempt)
                continue
            self._store_ok()
            self._report(row, label, error, retry_at, ok)
            return
        logger.error(
            "could not record the outcome of %s; its lease will expire and it will run again",
            label,
            extra={"event": LogEvent.STORE_ERROR, "worker": self._index},
        )

    def _report(
        self, row: JobRow, label: str, error: str | None, retry_at: float | None, ok: bool
    ) -> None:
        fields = {"worker": self._index, "job_id": row.id, "attempt": row.attempts}
        if not ok:
            self._observer.emit(LogEvent.JOB_SUPERSEDED, **fields)
            logger.warning(
                "%s: its claim was taken over (lease expired); outcome dropped",
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
        """Wake-ups arrived: claim for the free slots, or hand the wake-up on if none.

        A loop callback (`Doorbell.watch`), run in the step the datagram arrives in, so the
        claim costs no task switch: that step is pickup latency. An error here is a bug
        and must still stop the worker as one in a task would: the serve loop raises it.
        """
        try:
            self._observer.emit(LogEvent.WAKE_RECEIVED, worker=self._index, hops=hops)
            free = self._claimable()
            if free and self._tasks is not None:
                rows = self._claim(free)
                if rows is not None:
                    for row in rows:
                        self._start(row, self._tasks)
                    # All slots taken: a freed one wakes the serve loop. Some left: nothing
                    # more was due, but the wake-up may be for a later run_at; re-read it.
                    if len(rows) < free:
                        self._nudge(claim=False)
                    return
            if not free and hops > 0:
                report = self._waker.pass_on(self._index, hops)
                self._observer.emit(
                    LogEvent.WAKE_PASSED_ON,
                    worker=self._index,
                    to=report.woken,
                    attempts=len(report.attempts),
                )
            self._nudge()
        except Exception as exc:
            self._fail_from_callback(exc)

    def _fail_from_callback(self, exc: Exception) -> None:
        """Keep a loop callback's error for the serve loop to raise, as a task's would."""
        self._fatal = exc
        self._wake.set()

    async def _renew_leases(self) -> None:
        """Every lease/3 until the last job is done: heartbeat, and extend running leases.

        Then mark this worker stopped in the `workers` table (a graceful end).
        """
        every = self._wiring.lease / 3
        while True:
            try:
                async with asyncio.timeout(every):
                    await self._drained.wait()
                break
            except TimeoutError:
                pass
            now = self._clock.realtime()
            try:
                if self._registered:
                    self._store.heartbeat(self.owner, now=now)
                if self._running:
                    until = now + self._wiring.lease
                    self._store.renew(self._index, sorted(self._running), lease_until=until)
            except StoreError as exc:
                self._store_failed(exc)
                logger.warning(
                    "lease renewal failed (%s); retrying in %.0f s",
                    exc,
                    every,
                    extra={"event": LogEvent.STORE_ERROR, "worker": self._index},
                )
        self._mark_stopped()

    def _mark_stopped(self) -> None:
        if not self._registered:
            return
        try:
            self._store.stop_worker(self.owner, now=self._clock.realtime())
        except StoreError as exc:  # its heartbeat goes stale instead
            logger.warning(
                "could not mark this worker stopped (%s)",
                exc,
                extra={"event": LogEvent.STORE_ERROR, "worker": self._index},
            )

    async def _maintain(self, stopping: asyncio.Event) -> None:
        """Re-queue expired leases of any worker; purge old done jobs (SPEC cadence)."""
        every = min(self._wiring.lease / 2, PURGE_EVERY)
        since_purge = 0.0
        while not await _stopped_within(stopping, every):
            if not self._recovered:
                self._recovered = self._recover()
                if self._recovered:
                    self._nudge()
            now = self._clock.realtime()
            since_purge += every
            try:
                if self._store.requeue_expired(now=now):
                    self._nudge()
                if since_purge >= PURGE_EVERY:
                    since_purge = 0.0
                    purged = self._store.purge_done(older_than=now - PURGE_OLDER_THAN)
                    self._store.purge_workers(older_than=now - WORKER_ROWS_KEPT)
                    if purged:
                        logger.info(
                            "purged %d done jobs",
                            purged,
                            extra={"event": LogEvent.JOBS_PURGED, "worker": self._index},
                        )
            except StoreError as exc:
                self._store_failed(exc)
                logger.warning(
                    "queue maintenance failed (%s)",
                    exc,
                    extra={"event": LogEvent.STORE_ERROR, "worker": self._index},
                )

    def __repr__(self) -> str:
        return f"Consumer(worker={self._index}, running={len(self._running)}, {self._slots!r})"


async def _stopped_within(stopping: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds`; True if `stopping` was set meanwhile."""
    try:
        async with asyncio.timeout(seconds):
            await stopping.wait()
    except TimeoutError:
        return False
    return True
