"""Run one job under the worker's shared slots and its timeout, and record the outcome.

Layer 2 (engine): asyncio over layers 0-1. Owns `Slots` (the concurrency semaphore shared
by scheduled and queue jobs) and the `Offload` protocol for sync `perform`. Must not import
adapters (`sqlite3`, `socket`, `threading`, `mmap`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from reference.counters import Counters, Outcome
from reference.job import set_current_worker
from reference.records import LogEvent

if TYPE_CHECKING:
    from collections.abc import Callable

    from reference.clock import Clock
    from reference.job import Job
    from reference.observe import Observer

logger = logging.getLogger(__name__)


class Offload(Protocol):
    """Runs a blocking callable away from the event loop (a thread in production)."""

    async def run(self, fn: Callable[[], object]) -> object:
        """Run `fn` and return its result; cancelling the await abandons `fn`."""
        ...


class Slots:
    """The worker's concurrency limit: FIFO waiters, plus a non-blocking claim for the queue.

    `asyncio.Semaphore` cannot tell the queue consumer how many slots are free without
    private attributes, and the consumer must claim jobs only for free slots (so a busy
    worker never sits on a job an idle peer could run). Waiting scheduled runs go first:
    `try_acquire` fails while anyone is queued.
    """

    __slots__ = ("_free", "_freed", "_on_change", "_waiters", "size")

    def __init__(self, size: int, on_change: Callable[[int], None] | None = None) -> None:
        if size < 1:
            raise ValueError("concurrency must be at least 1")
        self.size = size
        self._free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._freed = asyncio.Event()
        self._freed.set()
        self._on_change = on_change
        if on_change is not None:
            on_change(size)

    @property
    def free(self) -> int:
        """Slots that `try_acquire` could take right now."""
        return 0 if self._waiters else self._free

    def _changed(self) -> None:
        if self.free:
            self._freed.set()
        else:
            self._freed.clear()
        if self._on_change is not None:
            self._on_change(self.free)

    def try_acquire(self, n: int = 1) -> bool:
        """Take `n` slots now if they are free; never waits."""
        if self.free < n:
            return False
        self._free -= n
        self._changed()
        return True

    async def acquire(self) -> None:
        """Take one slot, waiting in FIFO order behind earlier waiters."""
        if not self._waiters and self._free > 0:
            self._free -= 1
            self._changed()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._changed()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot just as we were cancelled: give it back
            else:
                # A release() in the same loop step may already have popped (and skipped)
                # our cancelled future, so it is not necessarily still queued.
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
                self._changed()
            raise

    def release(self, n: int = 1) -> None:
        """Return `n` slots, handing each to the oldest waiter first.

        Raises:
            RuntimeError: more slots would be free than exist; nothing changes.
        """
        # Checked before anything moves, so a bad release cannot leave free > size behind.
        waiting = sum(1 for fut in self._waiters if not fut.done())
        if self._free + max(0, n - waiting) > self.size:
            raise RuntimeError("released more slots than were taken")
        for _ in range(n):
            while self._waiters:
                fut = self._waiters.popleft()
                if not fut.done():
                    fut.set_result(None)
                    break
            else:
                self._free += 1
        self._changed()

    async def wait_free(self) -> None:
        """Wait until at least one slot is free for `try_acquire`."""
        while not self.free:
            await self._freed.wait()

    def __repr__(self) -> str:
        return f"Slots(free={self._free}/{self.size}, waiting={len(self._waiters)})"


@dataclass(frozen=True, slots=True)
class RunResult:
    """How one run ended; `error` is `"Type: message"` for failures and timeouts."""

    outcome: Outcome
    error: str | None
    duration: float


def describe_error(exc: BaseException) -> str:
    """`ExceptionType: message`, the form stored in `last_error`."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Runner:
    """Executes jobs for one worker: timeout, sync offload, counters, events."""

    __slots__ = ("_clock", "_counters", "_observer", "_offload", "worker")

    def __init__(
        self,
        *,
        clock: Clock,
        offload: Offload,
        counters: Counters,
        observer: Observer,
        worker: int,
    ) -> None:
        self._clock = clock
        self._offload = offload
        self._counters = counters
        self._observer = observer
        self.worker = worker

    async def run(
        self, job_cls: type[Job], args: list[object], *, time_limit: float, label: str
    ) -> RunResult:
        """Run one job to completion or timeout; the caller holds a slot.

        Never raises for the job's own errors (they become the result); never swallows
        cancellation.
        """
        set_current_worker(self.worker)
        started = self._clock.monotonic()
        self._counters.started(self._clock.realtime())
        self._observer.emit(LogEvent.JOB_STARTED, worker=self.worker, label=label)
        # Until perform returns, the run counts as interrupted: a cancellation that
        # propagates (a hard stop) still closes the run in the counters.
        outcome = Outcome.FAILURE
        error: str | None = "CancelledError: the worker stopped mid-run"
        try:
            async with asyncio.timeout(time_limit) as deadline:
                await self._perform(job_cls, args)
            outcome, error = Outcome.SUCCESS, None
        except TimeoutError as exc:
            if deadline.expired():
                outcome = Outcome.TIMEOUT
                error = f"TimeoutError: {label} exceeded its {time_limit:g} s timeout"
            else:
                outcome, error = Outcome.FAILURE, describe_error(exc)
        except Exception as exc:  # the job boundary: any job error becomes the result
            outcome, error = Outcome.FAILURE, describe_error(exc)
        finally:
            duration = self._clock.monotonic() - started
            self._counters.finished(outcome, duration * 1000.0)
        self._report(label, outcome, error, duration)
        return RunResult(outcome, error, duration)

    async def _perform(self, job_cls: type[Job], args: list[object]) -> None:
        job = job_cls()
        if inspect.iscoroutinefunction(job.perform):
            await job.perform(*args)
            return
        result = await self._offload.run(lambda: job.perform(*args))
        if inspect.isawaitable(result):  # a plain def that returned a coroutine
            await result

    def _report(self, label: str, outcome: Outcome, error: str | None, duration: float) -> None:
        if outcome is Outcome.SUCCESS:
            self._observer.emit(LogEvent.JOB_SUCCEEDED, worker=self.worker, label=label)
            logger.debug(
                "%s succeeded in %.3f s",
                label,
                duration,
                extra={"event": LogEvent.JOB_SUCCEEDED, "worker": self.worker},
            )
        elif outcome is Outcome.TIMEOUT:
            self._observer.emit(LogEvent.JOB_TIMED_OUT, worker=self.worker, label=label)
            logger.error(
                "%s timed out after %.3f s",
                label,
                duration,
                extra={"event": LogEvent.JOB_TIMED_OUT, "worker": self.worker},
            )
        else:
            self._observer.emit(LogEvent.JOB_FAILED, worker=self.worker, label=label, error=error)
            logger.error(
                "%s failed: %s",
                label,
                error,
                extra={"event": LogEvent.JOB_FAILED, "worker": self.worker},
            )

    def __repr__(self) -> str:
        return f"Runner(worker={self.worker}, offload={self._offload!r})"
