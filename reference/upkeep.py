"""A worker's upkeep of the shared store: its owner row, its peers, and old rows.

Layer 2 (engine): asyncio over the `WorkerStore` protocol; reads time only through the
clock. The consumer owns one `Upkeep` and runs its two loops beside the claim loop:

* `beat` — every lease/3 until the consumer is done: heartbeat the owner row and renew
  the leases of the jobs still running (a worker must miss two beats in a row before a
  peer may judge it dead). A heartbeat refused because a peer presumed this worker dead
  (it stalled past a lease) re-registers it: its old runs are already re-queued and their
  outcomes will be refused, but it may serve again.
* `maintain` — every `CHECK_EVERY` until stopping: judge the peers (`liveness.PeerWatch`)
  and re-queue the jobs of the dead ones; purge old done jobs and worker rows.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from reference.errors import StoreError
from reference.liveness import PeerWatch, Probe, never_gone
from reference.records import LogEvent, WorkerRow

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from reference.clock import Clock
    from reference.observe import Observer
    from reference.store import WorkerStore

logger = logging.getLogger(__name__)

# SPEC: done jobs older than an hour are cleaned every five minutes.
PURGE_EVERY = 300.0
PURGE_OLDER_THAN = 3600.0
# Rows of workers that stopped (or went silent) are kept this long for `queue workers`.
WORKER_ROWS_KEPT = 86400.0
# How often peers are judged, as a fraction of the lease: a dead peer's jobs are re-queued
# at most lease + lease/CHECKS_PER_LEASE after its last heartbeat.
CHECKS_PER_LEASE = 6


class Upkeep:
    """The owner row, the peers' liveness and purging, for one worker process."""

    def __init__(
        self,
        store: WorkerStore,
        row: WorkerRow,
        *,
        lease: float,
        clock: Clock,
        observer: Observer,
        running: Callable[[], Collection[int]],
        on_store_error: Callable[[StoreError], None],
        gone: Probe = never_gone,
    ) -> None:
        self._store = store
        self._row = row
        self._lease = lease
        self._clock = clock
        self._observer = observer
        self._running = running
        self._on_store_error = on_store_error
        self._watch = PeerWatch(row.owner, lease=lease, gone=gone)
        self._registered = False
        self.recovered = False  # the first recovery pass has run (start-up recovery)

    @property
    def owner(self) -> str:
        return self._row.owner

    def _warn(self, what: str, exc: StoreError, op: str) -> None:
        self._on_store_error(exc)
        self._observer.emit(LogEvent.STORE_ERROR, worker=self._row.index, op=op)
        logger.warning(
            "%s failed (%s)",
            what,
            exc,
            extra={"event": LogEvent.STORE_ERROR, "worker": self._row.index},
        )

    def _register(self, now: float) -> None:
        row = self._row
        self._store.register_worker(
            WorkerRow(
                owner=row.owner,
                host=row.host,
                pid=row.pid,
                index=row.index,
                queues=row.queues,
                started_at=row.started_at,
                heartbeat_at=now,
            )
        )
        self._registered = True

    def recover(self) -> bool:
        """Register (once), then re-queue the jobs of peers judged dead; True if it ran.

        A store error (say, locked by a peer) must not kill the worker: it logs, and the
        next maintenance pass tries again, while the owners' heartbeats cover the jobs.
        """
        now = self._clock.realtime()
        try:
            if not self._registered:
                self._register(now)
            dead = self._watch.dead(self._store.list_workers(), monotonic=self._clock.monotonic())
            requeued = self._store.recover(dead, now=now)
        except StoreError as exc:
            what = "recovering the jobs of dead workers" if self.recovered else "start-up recovery"
            self._warn(what, exc, "recover")
            return False
        first, self.recovered = not self.recovered, True
        if requeued or dead:
            logger.info(
                "re-queued %d jobs of %d workers found dead (%s)",
                requeued,
                len(dead),
                ", ".join(dead) if dead else "leases expired",
                extra={"event": LogEvent.JOBS_REQUEUED, "worker": self._row.index},
            )
        if first or requeued or dead:
            self._observer.emit(
                LogEvent.JOBS_RECOVERED, worker=self._row.index, requeued=requeued, dead=len(dead)
            )
        return requeued > 0

    async def beat(self, done: asyncio.Event) -> None:
        """Every lease/3 until `done`: heartbeat, and extend the leases of running jobs."""
        every = self._lease / 3
        while not await set_within(done, every):
            now = self._clock.realtime()
            try:
                if not self._registered:
                    continue  # start-up recovery registers first
                running = sorted(self._running())
                alive = self._store.heartbeat(
                    self.owner, now=now, renew=running, lease_until=now + self._lease
                )
                if not alive:
                    logger.warning(
                        "a peer presumed this worker dead (no heartbeat for a lease); its"
                        " %d running jobs were re-queued; registering again",
                        len(running),
                        extra={"event": LogEvent.STORE_ERROR, "worker": self._row.index},
                    )
                    self._register(now)
            except StoreError as exc:
                self._warn(f"heartbeat (retrying in {every:.0f} s)", exc, "heartbeat")

    async def maintain(self, stopping: asyncio.Event, nudge: Callable[[], None]) -> None:
        """Judge peers every lease/CHECKS_PER_LEASE; purge old rows every PURGE_EVERY."""
        every = min(self._lease / CHECKS_PER_LEASE, PURGE_EVERY)
        since_purge = 0.0
        while not await set_within(stopping, every):
            if self.recover():
                nudge()  # re-queued jobs are due now: claim them
            since_purge += every
            if since_purge < PURGE_EVERY:
                continue
            since_purge = 0.0
            now = self._clock.realtime()
            try:
                purged = self._store.purge(
                    done_before=now - PURGE_OLDER_THAN, workers_before=now - WORKER_ROWS_KEPT
                )
            except StoreError as exc:
                self._warn("purging old rows", exc, "purge")
                continue
            if purged:
                logger.info(
                    "purged %d done jobs",
                    purged,
                    extra={"event": LogEvent.JOBS_PURGED, "worker": self._row.index},
                )

    def stop(self) -> None:
        """A graceful end: release what this worker still holds and mark its row stopped."""
        if not self._registered:
            return
        try:
            released = self._store.stop_worker(self.owner, now=self._clock.realtime())
        except StoreError as exc:  # its heartbeat goes stale instead; peers recover its jobs
            self._warn("marking this worker stopped", exc, "stop")
            return
        if released:
            logger.warning(
                "released %d jobs whose outcome could not be recorded; they will run again",
                released,
                extra={"event": LogEvent.JOBS_REQUEUED, "worker": self._row.index},
            )

    def __repr__(self) -> str:
        return f"Upkeep(owner={self.owner!r}, {self._watch!r})"


async def set_within(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds`; True if `event` was set meanwhile."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
