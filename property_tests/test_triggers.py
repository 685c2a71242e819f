"""Property tests for the next-run maths: interval cadence and cron walks across DST."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.triggers import MIN_CRON_SLEEP, CronSchedule, interval_next

EXPRESSIONS = [
    "* * * * *",
    "*/7 * * * *",
    "30 2 * * *",
    "0 3 * * *",
    "15,45 1-3 * * *",
    "0 */2 * * *",
    "0 0 1 * *",
    "59 23 * * 0",
    "0 2 29 2 *",
    "*/20 * * * * 30",
]
NAMED_ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Santiago",
]
ZONES: list[str | None] = [None, *NAMED_ZONES]

times = st.floats(min_value=-1e6, max_value=1e9, allow_nan=False, allow_infinity=False)
periods = st.floats(min_value=1e-3, max_value=1e5, allow_nan=False, allow_infinity=False)
# 2020..2030, so walks cross many DST transitions; minute-aligned or not.


def _transitions(year: int) -> list[tuple[str, int]]:
    """(zone, POSIX second near an offset change) for every zone above, found by scanning."""
    found = []
    for zone in NAMED_ZONES:
        tz = ZoneInfo(zone)
        begin = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
        prev = datetime.fromtimestamp(begin, tz).utcoffset()
        for t in range(begin, begin + 366 * 86400, 1800):
            offset = datetime.fromtimestamp(t, tz).utcoffset()
            if offset != prev:
                found.append((zone, t))
            prev = offset
    return found


TRANSITIONS = _transitions(2024)
# 2020..2030 uniformly, plus a bias towards the hours around a DST change, where the
# once-per-slot policy actually matters (both passes of a repeated hour, gaps).
uniform = st.integers(min_value=1_577_836_800, max_value=1_893_456_000)
near_change = st.tuples(
    st.sampled_from(TRANSITIONS), st.integers(min_value=-4 * 3600, max_value=4 * 3600)
).map(lambda pair: pair[0][1] + pair[1])
instants = st.one_of(uniform, near_change).map(lambda s: datetime.fromtimestamp(s, UTC))


@given(scheduled=times, every=periods, now=times)
def test_interval_next_never_past_never_more_than_one_interval_ahead(
    scheduled: float, every: float, now: float
) -> None:
    nxt = interval_next(scheduled, every, now)
    assert nxt >= now
    if scheduled <= now:
        assert nxt <= now + every


@given(
    start=times,
    every=st.integers(min_value=1, max_value=10_000).map(float),
    lateness=st.lists(st.floats(min_value=0.0, max_value=0.99), min_size=1, max_size=50),
)
def test_interval_next_keeps_cadence_when_called_on_time(
    start: float, every: float, lateness: list[float]
) -> None:
    # Waking up less than one interval late never shifts the grid of runs (up to float
    # rounding of the repeated addition, far below any clock's resolution).
    scheduled = start
    for k, late in enumerate(lateness, start=1):
        scheduled = interval_next(scheduled, every, scheduled + late * every)
        assert scheduled == pytest.approx(start + k * every, rel=1e-12, abs=1e-9)


@settings(deadline=None)
@given(
    expr=st.sampled_from(EXPRESSIONS),
    zone=st.sampled_from(ZONES),
    start=instants,
    steps=st.integers(min_value=1, max_value=40),
)
def test_cron_walk_is_strictly_increasing_once_per_slot(
    expr: str, zone: str | None, start: datetime, steps: int
) -> None:
    tz = ZoneInfo(zone) if zone is not None else None
    cron = CronSchedule(expr, tz)
    wall, labels = start, []
    for _ in range(steps):
        delay = cron.delay(wall)
        assert delay >= MIN_CRON_SLEEP
        nxt = cron.next_after(wall)
        assert nxt.tzinfo is not None
        assert nxt.timestamp() > wall.timestamp()
        assert delay == max(nxt.timestamp() - wall.timestamp(), MIN_CRON_SLEEP)
        local = nxt.astimezone(tz).replace(tzinfo=None)
        # Either the wall time matches the expression, or the fire was moved forward to
        # the first instant after a spring-forward gap (the offset just changed).
        before = (nxt - timedelta(seconds=1)).astimezone(tz)
        assert croniter.match(expr, local) or before.utcoffset() != nxt.utcoffset()
        labels.append(local)
        wall = nxt
    # Once per distinct wall-clock slot: the local labels never repeat or go backwards.
    assert all(a < b for a, b in itertools.pairwise(labels))


@settings(deadline=None)
@given(expr=st.sampled_from(EXPRESSIONS), zone=st.sampled_from(NAMED_ZONES), start=instants)
def test_cron_next_after_any_earlier_wall_agrees(expr: str, zone: str, start: datetime) -> None:
    # next_after is a function of the wall time alone: the cache never changes answers.
    cron, fresh = CronSchedule(expr, ZoneInfo(zone)), CronSchedule(expr, ZoneInfo(zone))
    nxt = cron.next_after(start)
    middle = start + (nxt - start) / 2
    assert cron.next_after(middle) == fresh.next_after(middle) == nxt
