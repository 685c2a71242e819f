"""The `Clock` protocol and `SystemClock`.

This is the only module in `reference/` that reads the real clock. Runtime code reads
time only through the clock it is handed, and waits only through asyncio, so the
simulator can run it on virtual time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Where runtime code reads time.

    `monotonic()` is on the same timeline as the running loop's `time()` up to a constant
    offset, so `deadline - clock.monotonic()` is a valid `asyncio.sleep` duration.
    """

    def monotonic(self) -> float:
        """Seconds on a clock that never steps; for intervals and deadlines."""
        ...

    def realtime(self) -> float:
        """POSIX seconds; for persisted timestamps and cron."""
        ...

    def wall(self) -> datetime:
        """The current wall time as an aware UTC datetime (croniter's start time)."""
        ...


# A non-zero base offset: code that mixes in raw time.monotonic() shows up at once
# (STYLE 4.9 habit 1, after trio's SystemClock offset).
MONOTONIC_BASE = 100_000.0


class SystemClock:
    """The real clock: `time.monotonic()` (plus a fixed offset) and `time.time()`."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic() + MONOTONIC_BASE

    def realtime(self) -> float:
        return time.time()

    def wall(self) -> datetime:
        return datetime.now(UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


def block_for(seconds: float) -> None:
    """Block this thread for `seconds` of real time.

    Only for a wait that cannot yield: the synchronous store backing off while another
    process holds SQLite's write lock. The simulator's stores never wait (their lock
    budget is zero), so no virtual run reaches this.
    """
    time.sleep(seconds)
