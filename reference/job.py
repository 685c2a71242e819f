"""The `Job` base class: what users subclass, and the producer methods on it.

`__init_subclass__` registers every subclass in `default_registry` by dotted name.
`perform_async/in/at` go through a one-slot enqueuer hook that only
`reference.queue.configure()` fills, so this module never imports the queue (imports point
downward) and enqueueing before configuration raises `NotConfiguredError`.
"""

from __future__ import annotations

import inspect
import math
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from reference.errors import NotConfiguredError
from reference.registry import default_registry

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping


def perform_arity(cls: type[Job]) -> tuple[int, float, tuple[str, ...]]:
    """(fewest, most, required names) of the positional arguments `cls().perform` takes.

    `most` is inf with `*args`. Jobs get positional arguments only (stored as a JSON
    array), so a required keyword-only parameter makes the job uncallable: (1, 0, names),
    which no count satisfies. Used by the producer (every enqueue) and the schedule.
    """
    try:
        params = list(inspect.signature(cls.perform).parameters.values())[1:]  # less self
    except (TypeError, ValueError):  # not introspectable: accept anything
        return 0, math.inf, ()
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    keyword_only = tuple(
        p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    )
    if keyword_only:
        return 1, 0, keyword_only
    required = tuple(p.name for p in params if p.kind in positional and p.default is p.empty)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return len(required), math.inf, required
    return len(required), sum(1 for p in params if p.kind in positional), required


class Enqueuer(Protocol):
    """What `reference.queue.configure()` installs: the process's producer."""

    def enqueue(
        self,
        cls: type[Job],
        args: tuple[object, ...],
        *,
        options: Mapping[str, object] | None,
        delay: float | None = None,
        run_at: float | None = None,
    ) -> int: ...


_enqueuer: list[Enqueuer] = []

# A context variable, not a process global: the simulator runs several workers in one
# process, and thread offload copies the context into the job's thread.
_worker_index: ContextVar[int | None] = ContextVar("reference_worker_index", default=None)


def current_worker() -> int | None:
    """The index of the worker running the current job; None outside a worker."""
    return _worker_index.get()


def set_current_worker(index: int | None) -> None:
    """Bind the worker index for the current context (the worker's own task)."""
    _worker_index.set(index)


def install_enqueuer(enqueuer: Enqueuer | None) -> None:
    """Install (or with None, remove) the process-default producer."""
    _enqueuer.clear()
    if enqueuer is not None:
        _enqueuer.append(enqueuer)


def current_enqueuer() -> Enqueuer:
    """The installed producer.

    Raises:
        NotConfiguredError: `reference.queue.configure()` has not run in this process.
    """
    if not _enqueuer:
        raise NotConfiguredError(
            "the job queue is not configured in this process: call "
            "reference.queue.configure(db_path, ...) before enqueueing (with no arguments it "
            "reads QUEUE_DB_PATH, QUEUE_SOCKET_DIR and BACKGROUND_FORKS)"
        )
    return _enqueuer[0]


def _finite(name: str, value: float) -> float:
    # NaN would reach SQLite as NULL (a confusing constraint error); an infinite time would
    # park the job forever (or run it at once for -inf) without anyone noticing.
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, not {value!r}")
    return value


class Job:
    """Base class of scheduled and queued jobs.

    Subclass it and define `perform`, as `async def` (runs on the worker's loop) or as a
    plain `def` (runs in a thread). Class-level `options` set the timeout and retry policy;
    `options=` at the call site overrides them, key by key.
    """

    options: ClassVar[Mapping[str, object]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        from reference.options import JobOptions  # validate class options at definition

        JobOptions.parse(cls.options)
        default_registry.register(cls)

    def perform(self, *args: Any) -> Awaitable[None] | None:
        """Do the work. Override as `async def perform(...)` or `def perform(...)`."""
        raise NotImplementedError(f"{type(self).__qualname__} does not define perform()")

    @classmethod
    def perform_async(cls, *args: object, options: Mapping[str, object] | None = None) -> int:
        """Enqueue this job to run as soon as a worker is free; return its id."""
        return current_enqueuer().enqueue(cls, args, options=options)

    @classmethod
    def perform_in(
        cls, delay: float, *args: object, options: Mapping[str, object] | None = None
    ) -> int:
        """Enqueue this job to run `delay` seconds from now; return its id."""
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise TypeError(f"delay must be a number of seconds, not {type(delay).__name__}")
        return current_enqueuer().enqueue(
            cls, args, options=options, delay=_finite("delay", float(delay))
        )

    @classmethod
    def perform_at(
        cls,
        when: datetime | float,
        *args: object,
        options: Mapping[str, object] | None = None,
    ) -> int:
        """Enqueue this job to run at `when` (a datetime, naive = local, or epoch seconds)."""
        if isinstance(when, datetime):
            run_at = when.timestamp()
        elif isinstance(when, int | float) and not isinstance(when, bool):
            run_at = _finite("when", float(when))
        else:
            raise TypeError(f"when must be a datetime or epoch seconds, not {type(when).__name__}")
        return current_enqueuer().enqueue(cls, args, options=options, run_at=run_at)

    @classmethod
    def perform_now(cls, *args: Any) -> Awaitable[None] | None:
        """Run the job inline, here and now, bypassing the queue.

        Returns what `perform` returns: await it for an `async def perform`.
        """
        return cls().perform(*args)
