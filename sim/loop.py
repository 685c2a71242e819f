"""`SimEventLoop`: an asyncio event loop whose clock is virtual and jumps to the next timer.

Owns virtual time for the simulator and the loop-level livelock and stall detectors. This is
the only module coupled to asyncio internals. It imports nothing from `reference/` or
from the rest of `sim/`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import selectors
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from _typeshed import FileDescriptorLike

# How this works, and what it leans on
# ====================================
#
# An asyncio loop spends its life in `BaseEventLoop._run_once()`. Every iteration does the
# same three things: it works out how long it may sleep (0 when callbacks are ready, the
# distance to the earliest timer when only timers are pending, None when there is nothing
# at all), it calls `self._selector.select(timeout)` exactly once, and it then moves every
# timer whose deadline is before `self.time() + self._clock_resolution` onto the ready
# queue and runs the ready queue.
#
# That gives two seams, both used by CPython's own `test_asyncio.utils.TestLoop` and by
# trio's `MockClock(autojump_threshold=0)`:
#
#   * `time()` is a public method that the loop itself calls for every deadline
#     computation (`call_later`, `asyncio.timeout`, the timer sweep above). We return a
#     virtual clock instead of `time.monotonic()`.
#   * The selector is a constructor argument. We hand the loop a wrapper around a real
#     selector. When asyncio asks it to sleep for a positive `timeout`, the wrapper first
#     polls the real selector with timeout 0 (the loop's self-pipe and any real sockets
#     must keep working); if nothing is ready it *adds `timeout` to the virtual clock*
#     and returns at once. The timer sweep that follows then finds the earliest timer due.
#     So time only moves when every task is blocked, and it moves straight to the next
#     thing that can happen: trio's "autojump".
#
# When asyncio asks for `select(None)` nothing is ready and no timer exists. Unless real
# work is in flight (a thread from the optional threaded executor), nothing can ever
# happen again, so we raise `SimulationStalled` instead of blocking forever: in a
# simulation that is always a bug (a lost wake-up, an Event nobody sets).
#
# The converse bug, a livelock that keeps the loop busy without letting time advance
# (`while True: await asyncio.sleep(0)`), is caught by counting loop iterations at one
# virtual instant: past `max_steps_per_instant` we raise `BusyLoopDetected`.
#
# Virtual time is kept as integer nanoseconds, and `time()` returns `ns / 10**9`. Adding
# float timeouts to a float clock accumulates rounding error; with large (epoch-sized)
# clock values the timer sweep can then find the head timer "not yet due" while the next
# computed timeout rounds to nothing, and the loop spins forever (CPython issue 116342).
# Rounding each jump to a whole nanosecond keeps every instant exact and reproducible,
# and the clock starts at 0.0 so floats stay precise; wall-clock values (epochs) are
# computed on top by `sim.clock.SimClock`, never fed to the loop.
#
# Private coupling, kept to the minimum:
#
#   * `_clock_resolution` is assigned 1e-9 after `__init__`. asyncio sets it from
#     `time.get_clock_info("monotonic")`; on a platform with a coarse monotonic clock it
#     would make virtual timers fire early by that much. Rounding a jump to the nearest
#     nanosecond can leave the clock up to half a nanosecond short of the deadline, and
#     this tolerance is what makes the timer due anyway.
#   * The contract of `_run_once()` described above (one `select()` per iteration; 0,
#     positive or None timeouts; `MAXIMUM_SELECT_TIMEOUT` capping long sleeps, which just
#     means a 48 h sleep is two jumps). It has been stable since Python 3.4, and
#     tests/sim/test_loop.py pins it on every supported Python.
#
# Everything else uses public API: `time()`, the `selector=` argument, `run_in_executor`,
# `set_default_executor` and `shutdown_default_executor`.
#
# Executors: real threads finish at real, unrepeatable moments, which makes traces
# nondeterministic. By default `run_in_executor` (hence `asyncio.to_thread`) runs the
# callable inline on the loop thread and returns an already-completed future: zero
# virtual latency, one trace per seed. `inline_executor=False` restores real threads;
# virtual time is then frozen while any such thread is running, so the simulation waits
# for it in real time instead of racing past it.

__all__ = ["BusyLoopDetected", "LoopStats", "SimEventLoop", "SimulationStalled"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

_NS_PER_S = 1_000_000_000
DEFAULT_MAX_STEPS_PER_INSTANT = 100_000
# How many pending tasks a SimulationStalled / BusyLoopDetected message names.
_TASKS_IN_MESSAGE = 5


class SimulationStalled(RuntimeError):
    """Nothing is runnable, no timer is scheduled and no real work is pending: a deadlock."""


class BusyLoopDetected(RuntimeError):
    """The loop iterated too often at one virtual instant: a livelock that never lets time pass."""


@dataclass(frozen=True, slots=True)
class LoopStats:
    """A snapshot of how the virtual loop has run so far."""

    advances: int
    iterations: int
    max_steps_at_one_instant: int


class _VirtualSelector(selectors.BaseSelector):
    """Delegate I/O registration to a real selector; turn idle waits into clock jumps."""

    def __init__(self, real: selectors.BaseSelector, loop: SimEventLoop) -> None:
        self._real = real
        self._loop = loop
        self.advances = 0
        self.iterations = 0
        self.steps_here = 0
        self.max_steps = 0

    # The hot path: called once per loop iteration, so it is kept flat.
    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = self._real.select(0)
        self.iterations += 1
        if not events and timeout != 0:
            loop = self._loop
            if loop._external_pending:
                # A real thread is running: freeze virtual time and wait for it in real
                # time; it wakes us through the loop's self-pipe when it finishes.
                events = self._real.select(None)
            elif timeout is None:
                raise SimulationStalled(loop._describe_stall())
            else:
                # A sub-nanosecond timeout still moves time by one nanosecond, as a real
                # clock would have moved by the next read. Without that, a caller woken a
                # hair before its deadline (asyncio fires timers up to the clock resolution
                # early) reads the same time again, sleeps the same tiny remainder, and
                # spins at one instant forever; a real loop would only waste one iteration.
                jump = round(timeout * _NS_PER_S) or 1
                now_ns = loop._now_ns + jump
                loop._now_ns = now_ns
                loop._now = now_ns / _NS_PER_S
                self.advances += 1
                self.steps_here = 1
                return events
        steps = self.steps_here + 1
        self.steps_here = steps
        if steps > self.max_steps:
            self.max_steps = steps
            if steps > self._loop._step_limit:
                # Reset so the caller can still cancel and clean up at this instant.
                self.steps_here = 0
                raise BusyLoopDetected(self._loop._describe_busy(steps))
        return events

    def register(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_key(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def __repr__(self) -> str:
        return f"<_VirtualSelector real={type(self._real).__name__} iterations={self.iterations}>"


class SimEventLoop(asyncio.SelectorEventLoop):
    """Run asyncio on virtual time that starts at 0.0 and jumps to the next timer when idle.

    Use it as `asyncio.Runner(loop_factory=SimEventLoop)` (wrap it in `functools.partial`
    to pass options) or call `run_until_complete` on an instance.

    Args:
        selector: the real selector to poll for I/O; a new `DefaultSelector` by default.
        max_steps_per_instant: loop iterations allowed at one virtual instant before
            `BusyLoopDetected` is raised; None disables the check.
        inline_executor: when True (the default) `run_in_executor` and
            `asyncio.to_thread` run the callable at once on the loop thread, ignoring the
            executor argument, and return a completed future. When False they use real
            threads, and virtual time is frozen while any of them is running.

    Raises (out of `run_until_complete` / `Runner.run`):
        SimulationStalled: every task waits on something no timer or I/O can trigger.
        BusyLoopDetected: the step budget at one virtual instant ran out.
    """

    def __init__(
        self,
        selector: selectors.BaseSelector | None = None,
        *,
        max_steps_per_instant: int | None = DEFAULT_MAX_STEPS_PER_INSTANT,
        inline_executor: bool = True,
    ) -> None:
        self._now_ns = 0
        self._now = 0.0
        self._max_steps_per_instant = max_steps_per_instant
        self._step_limit = sys.maxsize if max_steps_per_instant is None else max_steps_per_instant
        self._inline_executor = inline_executor
        self._thread_pool: concurrent.futures.ThreadPoolExecutor | None = None
        # Real work whose completion arrives through the self-pipe: executor threads and
        # the default-executor shutdown thread. While > 0, virtual time does not move.
        self._external_pending = 0
        self._vselector = _VirtualSelector(
            selector if selector is not None else selectors.DefaultSelector(), self
        )
        super().__init__(self._vselector)
        # Private attribute, see the essay above: "due" means within one nanosecond.
        self._clock_resolution = 1e-9
        if max_steps_per_instant is not None and max_steps_per_instant < 1:
            # Validated after __init__ so that BaseEventLoop.__del__ finds a closable loop.
            self.close()
            raise ValueError(f"max_steps_per_instant must be >= 1, got {max_steps_per_instant}")

    def time(self) -> float:
        """Return the virtual time in seconds (0.0 at construction)."""
        return self._now

    @property
    def now_ns(self) -> int:
        """Return the virtual time in integer nanoseconds (exact; for traces)."""
        return self._now_ns

    @property
    def stats(self) -> LoopStats:
        """Return how many jumps and iterations ran, and the most iterations at one instant."""
        sel = self._vselector
        return LoopStats(
            advances=sel.advances,
            iterations=sel.iterations,
            max_steps_at_one_instant=sel.max_steps,
        )

    def run_in_executor(
        self,
        executor: concurrent.futures.Executor | None,
        func: Callable[[*_Ts], _T],
        *args: *_Ts,
    ) -> asyncio.Future[_T]:
        """Run `func(*args)` inline (default) or on a real thread; see the class docstring.

        Inline mode lets `BaseException`s that are not `Exception`s (KeyboardInterrupt,
        SystemExit, CancelledError) propagate to the caller, as a direct call would.
        """
        if self.is_closed():
            raise RuntimeError("Event loop is closed")
        if not self._inline_executor:
            return self._run_in_thread(executor, func, *args)
        future: asyncio.Future[_T] = self.create_future()
        try:
            result = func(*args)
        except StopIteration as exc:
            # A future cannot hold StopIteration (it would end a generator early).
            future.set_exception(RuntimeError(f"executor callable raised {exc!r}"))
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future

    def _run_in_thread(
        self,
        executor: concurrent.futures.Executor | None,
        func: Callable[[*_Ts], _T],
        *args: *_Ts,
    ) -> asyncio.Future[_T]:
        if executor is None:
            if self._thread_pool is None:
                self._thread_pool = concurrent.futures.ThreadPoolExecutor(
                    thread_name_prefix="sim-loop"
                )
                # Public API: makes Runner.close()/shutdown_default_executor() join it.
                self.set_default_executor(self._thread_pool)
            executor = self._thread_pool
        inner = executor.submit(func, *args)
        # wrap_future registers its state-copying callback first, so its
        # call_soon_threadsafe lands in the ready queue before our decrement: virtual
        # time cannot move between the thread finishing and its result arriving.
        outer = asyncio.wrap_future(inner, loop=self)
        self._external_pending += 1
        inner.add_done_callback(self._on_thread_done)
        return outer

    def _on_thread_done(self, _inner: concurrent.futures.Future[Any]) -> None:
        # RuntimeError: the loop closed first, and nobody is waiting on the count any more.
        with contextlib.suppress(RuntimeError):
            self.call_soon_threadsafe(self._release_external)

    def _release_external(self) -> None:
        self._external_pending -= 1

    async def shutdown_default_executor(self) -> None:
        """Join the default executor's threads, freezing virtual time while they finish."""
        self._external_pending += 1
        try:
            await super().shutdown_default_executor()
        finally:
            self._external_pending -= 1

    def _pending_tasks(self) -> str:
        # Sorted so the message is the same on every run (set order is not).
        tasks = sorted(repr(t) for t in asyncio.all_tasks(self) if not t.done())
        shown = "; ".join(tasks[:_TASKS_IN_MESSAGE])
        more = (
            f" (+{len(tasks) - _TASKS_IN_MESSAGE} more)" if len(tasks) > _TASKS_IN_MESSAGE else ""
        )
        return f"{len(tasks)} pending task(s): {shown}{more}" if tasks else "no pending tasks"

    def _describe_stall(self) -> str:
        return (
            f"simulation stalled at virtual t={self._now:.9f}s: no callback is ready, no "
            f"timer is scheduled and no executor work is pending, so nothing can happen "
            f"again (an Event or Future nobody completes?); {self._pending_tasks()}"
        )

    def _describe_busy(self, steps: int) -> str:
        return (
            f"busy loop: {steps} loop iterations at virtual t={self._now:.9f}s without "
            f"time advancing (max_steps_per_instant={self._max_steps_per_instant}); some "
            f"task keeps the loop ready without waiting; {self._pending_tasks()}"
        )

    def __repr__(self) -> str:
        sel = self._vselector
        return (
            f"<SimEventLoop t={self._now:.9f}s running={self.is_running()} "
            f"closed={self.is_closed()} advances={sel.advances} iterations={sel.iterations} "
            f"max_steps_per_instant={self._max_steps_per_instant} "
            f"inline_executor={self._inline_executor}>"
        )
