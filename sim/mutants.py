"""Mutants: realistic bugs re-introduced into the real runtime, each of which the catalog
must catch. Each names the reference function it swaps, the behaviour it restores, and the
scenario expected to catch it; `python -m sim mutants` runs them and prints the score.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reference.records import LogEvent

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from reference.scheduler import EntryState, Scheduler


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
)
