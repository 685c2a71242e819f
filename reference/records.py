"""Frozen records that cross module and process boundaries, and the log-event vocabulary.

Pure data: no I/O, no clock reads. Times are floats supplied by the caller: `run_at`,
`created_at`, `locked_at` and `lease_until` are POSIX seconds from `Clock.realtime()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobStatus(StrEnum):
    """Where a queued job is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class LogEvent(StrEnum):
    """The fixed vocabulary put in `extra={"event": ...}` of every structured log line."""

    WORKER_STARTED = "worker_started"
    WORKER_STOPPING = "worker_stopping"
    WORKER_STOPPED = "worker_stopped"
    ENTRY_SCHEDULED = "entry_scheduled"
    ENTRY_FIRED = "entry_fired"  # a worker won a schedule row's tick (claim_fire) and fires it
    JOB_STARTED = "job_started"
    JOB_SUCCEEDED = "job_succeeded"
    JOB_ABANDONED = "job_abandoned"
    JOB_FAILED = "job_failed"
    JOB_TIMED_OUT = "job_timed_out"
    JOB_SKIPPED = "job_skipped"
    JOB_RETRY_SCHEDULED = "job_retry_scheduled"
    JOB_CLAIMED = "job_claimed"
    JOB_COMPLETED = "job_completed"
    JOB_DEAD = "job_dead"
    JOB_ENQUEUED = "job_enqueued"
    JOB_SUPERSEDED = "job_superseded"
    JOBS_RECOVERED = "jobs_recovered"
    WAKE_SENT = "wake_sent"
    WAKE_RECEIVED = "wake_received"
    WAKE_PASSED_ON = "wake_passed_on"
    FETCH = "fetch"
    JOBS_REQUEUED = "jobs_requeued"
    JOBS_PURGED = "jobs_purged"
    STORE_ERROR = "store_error"
    WAKE_UNAVAILABLE = "wake_unavailable"
    WAKE_ERROR = "wake_error"
    STALE_SOCKET_REMOVED = "stale_socket_removed"
    CHILD_EXITED = "child_exited"
    CHILD_RESTARTING = "child_restarting"


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to enqueue; `args` and `options` are already-validated JSON text."""

    name: str
    args: str
    options: str
    run_at: float
    created_at: float


@dataclass(frozen=True, slots=True)
class JobRow:
    """One row of the jobs table as the store returns it."""

    id: int
    name: str
    args: str
    options: str
    status: JobStatus
    run_at: float
    created_at: float
    attempts: int
    locked_by: str | None  # the owner id of the worker process running it
    locked_at: float | None
    lease_until: float | None
    finished_at: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one claimed run ended, recorded by `WorkerStore.claim(settle=...)`.

    `error` None: the job is done. An error with `retry_at`: back to pending at `retry_at`.
    An error without: the job ends `failed`.
    """

    job_id: int
    attempt: int
    error: str | None = None
    retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One worker process's row in the `workers` table: who it is and when it last beat.

    `owner` is unique per process (host, pid and a random token); `index` is its place for
    sockets and schedule placement, which two supervisors on one store may both use.
    """

    owner: str
    host: str
    pid: int
    index: int
    queues: str  # "*" for every queue
    started_at: float
    heartbeat_at: float
    stopped_at: float | None = None


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counts by status and the run_at of the oldest due pending job."""

    pending: int
    running: int
    done: int
    failed: int
    oldest_pending_run_at: float | None

    @property
    def total(self) -> int:
        return self.pending + self.running + self.done + self.failed


@dataclass(frozen=True, slots=True)
class NewSchedule:
    """A schedule entry as a worker syncs it into the `schedules` table at start.

    `spec` is the entry's trigger as text ("every 60.0", "cron 0 3 * * * Europe/Berlin"): a
    row whose stored spec differs was changed in the file and takes `next_fire` afresh;
    an unchanged row keeps its own (so cadence survives restarts). `queue` and `priority`
    are recorded for the job-life work that follows; jobs have no queues yet.
    """

    name: str
    spec: str
    next_fire: float | None  # POSIX s: the first fire if the row is new or its spec changed
    class_name: str
    args: str = "[]"  # JSON array, already validated
    queue: str = "default"
    priority: int = 0


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """One row of the `schedules` table; times are POSIX seconds.

    `next_fire` None: a cron entry that has no fire time left (retired for good).
    `fires` and `skips` count claimed ticks that ran and ticks given up (overlap, misfire).
    """

    name: str
    spec: str
    next_fire: float | None
    last_fire: float | None
    paused: bool
    fires: int
    skips: int
    class_name: str
    args: str
    queue: str
    priority: int
    synced_at: float
