"""Checkers over the trace: reusable invariants that scenarios compose.

Each returns a `Check`. They read only the trace (and counters the scenario passes in),
never runtime internals, so a mutant cannot hide from them by changing an attribute.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import defaultdict
from typing import TYPE_CHECKING

from reference.options import MAX_RETRY_DELAY, JobOptions
from reference.records import LogEvent
from reference.registry import job_name
from sim.scenario import Check

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from reference.job import Job
    from sim.trace import Record, Trace
    from sim.world import World

NS = 1_000_000_000
ENDS = (LogEvent.JOB_SUCCEEDED.value, LogEvent.JOB_FAILED.value, LogEvent.JOB_TIMED_OUT.value)
EPS = 1e-6  # seconds: float noise between the runtime's realtime() and wall_clock()


def runs_by_label(trace: Trace) -> dict[str, list[tuple[int, int]]]:
    """(start_ns, end_ns) of every finished run, per runner label (entry name or job)."""
    open_runs: dict[tuple[int, str], list[int]] = defaultdict(list)
    runs: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in trace.records:
        if r.event == LogEvent.JOB_STARTED.value:
            open_runs[(r.host, str(r.get("label")))].append(r.ns)
        elif r.event in ENDS:
            key = (r.host, str(r.get("label")))
            if open_runs[key]:
                runs[key[1]].append((open_runs[key].pop(0), r.ns))
    return runs


def no_self_overlap(trace: Trace, labels: set[str] | None = None) -> Check:
    """No schedule entry ever runs twice at once (across all hosts)."""
    depth: dict[str, int] = defaultdict(int)
    for r in trace.records:
        label = str(r.get("label"))
        if labels is not None and label not in labels:
            continue
        if r.event == LogEvent.JOB_STARTED.value:
            depth[label] += 1
            if depth[label] > 1:
                return Check(
                    "entry never overlaps itself",
                    False,
                    f"{label} started at {r.ns / NS:.3f}s while already running",
                )
        elif r.event in ENDS:
            depth[label] -= 1
    return Check("entry never overlaps itself", True)


def per_host_concurrency(trace: Trace, limit: int) -> Check:
    """No host ever runs more than `limit` jobs at once, scheduled and queued together."""
    depth: dict[int, int] = defaultdict(int)
    worst = 0
    for r in trace.records:
        if r.event == "host_crash":
            depth[int(str(r.get("host")))] = 0
        elif r.event == LogEvent.JOB_STARTED.value:
            depth[r.host] += 1
            worst = max(worst, depth[r.host])
        elif r.event in ENDS:
            depth[r.host] -= 1
    return Check(
        f"running jobs <= concurrency ({limit}) per worker", worst <= limit, f"max {worst}"
    )


def no_idle_slot_while_due(
    trace: Trace, *, epoch: float, concurrency: int, max_wait: float
) -> Check:
    """No due job stays unclaimed for over `max_wait` s while a live host has a free slot.

    Replays the trace: jobs due and unclaimed (from JOB_ENQUEUED's run_at, POSIX seconds
    from `epoch`, until the job's first JOB_CLAIMED) and each live host's running jobs,
    scheduled or queued (JOB_STARTED to its end; a crash or stop empties it). Every
    stretch in which a due job waits while some live host runs fewer than `concurrency`
    jobs must end within `max_wait`: a wake-up or a freed slot must lead to a claim.
    """
    future: list[tuple[int, int]] = []  # (due ns, job id), not yet due
    waiting: set[int] = set()  # due and unclaimed
    claimed: set[int] = set()
    depth: dict[int, int] = defaultdict(int)
    up: set[int] = set()
    idle_since: int | None = None
    worst, worst_at = 0, 0
    for r in trace.records:
        now = r.ns
        if r.event == "host_start":
            up.add(int(str(r.get("host"))))
        elif r.event in ("host_crash", "host_stopped"):
            host = int(str(r.get("host")))
            up.discard(host)
            depth[host] = 0
        elif r.event == LogEvent.JOB_ENQUEUED.value:
            due = round((float(str(r.get("run_at"))) - epoch) * NS)
            heapq.heappush(future, (due, int(str(r.get("job_id")))))
        elif r.event == LogEvent.JOB_CLAIMED.value:
            job = int(str(r.get("job_id")))
            claimed.add(job)
            waiting.discard(job)
        elif r.event == LogEvent.JOB_STARTED.value:
            depth[r.host] += 1
        elif r.event in ENDS:
            depth[r.host] -= 1
        while future and future[0][0] <= now:
            _, job = heapq.heappop(future)
            if job not in claimed:
                waiting.add(job)
        if idle_since is not None and now - idle_since > worst:
            worst, worst_at = now - idle_since, idle_since
        if waiting and any(depth[h] < concurrency for h in up):
            idle_since = now if idle_since is None else idle_since
        else:
            idle_since = None
    return Check(
        f"no due job waits > {max_wait:g} s while a worker has a free slot",
        worst / NS <= max_wait,
        f"longest {worst / NS:.3f} s, from t={worst_at / NS:.3f}",
    )


def skip_spacing(trace: Trace, period: dict[str, float], slack: float = 0.1) -> Check:
    """Two skips of one entry are never closer than its period (the 0.6.0 busy loop)."""
    last: dict[str, int] = {}
    worst: tuple[float, str] | None = None
    for r in trace.of(LogEvent.JOB_SKIPPED.value):
        entry = str(r.get("entry"))
        if entry in last:
            gap = (r.ns - last[entry]) / NS
            limit = period.get(entry, 0.0) - slack
            if gap < limit and (worst is None or gap < worst[0]):
                worst = (gap, entry)
        last[entry] = r.ns
    if worst is not None:
        return Check(
            "skips spaced by at least the period",
            False,
            f"{worst[1]} skipped twice {worst[0]:.3f}s apart",
        )
    return Check("skips spaced by at least the period", True)


def bounded_steps(world: World, limit: int) -> Check:
    """The loop never ran more than `limit` steps at one virtual instant (no busy loop)."""
    steps = world.loop.stats.max_steps_at_one_instant
    return Check(
        f"at most {limit} loop steps per instant", steps <= limit, f"max {steps} at one instant"
    )


def approx(name: str, actual: int, expected: int, tolerance: int) -> Check:
    return Check(
        f"{name} = {expected} ± {tolerance}",
        abs(actual - expected) <= tolerance,
        f"got {actual}",
    )


# -- queue history: claims, outcomes and retries against run_at and attempt


def wall_clock(world: World) -> Callable[[int], float]:
    """Trace ns -> the runtime's `Clock.realtime()` at that instant: epoch + t + skew(t)."""
    epoch = world.clock.epoch.timestamp()
    skew = world.clock.skew
    if skew is None:
        return lambda ns: epoch + ns / NS
    return lambda ns: epoch + ns / NS + skew.offset_at(ns / NS)


def _int(r: Record, key: str) -> int:
    return int(str(r.get(key)))


def _float(r: Record, key: str) -> float:
    return float(str(r.get(key)))


def _queue_job_id(label: str) -> int | None:
    """The job id in a queue run's runner label (`name#id`); None for a schedule entry."""
    _, sep, tail = label.rpartition("#")
    return int(tail) if sep and tail.isdigit() else None


def no_start_before_run_at(trace: Trace, wall: Callable[[int], float]) -> Check:
    """No job is claimed, or started, before its run_at (in the runtime's wall time).

    The due time of a claim is the run_at it carries (a retry's new time, or the enqueued
    one) and, for a job's first claim, no earlier than the run_at JOB_ENQUEUED gave it.
    A queue run's JOB_STARTED (label `name#id`) is held to its latest claim's due time.
    """
    enqueued: dict[int, float] = {}
    claimed: set[int] = set()
    due: dict[int, float] = {}
    bad: list[str] = []
    for r in trace.records:
        if r.event == LogEvent.JOB_ENQUEUED.value:
            enqueued[_int(r, "job_id")] = _float(r, "run_at")
        elif r.event == LogEvent.JOB_CLAIMED.value:
            job = _int(r, "job_id")
            at = _float(r, "run_at")
            if job not in claimed:
                at = max(at, enqueued.get(job, at))
                claimed.add(job)
            due[job] = at
            now = wall(r.ns)
            if now < at - EPS:
                bad.append(f"job {job} claimed {at - now:.3f} s early at t={r.ns / NS:.3f}")
        elif r.event == LogEvent.JOB_STARTED.value:
            job_or_none = _queue_job_id(str(r.get("label")))
            if job_or_none is not None and job_or_none in due:
                now = wall(r.ns)
                if now < due[job_or_none] - EPS:
                    bad.append(f"job {job_or_none} started {due[job_or_none] - now:.3f} s early")
    return Check("no job claimed or started before its run_at", not bad, "; ".join(bad[:3]))


def claims_in_order(trace: Trace, wall: Callable[[int], float]) -> Check:
    """Due jobs are claimed oldest first: by (run_at, id), never skipping an older due one.

    A claim batch is the run of consecutive JOB_CLAIMED records of one host at one instant
    (one fetch's RETURNING rows: the runtime emits them without yielding). Within a batch
    the (run_at, id) keys must increase. Across batches, a job enqueued and never claimed is
    known pending with its enqueued run_at; no batch may claim a key above such a job's key
    while that job was due (run_at <= the claim's wall time) and left unclaimed. Jobs back
    in pending after a retry or a crash are not tracked: their run_at is only known when
    they are claimed again, so the check never needs a field the trace lacks.
    """
    records = trace.records
    pending: list[tuple[float, int]] = []  # heap of (run_at, id), enqueued, never claimed
    claimed: set[int] = set()
    bad: list[str] = []
    i = 0
    while i < len(records):
        r = records[i]
        if r.event == LogEvent.JOB_ENQUEUED.value:
            heapq.heappush(pending, (_float(r, "run_at"), _int(r, "job_id")))
            i += 1
            continue
        if r.event != LogEvent.JOB_CLAIMED.value:
            i += 1
            continue
        batch: list[tuple[float, int]] = []
        while (
            i < len(records)
            and records[i].event == LogEvent.JOB_CLAIMED.value
            and records[i].host == r.host
            and records[i].ns == r.ns
        ):
            batch.append((_float(records[i], "run_at"), _int(records[i], "job_id")))
            i += 1
        when = f"t={r.ns / NS:.3f} h{r.host}"
        for a, b in itertools.pairwise(batch):
            if b <= a:
                bad.append(f"{when}: job {b[1]} (run_at {b[0]:.3f}) after job {a[1]} in one claim")
        claimed.update(job for _, job in batch)
        while pending and pending[0][1] in claimed:
            heapq.heappop(pending)
        if pending and pending[0] < max(batch) and pending[0][0] <= wall(r.ns) - EPS:
            skipped = pending[0]
            bad.append(
                f"{when}: claimed job {max(batch)[1]} while older due job {skipped[1]}"
                f" (run_at {skipped[0]:.3f}) stayed pending"
            )
    return Check(
        "due jobs claimed in (run_at, id) order, none skipped", not bad, "; ".join(bad[:3])
    )


def no_stale_outcome(trace: Trace) -> Check:
    """No outcome is accepted from a superseded attempt.

    Once attempt a+1 of a job is claimed, the run of attempt a may only end superseded:
    a JOB_COMPLETED, JOB_RETRY_SCHEDULED or JOB_DEAD for an attempt older than the job's
    latest claim means the store's attempt fence let a stale write through.
    """
    latest: dict[int, int] = {}
    outcomes = (
        LogEvent.JOB_COMPLETED.value,
        LogEvent.JOB_RETRY_SCHEDULED.value,
        LogEvent.JOB_DEAD.value,
    )
    bad: list[str] = []
    for r in trace.records:
        if r.event == LogEvent.JOB_CLAIMED.value:
            latest[_int(r, "job_id")] = _int(r, "attempt")
        elif r.event in outcomes:
            job, attempt = _int(r, "job_id"), _int(r, "attempt")
            if attempt < latest.get(job, attempt):
                bad.append(
                    f"{r.event} of job {job} attempt {attempt} after attempt {latest[job]}"
                    f" was claimed (t={r.ns / NS:.3f})"
                )
    return Check("no outcome accepted from a superseded attempt", not bad, "; ".join(bad[:3]))


def retry_policies(*classes: type[Job]) -> dict[str, JobOptions]:
    """The class-level retry policy of each job class, by registered name."""
    return {job_name(cls): JobOptions.parse(cls.options) for cls in classes}


def retry_window(options: JobOptions, attempt: int) -> tuple[float, float]:
    """The SPEC's bounds on the delay after failed run `attempt`, computed independently.

    fixed d, linear d * n, exponential d * 2 ** (n - 1); times [1 - jitter, 1 + jitter];
    capped at a day. Not `JobOptions.retry_delay_for`, so a mutant of it cannot move the
    window along with the delays.
    """
    base = options.retry_delay
    if options.backoff == "linear":
        base *= attempt
    elif options.backoff == "exponential":
        base *= 2.0 ** min(attempt - 1, 62)
    jitter = options.effective_jitter
    low, high = base * (1.0 - jitter), base * (1.0 + jitter)
    return min(max(low, 0.0), MAX_RETRY_DELAY), min(max(high, 0.0), MAX_RETRY_DELAY)


def retry_spacing(
    trace: Trace, wall: Callable[[int], float], policies: Mapping[str, JobOptions]
) -> Check:
    """Each retry runs at a time inside its backoff window, counted from the failed run's end.

    JOB_RETRY_SCHEDULED carries no retry time, so the retry time is read from the next
    claim of the job (attempt a+1), whose run_at is the one the failing write stored. The
    delay is measured from the wall time of the run's end (JOB_FAILED or JOB_TIMED_OUT
    of `name#id` on that host), when the runtime computes it. Jobs whose class is not in
    `policies` (per-call retry_delay, backoff or jitter) are not judged.
    """
    ended: dict[tuple[int, int], int] = {}  # (host, job) -> ns of the last run's end
    scheduled: dict[int, tuple[int, float]] = {}  # job -> (failed attempt, end wall time)
    bad: list[str] = []
    judged = 0
    for r in trace.records:
        if r.event in ENDS:
            job = _queue_job_id(str(r.get("label")))
            if job is not None:
                ended[(r.host, job)] = r.ns
        elif r.event == LogEvent.JOB_RETRY_SCHEDULED.value:
            job = _int(r, "job_id")
            end = ended.get((r.host, job))
            if end is not None:
                scheduled[job] = (_int(r, "attempt"), wall(end))
        elif r.event == LogEvent.JOB_CLAIMED.value:
            job = _int(r, "job_id")
            retry = scheduled.pop(job, None)
            options = policies.get(str(r.get("name")))
            if retry is None or options is None or _int(r, "attempt") != retry[0] + 1:
                continue
            judged += 1
            low, high = retry_window(options, retry[0])
            delay = _float(r, "run_at") - retry[1]
            if not low - EPS <= delay <= high + EPS:
                bad.append(
                    f"job {job} retry after attempt {retry[0]} due {delay:.3f} s after the"
                    f" failure, window [{low:.3f}, {high:.3f}]"
                )
    return Check(
        "each retry is due inside its backoff window", not bad, f"{judged} judged; {bad[:3]}"
    )


def queue_history(world: World, policies: Mapping[str, JobOptions] | None = None) -> list[Check]:
    """The queue-history invariants for a scenario whose hosts consume a queue."""
    wall = wall_clock(world)
    return [
        no_start_before_run_at(world.trace, wall),
        claims_in_order(world.trace, wall),
        no_stale_outcome(world.trace),
        retry_spacing(world.trace, wall, policies or {}),
    ]


# -- schedule rows (issue 13: each tick fires once across every worker) ----------------------


def fires(trace: Trace) -> dict[str, list[tuple[float, int, float]]]:
    """(virtual s, host, tick) of every fire claimed from a `schedules` row, per entry."""
    out: dict[str, list[tuple[float, int, float]]] = defaultdict(list)
    for r in trace.of(LogEvent.ENTRY_FIRED.value):
        tick = r.get("tick")
        assert isinstance(tick, float)
        out[str(r.get("entry"))].append((r.ns / NS, r.host, tick))
    return out


def each_tick_fires_once(trace: Trace) -> Check:
    """No (entry, tick) is fired twice, by one worker or by two (the CAS on next_fire)."""
    seen: dict[tuple[str, float], int] = {}
    for entry, rows in sorted(fires(trace).items()):
        for at, host, tick in rows:
            if (entry, tick) in seen:
                return Check(
                    "each tick fires at most once across the world",
                    False,
                    f"{entry} tick {tick:.3f} fired by host {seen[(entry, tick)]} and again by"
                    f" host {host} at {at:.3f}s",
                )
            seen[(entry, tick)] = host
    return Check("each tick fires at most once across the world", True, f"{len(seen)} ticks")


def fire_gaps(
    trace: Trace, entry: str, *, most: float, start: float = 0.0, end: float = math.inf
) -> Check:
    """Between `start` and `end` (virtual s), `entry` never goes more than `most` s unfired."""
    times = [start, *(at for at, _, _ in fires(trace).get(entry, []) if start <= at <= end), end]
    worst = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
    return Check(
        f"{entry} fires at least every {most:g} s",
        worst <= most + EPS,
        f"longest gap {worst:.3f} s over {len(times) - 2} fires",
    )


def no_concurrent_runs(trace: Trace) -> Check:
    """A job is claimed again only after its previous run ended or its worker crashed.

    The owner model's safety: with no stall longer than a lease in the world, a running
    job's owner is never judged dead while it lives, so no job runs twice at once. A run
    ends with its recorded outcome (done, retry, dead, superseded) or with its host's
    `host_crash`; a claim of a job whose previous run is still live is a concurrent
    duplicate (wave 1's recovery by index made them when a second supervisor started).
    """
    ended = {
        LogEvent.JOB_COMPLETED.value,
        LogEvent.JOB_RETRY_SCHEDULED.value,
        LogEvent.JOB_DEAD.value,
        LogEvent.JOB_SUPERSEDED.value,
    }
    live: dict[int, tuple[int, int]] = {}  # job id -> (trace host, attempt) of its live run
    bad: list[str] = []
    for r in trace.records:
        if r.event == LogEvent.JOB_CLAIMED.value:
            job, attempt = _int(r, "job_id"), _int(r, "attempt")
            if job in live:
                host, before = live[job]
                bad.append(
                    f"job {job} attempt {attempt} claimed by h{r.host} at {r.ns / NS:.3f} while"
                    f" attempt {before} still ran on h{host}"
                )
            live[job] = (r.host, attempt)
        elif r.event in ended:
            job = _int(r, "job_id")
            if live.get(job) == (r.host, _int(r, "attempt")):
                del live[job]
        elif r.event == "host_crash":
            crashed = _int(r, "host")
            live = {job: run for job, run in live.items() if run[0] != crashed}
    return Check(
        "no job runs twice at once (claimed again only after a crash)", not bad, "; ".join(bad[:3])
    )
