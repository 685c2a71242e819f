"""Mutants: realistic bugs re-introduced into the real runtime, each of which the catalog
must catch. Each names the reference function it swaps, the behaviour it restores, and the
scenario expected to catch it; `python -m sim mutants` runs them and prints the score.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reference.records import LogEvent
from reference.waker import WakeReport, encode_hops

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from reference.scheduler import EntryState, Scheduler
    from reference.waker import Waker


@dataclass(frozen=True, slots=True)
class Mutant:
    """One injected bug: where it goes, what it restores, who should catch it."""

    name: str
    target: str  # "module:attribute.path" of the swapped function
    restores: str
    caught_by: tuple[str, ...]  # scenario names
    replacement: Callable[..., Any]

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
)
