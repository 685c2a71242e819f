"""The `Store` protocol: what the runtime needs from a durable job table.

No `sqlite3` here; `sqlite_store.SqliteStore` is the production implementation and the
contract suite in `tests/contract/test_store.py` holds every implementation to it.
A store never reads a clock: every time is passed in (POSIX seconds from `Clock.realtime()`).

Leases: a claimed job is `running` with `lease_until`; its worker renews the lease while it
runs, and any worker may re-queue jobs whose lease has expired (`requeue_expired`). That
gives at-least-once delivery with a duplicate only after a crash or an expired lease.
Completion is fenced by the claim's `attempt`, so a worker whose lease was taken over
cannot overwrite the outcome of the newer run.

The protocol is synchronous on purpose (STYLE 4.10's open question, decided): the SPEC's
producer API is synchronous (`perform_async` returns an id from plain code and from inside
a running loop alike), SQLite statements here are short and run inline, and an async facade
over inline calls would add ceremony without letting anything else run. Inline calls also
keep the simulator deterministic (SIMULATION: real threads gave six traces in thirty runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from reference.records import JobRow, JobStatus, NewJob, StoreStats, WorkerRow


class Store(Protocol):
    """A durable job table. All methods raise `StoreError` subclasses, never driver errors."""

    def enqueue(self, job: NewJob) -> int:
        """Insert one pending job; return its id."""
        ...

    def enqueue_many(self, jobs: Sequence[NewJob]) -> list[int]:
        """Insert many pending jobs in one transaction; return their ids in order."""
        ...

    def fetch_due(self, worker: int, *, now: float, lease: float, limit: int = 1) -> list[JobRow]:
        """Claim up to `limit` oldest due pending jobs in one `BEGIN IMMEDIATE` transaction.

        Claimed rows come back `running`, `locked_by=worker`, `attempts` incremented and
        `lease_until = now + lease`, ordered by `(run_at, id)`. Any error inside rolls back
        and leaves the store usable (the 0.6.1 fix).
        """
        ...

    def renew(self, worker: int, job_ids: Sequence[int], *, lease_until: float) -> int:
        """Extend the lease of `worker`'s running jobs; return how many were renewed."""
        ...

    def complete(self, job_id: int, *, attempt: int, now: float) -> bool:
        """Mark claim `attempt` of a running job done; False if the claim was superseded."""
        ...

    def complete_and_fetch(
        self,
        claims: Sequence[tuple[int, int]],
        *,
        now: float,
        worker: int,
        lease: float,
        limit: int,
    ) -> tuple[list[bool], list[JobRow]]:
        """`complete` each `(job_id, attempt)`, then `fetch_due(worker, limit=limit)`, atomically.

        A busy worker's hot path: the jobs that finished in one loop step are recorded and
        their slots refilled in a single transaction. Returns, in order, whether each claim
        was completed (False: superseded), and the newly claimed rows. All or nothing: on
        any error no completion and no claim is kept.
        """
        ...

    def fail(
        self, job_id: int, error: str, *, attempt: int, retry_at: float | None, now: float
    ) -> bool:
        """Record a failed run: back to pending at `retry_at`, or `failed` if it is None."""
        ...

    def requeue_running(self, worker: int, *, now: float) -> int:
        """Re-queue every job left running under `worker` (its own start-up recovery)."""
        ...

    def requeue_expired(self, *, now: float) -> int:
        """Re-queue running jobs of any worker whose lease ended before `now`."""
        ...

    def purge_done(self, *, older_than: float) -> int:
        """Delete done jobs finished before `older_than`; return how many."""
        ...

    def retry(self, job_id: int, *, now: float) -> bool:
        """Re-queue a `failed` job to run at `now`; False if it is not failed."""
        ...

    def next_run_at(self) -> float | None:
        """The earliest `run_at` among pending jobs, or None if none is pending."""
        ...

    def get(self, job_id: int) -> JobRow | None:
        """One job by id."""
        ...

    def list_jobs(self, status: JobStatus | None = None, *, limit: int = 100) -> list[JobRow]:
        """Jobs by id, newest first, optionally of one status."""
        ...

    def stats(self) -> StoreStats:
        """Counts by status and the oldest pending job's run_at."""
        ...

    def register_worker(self, worker: WorkerRow) -> None:
        """Record a worker process that starts serving (its owner id is new)."""
        ...

    def heartbeat(self, owner: str, *, now: float) -> bool:
        """Say `owner` is alive at `now`; False if it has no row or marked itself stopped."""
        ...

    def stop_worker(self, owner: str, *, now: float) -> None:
        """Mark `owner` stopped (a graceful stop); its row stays for `list_workers`."""
        ...

    def purge_workers(self, *, older_than: float) -> int:
        """Delete the rows of workers that stopped, or last beat, before `older_than`."""
        ...

    def list_workers(self) -> list[WorkerRow]:
        """Every worker row, newest start first."""
        ...

    def verify(self) -> None:
        """Check the store is still the one opened and answers; a worker calls it each poll.

        Raises:
            StoreUnusableError: it was deleted or replaced (a worker exits at once).
            StoreError: it does not answer now.
        """
        ...

    def close(self) -> None:
        """Close the store; idempotent."""
        ...


# Kept beside the class it serves (not merged into the imports above) so the schedules
# protocol stays one self-contained block.
if TYPE_CHECKING:
    from reference.records import NewSchedule, ScheduleRow


class ScheduleStore(Protocol):
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

    def close(self) -> None:
        """Close the store; idempotent."""
        ...
