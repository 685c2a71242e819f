"""Whether a host's workers are alive, judged from their rows in the `workers` table.

Layer 1: pure; times and rows are passed in. `python -m reference.queue health` (a probe for
containers and service managers) and `python -m reference.queue workers` read it; so will
the dashboard's `/healthz`. A worker heartbeats every lease/3, so one silent for a whole
lease has missed two beats: it is gone (killed, frozen or cut off), not merely slow.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from reference.records import WorkerRow


class WorkerState(StrEnum):
    """What a worker row says about its process."""

    LIVE = "live"  # not stopped, and beat within the lease
    STOPPED = "stopped"  # marked itself stopped (a graceful stop)
    GONE = "gone"  # neither: silent for longer than a lease


def _seconds(value: object) -> float | None:
    """`value` as a time, or None if another program stored something else there."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


def worker_state(row: WorkerRow, *, now: float, lease: float) -> WorkerState:
    """The state of the worker behind `row` at `now` (POSIX seconds)."""
    if row.stopped_at is not None:
        return WorkerState.STOPPED
    beat = _seconds(row.heartbeat_at)
    if beat is None or now - beat > lease:
        return WorkerState.GONE
    return WorkerState.LIVE


def _age(row: WorkerRow, now: float) -> str:
    beat = _seconds(row.heartbeat_at)
    return "?" if beat is None else f"{max(now - beat, 0.0):.0f} s"


@dataclass(frozen=True, slots=True)
class Health:
    """A probe's verdict and the one line that says why."""

    ok: bool
    reason: str


def newest_by_index(rows: Iterable[WorkerRow], host: str) -> dict[int, WorkerRow]:
    """Each worker index of `host` with its newest row: a restarted worker's, not its dead one's."""
    newest: dict[int, WorkerRow] = {}
    for row in rows:
        if row.host != host:
            continue
        seen = newest.get(row.index)
        if seen is None or (_seconds(row.started_at) or 0.0) > (_seconds(seen.started_at) or 0.0):
            newest[row.index] = row
    return newest


def check_host(rows: Iterable[WorkerRow], host: str, *, now: float, lease: float) -> Health:
    """Healthy when `host` has a live worker and none of its worker slots has gone silent.

    Each index counts by its newest row: a worker the supervisor restarted has a fresh row
    beside the dead one's, and the restart is what matters. Slots whose newest row stopped
    gracefully are ignored (a smaller `--workers` after a restart) unless all stopped.
    """
    newest = newest_by_index(rows, host)
    if not newest:
        return Health(False, f"no worker of host {host!r} has registered in this database")
    states = {i: worker_state(r, now=now, lease=lease) for i, r in sorted(newest.items())}
    gone = [i for i, s in states.items() if s is WorkerState.GONE]
    if gone:
        silent = ", ".join(f"{i} ({_age(newest[i], now)})" for i in gone)
        return Health(
            False,
            f"worker(s) of host {host!r} silent for longer than the {lease:g} s lease: {silent}",
        )
    live = [i for i, s in states.items() if s is WorkerState.LIVE]
    if not live:
        return Health(False, f"every worker of host {host!r} has stopped")
    oldest = min((newest[i] for i in live), key=lambda r: r.heartbeat_at)
    return Health(
        True,
        f"{len(live)} worker(s) of host {host!r} live (index "
        f"{', '.join(map(str, live))}); oldest heartbeat {_age(oldest, now)} ago",
    )
