"""The store seam: what the runtime needs from a durable job table, split by who calls it.

No driver here; `sqlite_store.SqliteStore` is the production implementation and the
contract suite in `tests/contract/test_store.py` holds every implementation to it.
A store never reads a clock: every time is passed in (POSIX seconds from `Clock.realtime()`).

Three callers, three small protocols:

* `WorkerStore` — a worker process: register its owner row, claim jobs and record
  outcomes (one call does both), heartbeat and renew, recover the jobs of dead owners,
  stop, purge, and the next due time.
* `ProducerStore` — whoever enqueues.
* `AdminStore` — the CLI and the operator's tools: reads, and a failed job's retry.

`Store` is all three: what one implementation provides.

Owners and leases: each worker process has a unique owner id and a `workers` row it
heartbeats. A claimed job is `running` with `locked_by = owner` and `lease_until`, renewed
with the heartbeat. Recovery re-queues a running job only when its owner is gone: the
owner marked itself stopped, or an observing worker found it dead (`recover`, given the
owners it judged dead by `reference.liveness`). A job whose owner has no live row (a
legacy row, an owner whose row was purged) falls back to its lease. Outcomes are fenced
by owner and attempt, so a worker presumed dead (frozen, partitioned) cannot overwrite
the newer run's outcome. That gives at-least-once delivery with a duplicate only after a
crash or a stall longer than the lease.

The protocols are synchronous on purpose (STYLE 4.10's open question, decided): the SPEC's
producer API is synchronous (`perform_async` returns an id from plain code and from inside
a running loop alike), SQLite statements here are short and run inline, and an async facade
over inline calls would add ceremony without letting anything else run. Inline calls also
keep the simulator deterministic (SIMULATION: real threads gave six traces in thirty runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from reference.records import JobRow, JobStatus, NewJob, Settlement, StoreStats, WorkerRow


class _Closable(Protocol):
    def close(self) -> None:
        """Close the store; idempotent. Later calls raise `StoreError`."""
        ...


class WorkerStore(_Closable, Protocol):
    """What a worker process calls. Every method raises `StoreError`, never a driver error."""

    def register_worker(self, worker: WorkerRow) -> None:
        """Record a worker process that starts serving (a new owner id, or one re-joining)."""
        ...

    def claim(
        self,
        owner: str,
        *,
        now: float,
        lease: float,
        limit: int,
        settle: Sequence[Settlement] = (),
    ) -> tuple[list[bool], list[JobRow]]:
        """Record `owner`'s finished runs, then claim up to `limit` due jobs, atomically.

        The one way a worker records an outcome: a busy worker's finished jobs are written
        with the claims that refill their slots, in one transaction. Each settlement is
        fenced by owner and attempt; the first list says, in order, which were recorded
        (False: the run was superseded — re-queued by a peer that judged its owner dead).
        Claimed rows come back `running`, `locked_by=owner`, `attempts` incremented,
        `lease_until = now + lease`, ordered by `(run_at, id)`; `limit=0` claims nothing.
        All or nothing: on any error nothing is recorded or claimed and the store stays
        usable (the 0.6.1 fix).
        """
        ...

    def heartbeat(
        self, owner: str, *, now: float, renew: Sequence[int] = (), lease_until: float = 0.0
    ) -> bool:
        """Say `owner` is alive at `now` and extend the leases of its running jobs `renew`.

        False if `owner` has no live row (never registered, or marked stopped by a peer
        that presumed it dead): its jobs may already run elsewhere, and it must register
        again before it claims.
        """
        ...

    def recover(self, dead: Sequence[str], *, now: float) -> int:
        """Re-queue the running jobs of `dead` owners and mark those owners stopped.

        Also re-queues running jobs whose owner has no live row and whose lease ended
        before `now`. Each re-queued run counts a crash; a job at its `max_crashes` ends
        `failed` instead. Returns how many jobs were re-queued or failed.
        """
        ...

    def stop_worker(self, owner: str, *, now: float) -> int:
        """A graceful stop: release what `owner` still runs (no crash counted), mark it stopped.

        Returns how many jobs were released back to pending.
        """
        ...

    def purge(self, *, done_before: float, workers_before: float) -> int:
        """Delete done jobs finished before `done_before`, and the rows of workers that
        stopped or last beat before `workers_before`; return how many jobs were deleted."""
        ...

    def next_run_at(self) -> float | None:
        """The earliest `run_at` among pending jobs, or None if none is pending."""
        ...

    def list_workers(self) -> list[WorkerRow]:
        """Every worker row, newest start first (a worker reads it to judge its peers)."""
        ...

    def verify(self) -> None:
        """Check the store is still the one opened and answers; a worker calls it each poll.

        Raises:
            StoreUnusableError: it was deleted or replaced (a worker exits at once).
            StoreError: it does not answer now.
        """
        ...


class ProducerStore(_Closable, Protocol):
    """What an enqueuing process calls."""

    def enqueue(self, job: NewJob) -> int:
        """Insert one pending job; return its id."""
        ...

    def enqueue_many(self, jobs: Sequence[NewJob]) -> list[int]:
        """Insert many pending jobs in one transaction; return their ids in order."""
        ...


class AdminStore(_Closable, Protocol):
    """What the CLI and operators' tools call: reads, and re-running a failed job."""

    def get(self, job_id: int) -> JobRow | None:
        """One job by id."""
        ...

    def list_jobs(self, status: JobStatus | None = None, *, limit: int = 100) -> list[JobRow]:
        """Jobs by id, newest first, optionally of one status."""
        ...

    def stats(self) -> StoreStats:
        """Counts by status and the oldest pending job's run_at."""
        ...

    def list_workers(self) -> list[WorkerRow]:
        """Every worker row, newest start first."""
        ...

    def retry(self, job_id: int, *, now: float) -> bool:
        """Re-queue a `failed` job to run at `now`; False if it is not failed."""
        ...


# Kept beside the class it serves (not merged into the imports above) so the schedules
# protocol stays one self-contained block.
if TYPE_CHECKING:
    from reference.records import NewSchedule, ScheduleRow


class ScheduleStore(_Closable, Protocol):
    """The `schedules` table, worker side: one row per schedule entry, fired by CAS.

    Every worker sharing the store loads every entry; a tick is fired (or skipped) only by
    the one worker whose `claim_fire` moved the row's `next_fire` on from the value it read,
    so each tick fires once across all workers and supervisors. Times are POSIX seconds.
    """

    def sync_schedules(self, entries: Sequence[NewSchedule], *, now: float) -> list[ScheduleRow]:
        """Insert missing rows and refresh the others in one transaction; return the rows.

        A row whose `spec` is unchanged keeps `next_fire`, `last_fire`, `paused` and its
        counts (cadence survives restarts); a changed spec takes the entry's `next_fire`.
        Class, args, queue and priority always take the entry's; `synced_at` is `now`.
        Rows come back in the order of `entries`. Rows of names not given are left alone.
        """
        ...

    def claim_fire(
        self, name: str, *, expected: float, next_fire: float | None, fired_at: float | None
    ) -> bool:
        """Claim the tick at `expected`: move `next_fire` from `expected` to `next_fire`.

        True for exactly one caller per value of `expected`; False if another worker moved
        it first, the entry is paused, or has no row. `fired_at` is the fire's time (it
        becomes `last_fire`, `fires` + 1); None records a skip (`skips` + 1, `last_fire`
        kept). `next_fire` None retires the entry (no fire time left).
        """
        ...

    def get_schedule(self, name: str) -> ScheduleRow | None:
        """One entry's row, or None if it has none."""
        ...

    def list_schedules(self) -> list[ScheduleRow]:
        """Every row, by name (an empty list if the table does not exist yet)."""
        ...

    def set_paused(self, name: str, paused: bool) -> bool:
        """Pause (no tick is claimed) or resume an entry; False if it has no row."""
        ...


class Store(WorkerStore, ProducerStore, AdminStore, ScheduleStore, Protocol):
    """Everything one store implementation provides."""
