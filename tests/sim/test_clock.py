"""Tests for `sim.clock`: SimClock on virtual loop time, and SkewProgram steps and drift."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest

from reference.clock import MONOTONIC_BASE, Clock
from sim.clock import SimClock, SkewProgram
from sim.loop import SimEventLoop

if TYPE_CHECKING:
    from collections.abc import Iterator

EPOCH = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)


def sample(
    clock: SimClock, loop: SimEventLoop, at: list[float]
) -> list[tuple[float, float, datetime]]:
    """Advance `loop` to each virtual instant in `at`; read (monotonic, realtime, wall)."""

    async def main() -> list[tuple[float, float, datetime]]:
        seen = []
        for instant in at:
            await asyncio.sleep(instant - loop.time())
            seen.append((clock.monotonic(), clock.realtime(), clock.wall()))
        return seen

    return loop.run_until_complete(main())


@pytest.fixture
def loop() -> Iterator[SimEventLoop]:
    sim_loop = SimEventLoop()
    yield sim_loop
    sim_loop.close()


def test_is_a_clock_with_shared_monotonic_base(loop: SimEventLoop) -> None:
    clock: Clock = SimClock(loop, EPOCH)
    assert clock.monotonic() == MONOTONIC_BASE
    assert clock.realtime() == EPOCH.timestamp()
    assert clock.wall() == EPOCH


def test_realtime_is_epoch_plus_monotonic(loop: SimEventLoop) -> None:
    clock = SimClock(loop, EPOCH)
    readings = sample(clock, loop, [1.5, 60.0, 3600.0, 86400.0])
    for (mono, real, wall), t in zip(readings, [1.5, 60.0, 3600.0, 86400.0], strict=True):
        assert mono == t + MONOTONIC_BASE
        assert real == EPOCH.timestamp() + t
        assert wall == EPOCH + timedelta(seconds=t)


def test_wall_is_aware_utc_even_for_a_non_utc_epoch(loop: SimEventLoop) -> None:
    plus_two = datetime(2024, 3, 10, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    clock = SimClock(loop, plus_two)
    wall = clock.wall()
    assert wall.tzinfo is UTC
    assert wall == EPOCH
    assert clock.epoch.tzinfo is UTC


def test_naive_epoch_is_rejected(loop: SimEventLoop) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        SimClock(loop, datetime(2024, 1, 1))


def test_reads_the_loop_it_was_given_not_the_running_one() -> None:
    mine, other = SimEventLoop(), SimEventLoop()
    try:
        clock = SimClock(mine, EPOCH)
        other.run_until_complete(asyncio.sleep(100.0))
        assert clock.monotonic() == MONOTONIC_BASE  # no loop running, and `other` ignored
        mine.run_until_complete(asyncio.sleep(7.0))
        assert clock.monotonic() == MONOTONIC_BASE + 7.0
    finally:
        mine.close()
        other.close()


def test_skew_steps_forward_and_back(loop: SimEventLoop) -> None:
    skew = SkewProgram([(100.0, 30.0), (200.0, -45.0)])
    clock = SimClock(loop, EPOCH, skew)
    at = [50.0, 100.0, 150.0, 199.0, 200.0, 300.0]
    readings = sample(clock, loop, at)
    base = EPOCH.timestamp()
    offsets = [real - base - t for (_, real, _), t in zip(readings, at, strict=True)]
    assert offsets == [0.0, 30.0, 30.0, 30.0, -45.0, -45.0]
    reals = [real for _, real, _ in readings]
    monos = [mono for mono, _, _ in readings]
    assert reals[4] < reals[3]  # NTP stepped back: wall time went backwards...
    assert monos == sorted(monos)  # ...monotonic did not
    assert len(set(monos)) == len(monos)
    assert readings[4][2] == EPOCH + timedelta(seconds=155)


def test_drift_accumulates_from_the_latest_step() -> None:
    skew = SkewProgram([(10_000.0, 0.0)], drift_ppm=100.0)
    assert skew.offset_at(0.0) == 0.0
    assert skew.offset_at(5_000.0) == pytest.approx(0.5, abs=1e-12)
    assert skew.offset_at(9_999.0) == pytest.approx(0.9999, abs=1e-12)
    assert skew.offset_at(10_000.0) == 0.0  # the step corrected the drift
    assert skew.offset_at(20_000.0) == pytest.approx(1.0, abs=1e-12)
    assert SkewProgram(drift_ppm=-50.0).offset_at(86_400.0) == pytest.approx(-4.32, abs=1e-12)


def test_skew_program_is_immutable_and_comparable() -> None:
    a = SkewProgram([(1, 2)], drift_ppm=3)
    b = SkewProgram(((1.0, 2.0),), drift_ppm=3.0)
    assert a == b
    assert hash(a) == hash(b)
    assert a.steps == ((1.0, 2.0),)
    assert repr(a) == "SkewProgram(steps=((1.0, 2.0),), drift_ppm=3.0)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.drift_ppm = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("steps", "drift"),
    [
        ([(2.0, 0.0), (1.0, 0.0)], 0.0),
        ([(1.0, 0.0), (1.0, 5.0)], 0.0),
        ([(-1.0, 0.0)], 0.0),
        ([(float("nan"), 0.0)], 0.0),
        ([(1.0, float("inf"))], 0.0),
        ([], float("nan")),
    ],
)
def test_invalid_skew_programs_are_rejected(steps: list[tuple[float, float]], drift: float) -> None:
    with pytest.raises(ValueError, match=r"skew step|drift_ppm"):
        SkewProgram(steps, drift_ppm=drift)


def test_repr_names_time_epoch_and_skew(loop: SimEventLoop) -> None:
    clock = SimClock(loop, EPOCH, SkewProgram([(5.0, 1.0)]))
    assert repr(clock) == (
        "SimClock(t=0.000000000, epoch=2024-03-10T12:00:00+00:00, "
        "skew=SkewProgram(steps=((5.0, 1.0),), drift_ppm=0.0))"
    )
