"""Unit tests for interval and cron next-run maths, including the DST policy."""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest

from reference.triggers import (
    MIN_CRON_SLEEP,
    CronSchedule,
    NoNextFireError,
    interval_first,
    interval_next,
    startup_jitter,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

BERLIN = ZoneInfo("Europe/Berlin")


def walk(cron: CronSchedule, start: datetime, n: int) -> list[str]:
    out, wall = [], start
    for _ in range(n):
        wall = cron.next_after(wall)
        out.append(wall.isoformat())
    return out


# --- intervals ---------------------------------------------------------------------------


def test_interval_first_adds_jitter_and_every() -> None:
    assert interval_first(100.0, 60.0, 2.5) == 162.5


def test_interval_next_keeps_cadence_when_on_time() -> None:
    assert interval_next(160.0, 60.0, 160.2) == 220.0


def test_interval_next_does_not_burst_after_a_stall() -> None:
    # Ten intervals late: one run now-ish, then cadence from now.
    assert interval_next(160.0, 60.0, 760.5) == 820.5


def test_interval_next_exactly_one_interval_late_keeps_cadence() -> None:
    assert interval_next(160.0, 60.0, 220.0) == 220.0


def test_startup_jitter_bounds() -> None:
    rng = random.Random(7)
    samples = [startup_jitter(60.0, rng) for _ in range(2000)]
    assert all(0.0 <= s < 5.0 for s in samples)
    assert max(samples) > 4.5  # it does use the whole range
    assert all(0.0 <= startup_jitter(0.5, rng) < 0.5 for _ in range(200))
    assert all(0.0 <= startup_jitter(None, rng) < 5.0 for _ in range(200))


def test_startup_jitter_is_seeded() -> None:
    a = [startup_jitter(3.0, random.Random(1)) for _ in range(3)]
    b = [startup_jitter(3.0, random.Random(1)) for _ in range(3)]
    assert a == b


# --- cron basics -------------------------------------------------------------------------


def test_invalid_cron_names_croniter_reason() -> None:
    with pytest.raises(ValueError, match=r"invalid cron expression '61 \* \* \* \*'.*range"):
        CronSchedule("61 * * * *", None)
    with pytest.raises(ValueError, match="columns"):
        CronSchedule("every day", None)


@pytest.mark.parametrize(
    ("expr", "wall"),
    [
        ("0 0 31 2 *", datetime(2026, 1, 1, tzinfo=UTC)),  # never
        ("* * * * * 0 2026", datetime(2027, 1, 1, tzinfo=UTC)),  # its year has passed
        ("0 0 1 1 * 0 2099", datetime(2026, 1, 1, tzinfo=UTC)),  # past croniter's 50 years
    ],
)
def test_no_next_fire_is_a_clear_error_not_a_croniter_one(expr: str, wall: datetime) -> None:
    cron = CronSchedule(expr, ZoneInfo("UTC"))
    with pytest.raises(NoNextFireError) as info:
        cron.next_after(wall)
    assert type(info.value) is NoNextFireError  # a ValueError, but not croniter's own
    assert isinstance(info.value, ValueError)
    assert str(info.value) == (
        f"cron expression {expr!r} has no fire time after {wall.isoformat()} (none within 50 years)"
    )
    with pytest.raises(NoNextFireError):
        cron.delay(wall)


def test_a_huge_cron_expression_is_clipped_in_the_error() -> None:
    with pytest.raises(ValueError, match="invalid cron expression") as info:
        CronSchedule("9" * 10_000 + " * * * *", None)
    assert len(str(info.value)) < 250


def test_next_after_is_strictly_after_a_slot() -> None:
    cron = CronSchedule("*/5 * * * *", ZoneInfo("UTC"))
    at_slot = datetime(2024, 5, 1, 12, 5, tzinfo=UTC)
    assert cron.next_after(at_slot) == datetime(2024, 5, 1, 12, 10, tzinfo=UTC)
    assert cron.next_after(at_slot - timedelta(microseconds=1)) == at_slot


def test_next_after_evaluates_in_the_zone_and_accepts_any_aware_wall() -> None:
    cron = CronSchedule("0 3 * * *", BERLIN)
    nxt = cron.next_after(datetime(2024, 7, 1, 0, 30, tzinfo=UTC))  # 02:30 CEST
    assert nxt == datetime(2024, 7, 1, 1, 0, tzinfo=UTC)
    assert nxt.tzinfo is BERLIN


def test_naive_wall_is_rejected() -> None:
    with pytest.raises(ValueError, match="aware"):
        CronSchedule("* * * * *", None).next_after(datetime(2024, 1, 1))


def test_delay_is_seconds_to_next_slot() -> None:
    cron = CronSchedule("0 * * * *", ZoneInfo("UTC"))
    assert cron.delay(datetime(2024, 1, 1, 10, 59, 30, tzinfo=UTC)) == 30.0


def test_delay_has_a_floor() -> None:
    cron = CronSchedule("0 * * * *", ZoneInfo("UTC"))
    wall = datetime(2024, 1, 1, 10, 59, 59, 950_000, tzinfo=UTC)
    assert cron.delay(wall) == MIN_CRON_SLEEP


def test_delay_is_in_real_seconds_across_dst() -> None:
    # Same ZoneInfo on both sides must not subtract as naive wall times.
    cron = CronSchedule("0 4 * * *", BERLIN)
    wall = datetime(2024, 3, 31, 1, 0, tzinfo=BERLIN)  # 01:00 CET; 04:00 CEST is 2 h later
    assert cron.delay(wall) == 2 * 3600


def test_repeated_query_is_answered_from_cache_consistently() -> None:
    cron = CronSchedule("*/10 * * * *", ZoneInfo("UTC"))
    wall = datetime(2024, 1, 1, 10, 1, tzinfo=UTC)
    first = cron.next_after(wall)
    assert cron.next_after(wall + timedelta(minutes=5)) == first
    # A clock stepping backwards is recomputed, not served stale.
    assert cron.next_after(wall - timedelta(minutes=30)) == datetime(2024, 1, 1, 9, 40, tzinfo=UTC)


def test_cron_equality_and_repr() -> None:
    assert CronSchedule("0 3 * * *", BERLIN) == CronSchedule("0 3 * * *", BERLIN)
    assert CronSchedule("0 3 * * *", BERLIN) != CronSchedule("0 3 * * *", None)
    assert repr(CronSchedule("0 3 * * *", BERLIN)) == "CronSchedule('0 3 * * *', tz=Europe/Berlin)"


# --- DST policy --------------------------------------------------------------------------


def test_fall_back_daily_fires_once_at_first_occurrence() -> None:
    cron = CronSchedule("30 2 * * *", BERLIN)
    assert walk(cron, datetime(2024, 10, 26, 12, tzinfo=BERLIN), 3) == [
        "2024-10-27T02:30:00+02:00",
        "2024-10-28T02:30:00+01:00",
        "2024-10-29T02:30:00+01:00",
    ]


def test_fall_back_from_inside_the_second_pass_does_not_refire() -> None:
    cron = CronSchedule("30 2 * * *", BERLIN)
    second_pass = datetime(2024, 10, 27, 2, 10, tzinfo=BERLIN, fold=1)
    assert cron.next_after(second_pass).isoformat() == "2024-10-28T02:30:00+01:00"


def test_fall_back_sub_hourly_pauses_for_the_repeated_hour() -> None:
    cron = CronSchedule("*/15 * * * *", BERLIN)
    assert walk(cron, datetime(2024, 10, 27, 1, 50, tzinfo=BERLIN), 6) == [
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T02:15:00+02:00",
        "2024-10-27T02:30:00+02:00",
        "2024-10-27T02:45:00+02:00",
        "2024-10-27T03:00:00+01:00",
        "2024-10-27T03:15:00+01:00",
    ]


def test_spring_forward_fires_at_first_instant_after_gap() -> None:
    cron = CronSchedule("30 2 * * *", BERLIN)
    assert walk(cron, datetime(2024, 3, 30, 12, tzinfo=BERLIN), 2) == [
        "2024-03-31T03:00:00+02:00",
        "2024-04-01T02:30:00+02:00",
    ]


def test_spring_forward_slots_in_one_gap_fire_once() -> None:
    cron = CronSchedule("*/15 * * * *", BERLIN)
    assert walk(cron, datetime(2024, 3, 31, 1, 40, tzinfo=BERLIN), 3) == [
        "2024-03-31T01:45:00+01:00",
        "2024-03-31T03:00:00+02:00",
        "2024-03-31T03:15:00+02:00",
    ]


def test_half_hour_dst_shift() -> None:
    lord_howe = ZoneInfo("Australia/Lord_Howe")  # 02:00 -> 02:30 on 2024-10-06
    cron = CronSchedule("0 * * * *", lord_howe)
    assert walk(cron, datetime(2024, 10, 6, 0, 50, tzinfo=lord_howe), 3) == [
        "2024-10-06T01:00:00+10:30",
        "2024-10-06T02:30:00+11:00",
        "2024-10-06T03:00:00+11:00",
    ]


@pytest.fixture
def berlin_local_zone() -> Iterator[None]:
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is POSIX-only")
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


@pytest.mark.usefixtures("berlin_local_zone")
def test_local_zone_follows_the_same_policy() -> None:
    cron = CronSchedule("30 2 * * *", None)
    fall = walk(cron, datetime(2024, 10, 26, 12, tzinfo=BERLIN), 2)
    assert fall == ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]
    spring = walk(cron, datetime(2024, 3, 30, 12, tzinfo=BERLIN), 2)
    assert spring == ["2024-03-31T03:00:00+02:00", "2024-04-01T02:30:00+02:00"]
