"""Job classes the real worker processes of the integration tests run.

Imported by `python -m reference.worker --import tests.integration.jobs_for_tests`. Each job
appends one line per event to a ledger file named by its first argument, so a test can see
what ran where without reading the worker's logs. Lines are written with one `write` on an
`O_APPEND` descriptor, so lines from concurrent processes never interleave.
"""

from __future__ import annotations

import asyncio
import os
import time

from reference import Job, current_worker


def append_line(path: str, line: str) -> None:
    """Append `line` atomically (one write on an O_APPEND descriptor)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _stamp(ledger: str, tag: str, event: str = "") -> None:
    parts = [tag, str(current_worker()), str(os.getpid())]
    if event:
        parts.append(event)
    append_line(ledger, " ".join(parts))


class Record(Job):
    """Fast: appends "<tag> <worker> <pid>" to the ledger."""

    async def perform(self, ledger: str, tag: str = "run") -> None:
        _stamp(ledger, tag)


class SlowRecord(Job):
    """Slow: "<tag> <worker> <pid> start", sleeps, then "... end"."""

    options = {"timeout": 30}

    async def perform(self, ledger: str, tag: str = "run", seconds: float = 1.5) -> None:
        _stamp(ledger, tag, "start")
        await asyncio.sleep(seconds)
        _stamp(ledger, tag, "end")


class SyncSlowRecord(Job):
    """Like `SlowRecord`, but a blocking `def perform` (runs in the worker's thread)."""

    options = {"timeout": 30}

    def perform(self, ledger: str, tag: str = "run", seconds: float = 1.5) -> None:
        _stamp(ledger, tag, "start")
        time.sleep(seconds)
        _stamp(ledger, tag, "end")


class Failing(Job):
    """Appends its line, then raises; no retries unless the call site asks."""

    options = {"retry": 0}

    async def perform(self, ledger: str, tag: str = "run") -> None:
        _stamp(ledger, tag)
        raise RuntimeError(f"failing on purpose: {tag}")


class Stamp(Job):
    """Records `time.time()` at start with the enqueue time it was given (pickup latency)."""

    async def perform(self, ledger: str, enqueued_at: float) -> None:
        started = time.time()
        append_line(ledger, f"{enqueued_at!r} {started!r} {current_worker()}")


class ScheduledSlow(Job):
    """A schedule-file job (no arguments): start/end lines in `$H6_LEDGER`, ~1.5 s apart."""

    options = {"timeout": 30}

    async def perform(self) -> None:
        ledger = os.environ["H6_LEDGER"]
        _stamp(ledger, "tick", "start")
        await asyncio.sleep(float(os.environ.get("H6_SECONDS", "1.5")))
        _stamp(ledger, "tick", "end")


class FanOut(Job):
    """Enqueues `n` `Record` children from inside its worker, with no configure() of its own."""

    async def perform(self, ledger: str, n: int) -> None:
        for i in range(n):
            Record.perform_async(ledger, f"child{i}")
        _stamp(ledger, "parent")


class SyncFanOut(Job):
    """The same from a blocking perform, in the worker's thread."""

    def perform(self, ledger: str, n: int) -> None:
        for i in range(n):
            Record.perform_async(ledger, f"sync-child{i}")
        _stamp(ledger, "sync-parent")


class Anything(Job):
    """Takes any positional arguments and does nothing: the CLI tests' job."""

    async def perform(self, *args: object) -> None:
        return None
