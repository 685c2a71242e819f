"""The producer: validate a job's arguments and options, store it, then wake one worker.

Layer 2 (engine) over the `Store` protocol and the `Waker`. Arguments must survive a JSON
round trip unchanged (a tuple, a set, a non-string dict key, NaN or any other object raise
`PayloadError`, a `TypeError`, and nothing is stored). The wake-up comes after the row is
committed, so a woken worker always finds it; transport trouble never reaches the caller.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from reference.job import perform_arity
from reference.observe import NULL_OBSERVER
from reference.options import JobOptions
from reference.payload import arity_error, encode_args  # shared with the schedule's `args`
from reference.records import LogEvent, NewJob
from reference.registry import job_name

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from reference.clock import Clock
    from reference.job import Job
    from reference.observe import Observer
    from reference.store import Store
    from reference.waker import Waker

logger = logging.getLogger(__name__)

# One call of a bulk enqueue: (job class, positional args, call-site options or None).
Call = tuple["type[Job]", "Sequence[object]", "Mapping[str, object] | None"]


class Producer:
    """Enqueues jobs into a store and wakes a worker; what `Job.perform_*` call."""

    __slots__ = ("_clock", "_observer", "_options_cache", "_store", "_waker")

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        waker: Waker | None,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        self._store = store
        self._clock = clock
        self._waker = waker
        self._observer = observer
        # Per class: (registered name, class options, their JSON, perform's arity), built once.
        self._options_cache: dict[type[Job], tuple[str, JobOptions, str, tuple[int, float]]] = {}

    @property
    def store(self) -> Store:
        return self._store

    def _new_job(
        self,
        cls: type[Job],
        args: Sequence[object],
        options: Mapping[str, object] | None,
        now: float,
        run_at: float,
    ) -> NewJob:
        cached = self._options_cache.get(cls)
        if cached is None:
            base = JobOptions.parse(cls.options)
            least, most, _ = perform_arity(cls)
            arity = (least, most)
            cached = self._options_cache[cls] = (job_name(cls), base, base.to_json(), arity)
        name, base, base_json, (least, most) = cached
        args_json = encode_args(args)  # PayloadError first: it names the argument at fault
        if not least <= len(args) <= most:
            raise TypeError(arity_error(cls, len(args), least, most))
        if options:
            merged = base.merged(options)
            options_json = base_json if merged is base else merged.to_json()
        else:
            options_json = base_json
        return NewJob(name, args_json, options_json, run_at, now)

    def enqueue(
        self,
        cls: type[Job],
        args: tuple[object, ...],
        *,
        options: Mapping[str, object] | None,
        delay: float | None = None,
        run_at: float | None = None,
    ) -> int:
        """Store one job (due now, after `delay` s, or at epoch `run_at`); return its id.

        Raises:
            PayloadError: an argument is not JSON; nothing was stored.
            InvalidOptionError, OptionTypeError: a bad option; nothing was stored.
            StoreError: the database refused the write.
        """
        now = self._clock.realtime()
        when = now if run_at is None else run_at
        if delay is not None:
            when = now + delay
        job_id = self._store.enqueue(self._new_job(cls, args, options, now, when))
        self._observer.emit(LogEvent.JOB_ENQUEUED, job_id=job_id, run_at=when)
        # Wake even for a delayed job: an idle worker then re-reads the earliest run_at and
        # sleeps until it, instead of finding the job at its next poll.
        self.wake()
        return job_id

    def enqueue_many(self, calls: Sequence[Call], *, run_at: float | None = None) -> list[int]:
        """Store many jobs in one transaction and send one wake-up; return their ids."""
        now = self._clock.realtime()
        when = now if run_at is None else run_at
        jobs = [self._new_job(cls, args, options, now, when) for cls, args, options in calls]
        ids = self._store.enqueue_many(jobs)
        for job_id in ids:
            self._observer.emit(LogEvent.JOB_ENQUEUED, job_id=job_id, run_at=when)
        if ids:
            self.wake()
        return ids

    def wake(self) -> None:
        """Wake one worker; never raises (a wake-up is a hint, the store is the truth)."""
        if self._waker is None:
            return
        try:
            report = self._waker.wake_one()
        except Exception:  # a bug in a transport must not fail an enqueue that committed
            logger.exception("wake-up failed", extra={"event": LogEvent.WAKE_ERROR})
            return
        if self._observer is not NULL_OBSERVER:
            self._observer.emit(
                LogEvent.WAKE_SENT,
                woken=report.woken,
                attempts=len(report.attempts),
                path=" ".join(f"{index}:{result.value}" for index, result in report.attempts),
            )

    def __repr__(self) -> str:
        return f"Producer(store={self._store!r}, waker={self._waker!r})"
