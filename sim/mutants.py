"""Mutants: realistic bugs re-introduced into the real runtime, each of which the catalog
must catch. Each names the reference function it swaps, the behaviour it restores, and the
scenario expected to catch it; `python -m sim mutants` runs them and prints the score.
"""

from __future__ import annotations

import asyncio
import types
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import reference.scheduler
import reference.sqlite_store
from reference.counters import Outcome
from reference.records import LogEvent
from reference.runner import describe_error
from reference.triggers import interval_next
from reference.waker import WakeReport, encode_hops

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from reference.consumer import Consumer
    from reference.job import Job
    from reference.liveness import PeerWatch
    from reference.options import JobOptions
    from reference.records import JobRow, Settlement, WorkerRow
    from reference.runner import Runner
    from reference.scheduler import EntryState, Scheduler
    from reference.sqlite_store import SqliteStore
    from reference.upkeep import Upkeep
    from reference.waker import Waker


@dataclass(frozen=True, slots=True)
class Mutant:
    """One injected bug: where it goes, what it restores, who should catch it."""

    name: str
    target: str  # "module:attribute.path" of the swapped function
    restores: str
    caught_by: tuple[str, ...]  # scenario names
    replacement: Any  # a function, or a constant such as a SQL string

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Swap the target for the replacement for the duration of the block."""
        module_name, _, path = self.target.partition(":")
        module = __import__(module_name, fromlist=["_"])
        *owners, attr = path.split(".")
        owner: Any = module
        for name in owners:
            owner = getattr(owner, name)
        original = getattr(owner, attr)
        setattr(owner, attr, self.replacement)
        try:
            yield
        finally:
            setattr(owner, attr, original)


def _skip_without_reschedule(self: Scheduler, state: EntryState, due: float) -> float:
    # 0.6.0: count and log the skip, then put the entry back with the same (past) due time.
    state.skips += 1
    self._counters.skipped()
    self._observer.emit(LogEvent.JOB_SKIPPED, entry=state.entry.name)
    return due


def _no_rollback(conn: object) -> None:
    # 0.6.0: an error inside the fetch transaction leaves it open.
    return None


def _notify_every_worker(self: Waker) -> WakeReport:
    # 0.6.0: every enqueue woke every worker (N syscalls, N racing fetches).
    n = len(self.indices)
    payload = encode_hops(n - 1)
    attempts = []
    woken = None
    for index in self.indices:
        result = self._transport.try_send(self._addresses[index], payload)
        attempts.append((index, result))
        if result.woke and woken is None:
            woken = index
    return WakeReport(tuple(attempts), woken)


def _no_fallback(self: Waker) -> WakeReport:
    # A notifier that tries its random first choice only.
    n = len(self.indices)
    if n == 0:
        return WakeReport((), None)
    index = self.indices[self._rng.randrange(n)]
    result = self._transport.try_send(self._addresses[index], encode_hops(n - 1))
    return WakeReport(((index, result),), index if result.woke else None)


def _busy_keeps_wakeup(self: Waker, from_index: int, hops_left: int) -> WakeReport:
    # The gem: a woken worker with no free slot keeps the wake-up; idle peers sleep on.
    return WakeReport((), None)


def _living_in(module: types.ModuleType, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Rebind `fn` to `module`'s globals, so it runs as code of that module would."""
    return types.FunctionType(fn.__code__, module.__dict__, fn.__name__, fn.__defaults__)


def _next_run_on_real_clock(self: Scheduler, state: EntryState, due: float) -> float:
    # Interval maths on time.monotonic() instead of the injected clock.
    now = __import__("time").monotonic()
    if state.entry.every is not None:
        return interval_next(due, state.entry.every, now)
    return self._cron_due(state, self._clock.monotonic())


def _skip_not_counted(self: Scheduler, state: EntryState, due: float) -> float:
    # Skips are traced and rescheduled but never reach the metrics.
    state.skips += 1
    self._observer.emit(LogEvent.JOB_SKIPPED, entry=state.entry.name)
    return self.next_run(state, due)


def _retry_off_by_one(self: Consumer, row: JobRow, options: JobOptions) -> float | None:
    # `<` for `<=`: a job with retry=2 gets one retry, not two.
    if row.attempts >= options.retry:
        return None
    return self._clock.realtime() + options.retry_delay_for(row.attempts, self._rng)


async def _no_heartbeat(self: Upkeep, done: asyncio.Event) -> None:
    # The owner row is registered but never beats again: peers judge the worker dead a
    # lease after it started, and its long jobs run twice.
    await done.wait()


def _claims_ignore_busy_slots(self: Consumer, serving: bool) -> int:
    # Claims a job per slot of the worker, busy or not: wake-ups and finished runs then
    # claim jobs the worker has no slot for.
    return self._slots.size if serving else 0


async def _slot_watch_off(self: Consumer) -> None:
    # Nothing wakes the consumer when a scheduled run frees a slot: queue jobs wait for
    # the next completion or the poll while the slot sits idle.
    await self._done.wait()


def _settle_apart_from_claim(
    self: SqliteStore,
    owner: str,
    *,
    now: float,
    lease: float,
    limit: int,
    settle: Sequence[Settlement] = (),
) -> tuple[list[bool], list[JobRow]]:
    # Separate writes: a failed claim leaves the outcomes committed, so their retried
    # writes find the claims gone and report them superseded.
    recorded = [reference.sqlite_store._settle_one(self._conn, owner, one, now) for one in settle]
    rows = self._transaction(self._claim, "fetch", owner, now, lease, limit) if limit else []
    return recorded, rows


def _every_peer_dead(self: PeerWatch, rows: Sequence[WorkerRow], *, monotonic: float) -> list[str]:
    # Wave 1's recovery by index, in owner terms: a starting worker takes every other
    # worker's running jobs for leftovers, so a second supervisor re-runs live jobs.
    return [row.owner for row in rows if row.owner != self._me and row.stopped_at is None]


# A compare-and-set that forgets to compare: any claimant "wins" the tick it read, so two
# workers that read one next_fire both fire it. (`?4 IS NOT NULL` takes the expected value.)
_CLAIM_FIRE_WITHOUT_EXPECTED = reference.sqlite_store._CLAIM_FIRE.replace(
    "next_fire = ?4", "?4 IS NOT NULL"
)
# Cadence from each start: every sync gives every row a fresh next_fire (start + jitter +
# every), as the in-memory scheduler does, so frequent restarts starve long intervals.
_SYNC_RESETS_CADENCE = reference.sqlite_store._SYNC_SCHEDULE.replace(
    "CASE WHEN spec = excluded.spec THEN next_fire ELSE excluded.next_fire END",
    "excluded.next_fire",
)

_FETCH_ANY_TIME = reference.sqlite_store._CLAIM.replace("run_at <= ?", "? IS NOT NULL")

# Wave 1's re-queue: a run whose worker died goes back to pending with no crash counted, so a
# job that kills its worker is claimed first by every restart, forever. (`? IS NOT NULL`
# takes the `now` parameter the crash-counting statement binds for finished_at.)
_REQUEUE_UNCOUNTED = (
    "UPDATE jobs SET status = 'pending', locked_by = NULL, locked_at = NULL,"
    " lease_until = NULL WHERE ? IS NOT NULL AND status = 'running' AND "
)


async def _boundary_catches_exception_only(
    self: Runner, job_cls: type[Job], args: list[object]
) -> BaseException | None:
    # Wave 1's boundary: `except Exception`, so SystemExit and KeyboardInterrupt escape the
    # job (and, from a task, the event loop) and take the worker down.
    try:
        await self._perform(job_cls, args)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return exc
    return None


async def _timeout_without_abandon(
    self: Runner, job_cls: type[Job], args: list[object], time_limit: float, label: str
) -> tuple[Outcome, str | None]:
    # Wave 1: the job runs under asyncio.timeout in the runner's own task, so one that
    # swallows the cancellation holds its slot (and the worker's stop) for as long as it likes.
    try:
        async with asyncio.timeout(time_limit) as deadline:
            exc = await self._guarded(job_cls, args)
    except TimeoutError:
        if deadline.expired():
            return Outcome.TIMEOUT, f"TimeoutError: {label} exceeded its {time_limit:g} s timeout"
        raise
    return (Outcome.SUCCESS, None) if exc is None else (Outcome.FAILURE, describe_error(exc))


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        name="overlap_skip_no_reschedule",
        target="reference.scheduler:Scheduler.on_overlap",
        restores="0.6.0: an overlapping entry is re-pushed without rescheduling (busy loop)",
        caught_by=("cron_overlap_skip",),
        replacement=_skip_without_reschedule,
    ),
    Mutant(
        name="fetch_error_no_rollback",
        target="reference.sqlite_store:_rollback_open_transaction",
        restores="0.6.0: an error inside fetch's BEGIN IMMEDIATE is not rolled back",
        caught_by=("fetch_error_rollback",),
        replacement=_no_rollback,
    ),
    Mutant(
        name="notify_every_worker",
        target="reference.waker:Waker.wake_one",
        restores="0.6.0: an enqueue wakes every worker instead of one",
        caught_by=("notifier_ring_fallback",),
        replacement=_notify_every_worker,
    ),
    Mutant(
        name="notifier_without_fallback",
        target="reference.waker:Waker.wake_one",
        restores="the notifier tries its first choice only, dead or not",
        caught_by=("notifier_ring_fallback",),
        replacement=_no_fallback,
    ),
    Mutant(
        name="busy_worker_keeps_wakeup",
        target="reference.waker:Waker.pass_on",
        restores="the gem: a busy woken worker does not hand the wake-up on",
        caught_by=("notifier_ring_fallback",),
        replacement=_busy_keeps_wakeup,
    ),
    Mutant(
        name="scheduler_reads_real_clock",
        target="reference.scheduler:Scheduler.next_run",
        restores="interval rescheduling reads time.monotonic() instead of the injected clock",
        caught_by=("schedule_1000",),
        replacement=_living_in(reference.scheduler, _next_run_on_real_clock),
    ),
    Mutant(
        name="skip_not_counted",
        target="reference.scheduler:Scheduler.on_overlap",
        restores="an overlap skip is rescheduled but never counted in the metrics",
        caught_by=("cron_overlap_skip",),
        replacement=_skip_not_counted,
    ),
    Mutant(
        name="retry_off_by_one",
        target="reference.consumer:Consumer.retry_at",
        restores="retries stop one attempt early (`<` for `<=`)",
        caught_by=("fetch_error_rollback",),
        replacement=_retry_off_by_one,
    ),
    Mutant(
        name="schedule_cas_without_expected",
        target="reference.sqlite_store:_CLAIM_FIRE",
        restores="claim_fire updates the row without comparing next_fire to the value read",
        caught_by=("placement_failover",),
        replacement=_CLAIM_FIRE_WITHOUT_EXPECTED,
    ),
    Mutant(
        name="schedule_cadence_from_start",
        target="reference.sqlite_store:_SYNC_SCHEDULE",
        restores="every start resets an entry's next fire (cadence from start, not last fire)",
        caught_by=("rolling_restarts",),
        replacement=_SYNC_RESETS_CADENCE,
    ),
    Mutant(
        name="fetch_ignores_run_at",
        target="reference.sqlite_store:_CLAIM",
        restores="fetch claims pending jobs that are not yet due",
        caught_by=("fetch_error_rollback",),
        replacement=_FETCH_ANY_TIME,
    ),
    Mutant(
        name="claims_ignore_busy_slots",
        target="reference.consumer:Consumer._claimable",
        restores="the queue claims for every slot of the worker, busy or not",
        caught_by=("shared_slots", "swarm"),
        replacement=_claims_ignore_busy_slots,
    ),
    Mutant(
        name="free_slot_not_watched",
        target="reference.consumer:Consumer._wake_on_free_slot",
        restores="a slot freed by a scheduled run does not wake the consumer (found earlier)",
        caught_by=("shared_slots",),
        replacement=_slot_watch_off,
    ),
    Mutant(
        name="settle_claim_not_atomic",
        target="reference.sqlite_store:SqliteStore.claim",
        restores="outcomes and the claim made with them commit separately",
        caught_by=("fetch_error_rollback",),
        replacement=_settle_apart_from_claim,
    ),
    Mutant(
        name="crashes_not_counted",
        target="reference.sqlite_store:_REQUEUE",
        restores="wave 1: a run whose worker died is re-queued uncounted, forever",
        caught_by=("poison_jobs",),
        replacement=_REQUEUE_UNCOUNTED,
    ),
    Mutant(
        name="job_boundary_exception_only",
        target="reference.runner:Runner._guarded",
        restores="wave 1: the job boundary catches Exception only (sys.exit() escapes)",
        caught_by=("poison_jobs",),
        replacement=_boundary_catches_exception_only,
    ),
    Mutant(
        name="cancel_swallower_holds_its_slot",
        target="reference.runner:Runner._supervise",
        restores="wave 1: a job that swallows its timeout's cancellation is never abandoned",
        caught_by=("poison_jobs",),
        replacement=_timeout_without_abandon,
    ),
    Mutant(
        name="owner_never_beats",
        target="reference.upkeep:Upkeep.beat",
        restores="a worker never heartbeats: peers judge it dead and run its long jobs again",
        caught_by=("fetch_error_rollback",),
        replacement=_no_heartbeat,
    ),
    Mutant(
        name="recovery_takes_live_peers",
        target="reference.liveness:PeerWatch.dead",
        restores="wave 1: recovery by index re-queues a live peer's running jobs",
        caught_by=("two_supervisors", "lease_takeover"),
        replacement=_every_peer_dead,
    ),
)


# -- queue-history mutants: each caught by one of the invariants in sim.invariants

# A "grace second" for clock noise: jobs due within a second are claimed early.
_FETCH_A_SECOND_EARLY = reference.sqlite_store._CLAIM.replace("run_at <= ?", "run_at <= ? + 1")

# Newest first: a stack, not a queue; under a backlog old due jobs wait behind new ones.
_FETCH_NEWEST_FIRST = reference.sqlite_store._CLAIM.replace(
    "ORDER BY run_at, id", "ORDER BY id DESC"
)

# The attempt fence dropped from the completion: a run whose lease was taken over still
# marks the job done while the newer attempt runs. (`? IS NOT NULL` keeps the parameter.)
_COMPLETE_UNFENCED = reference.sqlite_store._COMPLETE.replace(
    "AND attempts = ? AND locked_by = ?", "AND ? IS NOT NULL AND ? IS NOT NULL"
)


def _exponential_from_first_retry(self: JobOptions, attempt: int, rng: Any) -> float:
    # `2 ** attempt` for `2 ** (attempt - 1)`: the first retry already waits twice the
    # delay. (`rng` is the consumer's random.Random.)
    if attempt < 1:
        raise ValueError("attempt counts runs started, so it is at least 1")
    base = self.retry_delay
    if self.backoff == "linear":
        base *= attempt
    elif self.backoff == "exponential":
        base *= 2.0 ** min(attempt, 62)
    jitter = self.effective_jitter
    if jitter:
        base *= rng.uniform(1.0 - jitter, 1.0 + jitter)
    return min(max(base, 0.0), 24 * 3600.0)


def _retry_at_on_monotonic(self: Consumer, row: JobRow, options: JobOptions) -> float | None:
    # The retry time taken from the monotonic clock: a small number, so run_at lies in the
    # distant past and the retry runs at once, with no backoff at all.
    if row.attempts > options.retry:
        return None
    return self._clock.monotonic() + options.retry_delay_for(row.attempts, self._rng)


MUTANTS += (
    Mutant(
        name="fetch_a_second_early",
        target="reference.sqlite_store:_CLAIM",
        restores="fetch claims jobs due within the next second (`run_at <= ? + 1`)",
        caught_by=("fetch_error_rollback", "swarm"),
        replacement=_FETCH_A_SECOND_EARLY,
    ),
    Mutant(
        name="fetch_newest_first",
        target="reference.sqlite_store:_CLAIM",
        restores="fetch orders by id DESC: the newest due job is claimed first",
        caught_by=("shared_slots", "swarm"),
        replacement=_FETCH_NEWEST_FIRST,
    ),
    Mutant(
        name="complete_without_fence",
        target="reference.sqlite_store:_COMPLETE",
        restores="a completion is accepted from a superseded run (no owner/attempt fence)",
        caught_by=("lease_takeover", "swarm"),
        replacement=_COMPLETE_UNFENCED,
    ),
    Mutant(
        name="exponential_backoff_off_by_one",
        target="reference.options:JobOptions.retry_delay_for",
        restores="exponential backoff uses 2 ** attempt: every retry waits twice too long",
        caught_by=("fetch_error_rollback", "swarm"),
        replacement=_exponential_from_first_retry,
    ),
    Mutant(
        name="retry_at_on_monotonic_clock",
        target="reference.consumer:Consumer.retry_at",
        restores="a retry's run_at is computed from the monotonic clock: no backoff",
        caught_by=("fetch_error_rollback",),
        replacement=_retry_at_on_monotonic,
    ),
)
