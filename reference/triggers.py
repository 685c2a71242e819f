"""Next-run maths for interval and cron entries, as pure functions of explicit times.

Layer 0: no clock reads, no I/O beyond zoneinfo's tz database; imports only stdlib and
croniter, never other `reference` modules above this layer.

DST policy for cron entries in a zone with daylight saving: **fire once per distinct
wall-clock slot**. The expression is expanded on naive wall-clock time, and each slot maps to
one instant:
- fall-back (a wall time happens twice, e.g. Europe/Berlin 2024-10-27 02:00-03:00): the slot
  fires at its first occurrence only, so "30 2 * * *" fires once that day, at 02:30 CEST.
  Consequence: a sub-hourly expression ("*/15 * * * *") does not fire during the repeated
  hour (its slots already fired in the first pass), i.e. it pauses for one real hour.
- spring-forward (a wall time never happens, e.g. 2024-03-31 02:00-03:00): the slot fires at
  the first instant after the gap (03:00 CEST); several slots inside one gap fire once.
So a daily job runs exactly once per calendar day. Evaluation without a zone uses the
system's local zone, with the same policy.

An expression can run out of fire times (a year field in the past, or never: "0 0 31 2 *").
croniter then gives up after searching 50 years; `next_after` reports that as
`NoNextFireError`, never as a croniter exception. The schedule file is checked for it up
front (`reference.schedule.CRON_HORIZON_YEARS`); the scheduler retires an entry that runs
out later (a year field that has passed).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from croniter import CroniterError, croniter

if TYPE_CHECKING:
    import random
    from zoneinfo import ZoneInfo

MIN_CRON_SLEEP = 0.1
"""The floor of a cron delay, so a clock at a slot boundary never spins (SPEC)."""

MAX_STARTUP_JITTER = 5.0


class NoNextFireError(ValueError):
    """A cron expression has no fire time after the given instant (croniter searched 50 years)."""


def interval_first(now: float, every: float, jitter: float) -> float:
    """Return the first run of an interval entry: `now + jitter + every` (monotonic s)."""
    return now + jitter + every


def interval_next(scheduled: float, every: float, now: float) -> float:
    """Return the run after `scheduled`; if that is already past, `now + every`.

    No burst catch-up: a worker that was stalled for ten intervals runs once, then resumes
    the cadence from `now`.
    """
    nxt = scheduled + every
    if nxt < now:
        nxt = now + every
    return nxt


def startup_jitter(every: float | None, rng: random.Random) -> float:
    """Return a first-run jitter, uniform in `[0, min(every or 5, 5))`."""
    cap = min(every or MAX_STARTUP_JITTER, MAX_STARTUP_JITTER)
    # rng.random() is in [0, 1), so the product never reaches cap (uniform() may).
    return cap * rng.random()


class CronSchedule:
    """A cron expression parsed once, evaluated in `tz` (None: the system's local zone).

    Not thread-safe: it reuses one croniter (about 5x cheaper than building one per call),
    so use it from one event loop.
    """

    __slots__ = ("_iter", "_last", "expr", "tz")

    def __init__(self, expr: str, tz: ZoneInfo | None) -> None:
        if not isinstance(expr, str):
            raise TypeError(f"cron expression must be a str, not {type(expr).__name__}")
        self.expr = expr
        self.tz = tz
        try:
            # start_time is explicit: croniter must never read the real clock.
            self._iter = croniter(expr, start_time=datetime(2000, 1, 1))
        except (ValueError, KeyError, TypeError) as exc:
            reason = _clip(str(exc) or type(exc).__name__, 120, quote=False)
            raise ValueError(f"invalid cron expression {_clip(expr)}: {reason}") from exc
        # (wall, result) of the last call, POSIX seconds: a repeat query before the slot
        # (e.g. after an early wake-up) is answered without croniter.
        self._last: tuple[float, float] = (math.inf, math.inf)

    def next_after(self, wall: datetime) -> datetime:
        """Return the next fire time strictly after the aware `wall`, as an aware datetime.

        Raises:
            NoNextFireError: the expression never fires again (a `ValueError`).
            ValueError: `wall` is naive.
        """
        ts = self._next_ts(wall)
        if self.tz is not None:
            return datetime.fromtimestamp(ts, self.tz)
        return datetime.fromtimestamp(ts, UTC).astimezone()

    def delay(self, wall: datetime) -> float:
        """Return seconds from `wall` to the next fire time, at least `MIN_CRON_SLEEP`."""
        # Timestamps, not datetime subtraction: two datetimes sharing one ZoneInfo
        # subtract as naive wall times, which is off by an hour across a DST change.
        return max(self._next_ts(wall) - wall.timestamp(), MIN_CRON_SLEEP)

    def _next_ts(self, wall: datetime) -> float:
        if wall.tzinfo is None or wall.utcoffset() is None:
            raise ValueError("wall must be an aware datetime")
        now = wall.timestamp()
        last_wall, last_result = self._last
        if last_wall <= now < last_result:
            return last_result
        local = wall.astimezone(self.tz).replace(tzinfo=None, fold=0)
        self._iter.set_current(local, force=True)
        while True:
            # Slots come in increasing naive order and map to non-decreasing instants, so
            # the first instant past `now` is the answer. Only inside a repeated hour (wall
            # in its second pass) does this loop more than once.
            try:
                slot = self._iter.get_next(datetime)
                ts = self._instant(slot)
            except (CroniterError, OverflowError, ValueError) as exc:
                # CroniterBadDateError: nothing within croniter's 50-year search; the
                # others: a slot past year 9999 (datetime's range). Either way, no next run.
                why = "none within 50 years" if isinstance(exc, CroniterError) else str(exc)
                raise NoNextFireError(
                    f"cron expression {_clip(self.expr)} has no fire time after "
                    f"{wall.isoformat(timespec='seconds')} ({_clip(why, 80, quote=False)})"
                ) from exc
            if ts > now:
                self._last = (now, ts)
                return ts

    def _instant(self, slot: datetime) -> float:
        """Map a naive wall-clock slot to its one instant under the DST policy."""
        first = self._timestamp(slot, 0)
        second = self._timestamp(slot, 1)
        if first <= second:
            # Regular (equal) or repeated (first < second): the first occurrence.
            return first
        # In a gap: fold=1 reads the slot with the post-transition offset, fold=0 with the
        # pre-transition one, so the transition lies in (second, first]. Find the first
        # whole second whose wall time is past the slot (transitions are on whole seconds).
        lo, hi = math.floor(second), math.ceil(first)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._local(mid) > slot:
                hi = mid
            else:
                lo = mid + 1
        return float(lo)

    def _timestamp(self, slot: datetime, fold: int) -> float:
        if self.tz is None:
            return slot.replace(fold=fold).timestamp()  # naive: the system's local zone
        return slot.replace(tzinfo=self.tz, fold=fold).timestamp()

    def _local(self, ts: float) -> datetime:
        if self.tz is None:
            return datetime.fromtimestamp(ts)
        return datetime.fromtimestamp(ts, self.tz).replace(tzinfo=None)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CronSchedule):
            return NotImplemented
        return (self.expr, self.tz) == (other.expr, other.tz)

    def __hash__(self) -> int:
        return hash((self.expr, self.tz))

    def __repr__(self) -> str:
        zone = str(self.tz) if self.tz is not None else "local"
        return f"CronSchedule({self.expr!r}, tz={zone})"


def _clip(text: str, limit: int = 60, *, quote: bool = True) -> str:
    """`text` for an error message: repr()'d if `quote`, cut to about `limit` characters."""
    shown = repr(text) if quote else " ".join(text.split())  # one line, always
    return shown if len(shown) <= limit else f"{shown[: limit - 3]}..."
