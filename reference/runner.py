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


# A job that swallows the cancellation of its timeout is given this long to end, then
# abandoned: its slot is freed and the run recorded as timed out, so a stop always finishes.
CANCEL_GRACE = 5.0
# Error text stored in `last_error` and logged: bounded, and always valid UTF-8.
MAX_ERROR_CHARS = 8 * 1024


@dataclass(frozen=True, slots=True)
class RunResult:
    """How one run ended; `error` is `"Type: message"` for failures and timeouts."""

    outcome: Outcome
    error: str | None
    duration: float


def clean_text(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text` made storable: lone surrogates escaped (`\\udcxx`), cut to `limit` characters.

    Job code produces arbitrary strings (a file name from `os.listdir` carries surrogates
    that no UTF-8 database column accepts); nothing a job produced may fail its own record.
    """
    if len(text) > limit:
        text = f"{text[:limit]}... [{len(text) - limit:,} more characters cut]"
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def describe_error(exc: BaseException) -> str:
    """`ExceptionType: message`, the form stored in `last_error`; never raises."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception as str_exc:  # a hostile __str__ is still that job's outcome
        text = f"<str() of the exception raised {type(str_exc).__name__}>"
    return clean_text(f"{name}: {text}" if text else name)


class Runner:
    """Executes jobs for one worker: timeout, sync offload, counters, events.

    The job boundary: a job's code runs in a task of its own, and *anything* it raises
    (`SystemExit` from `sys.exit()` or argparse, `KeyboardInterrupt`, a `CancelledError`
    it raised itself) becomes that run's outcome; only the worker's own stop (cancelling
    `run`) propagates. A job that ignores its timeout's cancellation for `cancel_grace`
    seconds is abandoned: the run is recorded as timed out and the task left to end
    whenever it does (`abandoned` counts them; `close` cancels what is left).
    """

    __slots__ = (
        "_abandoned",
        "_cancel_grace",
        "_clock",
        "_counters",
        "_observer",
        "_offload",
        "worker",
    )

    def __init__(
        self,
        *,
        clock: Clock,
        offload: Offload,
        counters: Counters,
        observer: Observer,
        worker: int,
        cancel_grace: float = CANCEL_GRACE,
    ) -> None:
        self._clock = clock
        self._offload = offload
        self._counters = counters
        self._observer = observer
        self.worker = worker
        self._cancel_grace = cancel_grace
        self._abandoned: set[asyncio.Task[BaseException | None]] = set()

    @property
    def abandoned(self) -> int:
        """Runs abandoned for ignoring cancellation that have not ended yet."""
        return len(self._abandoned)

    async def run(
        self, job_cls: type[Job], args: list[object], *, time_limit: float, label: str
    ) -> RunResult:
        """Run one job to completion or timeout; the caller holds a slot.

        Never raises for the job's own errors (they become the result); never swallows
        the cancellation of `run` itself (the worker's hard stop).
        """
        set_current_worker(self.worker)
        started = self._clock.monotonic()
        self._counters.started(self._clock.realtime())
        self._observer.emit(LogEvent.JOB_STARTED, worker=self.worker, label=label)
        # Until the run ends, it counts as interrupted: a cancellation that propagates (a
        # hard stop) still closes the run in the counters.
        outcome = Outcome.FAILURE
        error: str | None = "CancelledError: the worker stopped mid-run"
        try:
            outcome, error = await self._supervise(job_cls, args, time_limit, label)
        finally:
            duration = self._clock.monotonic() - started
            self._counters.finished(outcome, duration * 1000.0)
        self._report(label, outcome, error, duration)
        return RunResult(outcome, error, duration)

    async def _supervise(
        self, job_cls: type[Job], args: list[object], time_limit: float, label: str
    ) -> tuple[Outcome, str | None]:
        task = asyncio.get_running_loop().create_task(self._guarded(job_cls, args), name=label)
        try:
            await asyncio.wait((task,), timeout=time_limit)
            if task.done():
                return self._ended(task, label)
            task.cancel()
            await asyncio.wait((task,), timeout=self._cancel_grace)
        except asyncio.CancelledError:  # the worker's own stop: take the job down with it
            task.cancel()
            raise
        timed_out = f"TimeoutError: {label} exceeded its {time_limit:g} s timeout"
        if task.done():
            if not task.cancelled():
                task.result()  # retrieved, so asyncio does not log it as never retrieved
            return Outcome.TIMEOUT, timed_out
        self._abandon(task, label)
        return Outcome.TIMEOUT, f"{timed_out} and ignored cancellation; abandoned"

    def _ended(
        self, task: asyncio.Task[BaseException | None], label: str
    ) -> tuple[Outcome, str | None]:
        if task.cancelled():  # not by us: the job's own code cancelled itself
            return Outcome.FAILURE, f"CancelledError: {label} cancelled itself"
        exc = task.result()
        if exc is None:
            return Outcome.SUCCESS, None
        return Outcome.FAILURE, describe_error(exc)

    def _abandon(self, task: asyncio.Task[BaseException | None], label: str) -> None:
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)
        self._observer.emit(LogEvent.JOB_ABANDONED, worker=self.worker, label=label)

    def close(self) -> None:
        """Cancel the abandoned runs still going (the worker is exiting)."""
        for task in list(self._abandoned):
            task.cancel()

    async def _guarded(self, job_cls: type[Job], args: list[object]) -> BaseException | None:
        """The job boundary: whatever the job raises is returned as its outcome.

        `BaseException` on purpose (STYLE 4.5's one exception): inside a task,
        `SystemExit` and `KeyboardInterrupt` would otherwise escape the event loop and take
        the worker down. Only the cancellation of this task (the timeout, the stop) passes.
        """
        try:
            await self._perform(job_cls, args)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            return exc
        return None

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
                "%s timed out after %.3f s%s",
                label,
                duration,
                "; it ignored cancellation and was abandoned (untracked from now on)"
                if error is not None and error.endswith("abandoned")
                else "",
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
