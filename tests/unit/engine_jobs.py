"""Job subclasses and small virtual-time helpers shared by the engine tests.

Jobs write what they did into `JOURNAL` (a module global, because the runner builds each job
with no arguments); tests reset it through the `journal` fixture in each test module.
Times are the running loop's time, which on `SimEventLoop` is virtual.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from reference.job import Job, current_worker
from sim.loop import SimEventLoop

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Note:
    """One thing a job did: `kind` is start/end/fail, `at` the loop time (None off-loop)."""

    kind: str
    tag: str
    at: float | None
    worker: int | None


@dataclass(slots=True)
class Journal:
    """What the test jobs did, in order."""

    notes: list[Note] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def note(self, kind: str, tag: str) -> None:
        try:
            at: float | None = asyncio.get_running_loop().time()
        except RuntimeError:  # a sync job in a real thread has no loop
            at = None
        self.notes.append(Note(kind, tag, at, current_worker()))

    def times(self, kind: str, tag: str | None = None) -> list[float | None]:
        return [n.at for n in self.notes if n.kind == kind and (tag is None or n.tag == tag)]

    def of(self, kind: str) -> list[Note]:
        return [n for n in self.notes if n.kind == kind]

    def reset(self) -> None:
        self.notes.clear()
        self.counts.clear()

    def max_concurrent(self) -> int:
        """The most runs between a start and its end at once (ends sort before starts)."""
        live = peak = 0
        ordered = sorted(
            (n for n in self.notes if n.kind in ("start", "end")),
            key=lambda n: (n.at or 0.0, n.kind != "end"),
        )
        for n in ordered:
            live += 1 if n.kind == "start" else -1
            peak = max(peak, live)
        return peak


JOURNAL = Journal()


class Noop(Job):
    """Async; notes that it ran."""

    async def perform(self, tag: str = "noop") -> None:
        JOURNAL.note("start", tag)
        JOURNAL.note("end", tag)


class SyncNoop(Job):
    """Plain def; notes that it ran (and under which worker)."""

    def perform(self, tag: str = "sync") -> None:
        JOURNAL.note("start", tag)
        JOURNAL.note("end", tag)


class Sleepy(Job):
    """Async; sleeps `seconds` of loop time between its start and end notes."""

    async def perform(self, tag: str, seconds: float) -> None:
        JOURNAL.note("start", tag)
        await asyncio.sleep(seconds)
        JOURNAL.note("end", tag)


class Flaky(Job):
    """Fails with RuntimeError the first `fails` times it runs for `tag`, then succeeds."""

    async def perform(self, tag: str, fails: int) -> None:
        n = JOURNAL.counts.get(tag, 0) + 1
        JOURNAL.counts[tag] = n
        JOURNAL.note("start", tag)
        if n <= fails:
            JOURNAL.note("fail", tag)
            raise RuntimeError(f"flaky run {n}")
        JOURNAL.note("end", tag)


class Boom(Job):
    """Always fails."""

    async def perform(self, tag: str = "boom") -> None:
        JOURNAL.note("start", tag)
        raise RuntimeError("boom")


class SyncBoom(Job):
    """A plain def that always fails."""

    def perform(self) -> None:
        raise ValueError("sync boom")


class OwnTimeout(Job):
    """Raises TimeoutError itself, well inside any time limit: a failure, not a timeout."""

    async def perform(self) -> None:
        raise TimeoutError("my own timeout")


class Raises(Job):
    """Raises whatever `kind` names: the job boundary must make each its outcome."""

    async def perform(self, kind: str) -> None:
        JOURNAL.note("start", kind)
        if kind == "exit":
            sys.exit(3)
        if kind == "interrupt":
            raise KeyboardInterrupt
        if kind == "cancel":
            raise asyncio.CancelledError
        if kind == "surrogate":
            raise OSError("cannot open " + os.fsdecode(b"caf\xe9.txt"))
        if kind == "hostile-str":
            raise HostileStr
        if kind == "huge":
            raise ValueError("x" * 1_000_000)
        raise AssertionError(kind)


class HostileStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class SyncExits(Job):
    """A plain def calling sys.exit(), in the worker's thread."""

    def perform(self) -> None:
        sys.exit("bye")


class IgnoresCancel(Job):
    """Swallows cancellation and keeps going for `seconds` of loop time, then returns."""

    async def perform(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        JOURNAL.note("start", "stubborn")
        end = loop.time() + seconds
        while loop.time() < end:
            try:
                await asyncio.sleep(end - loop.time())
            except asyncio.CancelledError:
                JOURNAL.note("cancel", "stubborn")
        JOURNAL.note("end", "stubborn")


# Set by a test to let `SyncBlocked` finish; a real thread blocks on it.
UNBLOCK = threading.Event()


class SyncBlocked(Job):
    """A plain def that blocks its thread until `UNBLOCK` is set (or 10 s pass)."""

    def perform(self) -> None:
        JOURNAL.note("start", "blocked")
        UNBLOCK.wait(10.0)
        JOURNAL.note("end", "blocked")


class ReturnsCoroutine(Job):
    """A plain def that hands back a coroutine; the runner must await it."""

    def perform(self, tag: str = "coro") -> Coroutine[Any, Any, None]:
        async def body() -> None:
            JOURNAL.note("start", tag)
            await asyncio.sleep(1.0)
            JOURNAL.note("end", tag)

        return body()


class TimedJob(Job):
    """Base of the scheduled jobs made by `timed_job`: sleeps `seconds`, notes by `tag`."""

    seconds: float = 0.0
    tag: str = "timed"

    async def perform(self) -> None:
        JOURNAL.note("start", self.tag)
        if self.seconds:
            await asyncio.sleep(self.seconds)
        JOURNAL.note("end", self.tag)


_timed: dict[tuple[str, float], type[TimedJob]] = {}


def timed_job(tag: str, seconds: float) -> type[TimedJob]:
    """A `TimedJob` subclass that takes `seconds`, cached so repeats reuse one class."""
    key = (tag, float(seconds))
    cls = _timed.get(key)
    if cls is None:
        name = f"Timed_{len(_timed)}"
        cls = type(name, (TimedJob,), {"seconds": float(seconds), "tag": tag})
        cls.__qualname__ = name
        _timed[key] = cls
    return cls


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `main()` on a fresh `SimEventLoop` (virtual time from 0.0) and return its result."""
    with asyncio.Runner(loop_factory=SimEventLoop) as runner:
        return runner.run(main())


async def wait_until(predicate: Callable[[], bool], within: float, step: float = 0.01) -> None:
    """Wait (loop time) until `predicate()` holds; fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() >= deadline:
            raise AssertionError(f"condition not met within {within} s (t={loop.time():.3f})")
        await asyncio.sleep(step)
