"""Checkers over the trace: reusable invariants that scenarios compose.

Each returns a `Check`. They read only the trace (and counters the scenario passes in),
never runtime internals, so a mutant cannot hide from them by changing an attribute.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from typing import TYPE_CHECKING

from reference.records import LogEvent
from sim.scenario import Check

if TYPE_CHECKING:
    from sim.trace import Trace
    from sim.world import World

NS = 1_000_000_000
ENDS = (LogEvent.JOB_SUCCEEDED.value, LogEvent.JOB_FAILED.value, LogEvent.JOB_TIMED_OUT.value)


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
