"""The producer: validate a job's arguments and options, store it, then wake one worker.

Layer 2 (engine) over the `Store` protocol and the `Waker`. Arguments must survive a JSON
round trip unchanged (a tuple, a set, a non-string dict key, NaN or any other object raise
`PayloadError`, a `TypeError`, and nothing is stored). The wake-up comes after the row is
committed, so a woken worker always finds it; transport trouble never reaches the caller.
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING

from reference.errors import PayloadError
from reference.job import perform_arity
from reference.observe import NULL_OBSERVER
from reference.options import JobOptions
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


# json.dumps with any non-default argument builds a new encoder on every call; this one
# is built once (the same output: compact separators, every other setting the default).
_COMPACT = json.JSONEncoder(separators=(",", ":"))

# Payload limits, checked at enqueue so that whatever is stored, a worker can decode: json's
# C decoder recurses once per nesting level (about 1,000 deep exhausts the interpreter's
# stack guard), and int <-> str conversion refuses more than 4,300 digits.
MAX_ARGS_DEPTH = 100  # nesting of lists and dicts, the argument list itself included
MAX_ARGS_BYTES = 1024 * 1024  # the encoded JSON (ASCII: non-ASCII text is \u-escaped)
MAX_INT_BITS = 14_000  # about 4,200 decimal digits


def encode_args(args: Sequence[object]) -> str:
    """JSON text of `args`, refusing anything that would not come back the same.

    Raises:
        PayloadError: an argument is not plain JSON (names its position).
    """
    if not args:
        return "[]"
    for i, value in enumerate(args):
        problem = _not_json(value, 2)
        if problem is not None:
            raise PayloadError(
                f"argument {i} ({type(value).__name__}) is not JSON: {problem}; job arguments "
                "must be JSON values (str, int, float, bool, None, list, dict with str keys)"
            )
    text = _COMPACT.encode(list(args))
    if len(text) > MAX_ARGS_BYTES:
        raise PayloadError(
            f"job arguments are {len(text):,} bytes as JSON; the limit is {MAX_ARGS_BYTES:,}"
            " (store large data elsewhere and pass a reference)"
        )
    return text


def _not_json(value: object, depth: int) -> str | None:
    """Why `value` would not survive a JSON round trip unchanged, or None if it would.

    A type walk rather than dumps-then-loads: it is the hot path of every enqueue, and it
    names the offending part (a tuple comes back a list, an int key comes back a str).
    `depth` is the nesting level of `value`; the walk stops at MAX_ARGS_DEPTH, so it never
    recurses deeper than a worker's decoder would have to.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return None
    if kind is int:
        if value.bit_length() > MAX_INT_BITS:  # type: ignore[attr-defined]
            return f"an int of more than {MAX_INT_BITS:,} bits"
        return None
    if kind is float:
        return None if math.isfinite(value) else f"{value!r} has no JSON form"  # type: ignore[arg-type]
    if kind is list or kind is dict:
        if depth > MAX_ARGS_DEPTH:
            return f"nested more than {MAX_ARGS_DEPTH} levels deep"
        if kind is list:
            for item in value:  # type: ignore[attr-defined]
                problem = _not_json(item, depth + 1)
                if problem is not None:
                    return problem
            return None
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                return f"dict key {_short(key)} is not a str"
            problem = _not_json(item, depth + 1)
            if problem is not None:
                return problem
        return None
    return f"a {kind.__name__} value"


def _short(value: object) -> str:
    """`repr(value)`, cut to a length an error line can carry."""
    if isinstance(value, int) and value.bit_length() > 200:
        return "<huge int>"  # repr() of it may take seconds, or refuse (4,300 digits)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def arity_error(cls: type[Job], given: int, least: int, most: float) -> str:
    """The TypeError text for `given` arguments to a perform taking `least`..`most`."""
    where = f"{cls.__qualname__}.perform()"
    if most < least:
        return f"{where} has a required keyword-only argument; jobs take positional ones only"
    if least == most:
        want = f"{least}"
    elif most == math.inf:
        want = f"at least {least}"
    else:
        want = f"{least} to {most:g}"
    return f"{where} takes {want} argument(s), {given} given; nothing was stored"


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
