"""`cron_overlap_skip`: the 0.6.1 regression of the 0.6.0 overlap busy loop.

The real worker runs a `* * * * *` entry whose job takes 150 s, for 24 virtual hours. A
run starts every third minute (the two minutes in between find it still running), so the
scheduler must skip twice per cycle and reschedule each time: 480 starts and 960 skips,
never two skips of the entry closer than a minute, never a pile-up of loop steps. The
0.6.0 skip branch re-pushed the entry without rescheduling and spun at one instant.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from reference import Job
from reference.records import LogEvent
from reference.schedule import ScheduleEntry
from reference.triggers import CronSchedule
from sim import invariants
from sim.host import Host
from sim.scenario import Check, Scenario

if TYPE_CHECKING:
    from sim.world import World

HOURS = 24.0
PERIOD = 60.0
JOB_SECONDS = 150.0
TIMEOUT = 200.0
ENTRY = "every_minute"


class SlowMinuteJob(Job):
    """Takes 150 virtual seconds: longer than two cron periods."""

    async def perform(self) -> None:
        await asyncio.sleep(JOB_SECONDS)


async def main(world: World) -> None:
    # Start at a seeded second within the minute, so seeds differ in phase and jitter.
    await asyncio.sleep(world.rng.uniform(0, PERIOD))
    world.emit("scenario_start")
    entry = ScheduleEntry(
        name=ENTRY,
        job_class=SlowMinuteJob,
        cron=CronSchedule("* * * * *", ZoneInfo("UTC")),
        timeout=TIMEOUT,
        worker=1,
    )
    host = Host(world, 1, entries=[entry])
    host.start()
    await asyncio.sleep(HOURS * 3600)
    await host.stop()


def expected_counts() -> tuple[int, int]:
    """(starts, skips) over the run: one start per ceil(d / p) periods."""
    fires = int(HOURS * 3600 / PERIOD)
    cycle = math.ceil(JOB_SECONDS / PERIOD)
    starts = math.ceil(fires / cycle)
    return starts, fires - starts


def checks(world: World) -> list[Check]:
    trace = world.trace
    starts = sum(1 for r in trace.of(LogEvent.JOB_STARTED.value) if r.get("label") == ENTRY)
    skips = sum(1 for r in trace.of(LogEvent.JOB_SKIPPED.value) if r.get("entry") == ENTRY)
    want_starts, want_skips = expected_counts()
    counted = world.hosts[0].counters.snapshot().total_skips if world.hosts else 0
    return [
        invariants.approx("starts", starts, want_starts, 2),
        invariants.approx("skips", skips, want_skips, 3),
        invariants.skip_spacing(trace, {ENTRY: PERIOD}),
        invariants.no_self_overlap(trace, {ENTRY}),
        Check(
            "every skip counted in metrics", counted == skips, f"{counted} counted, {skips} traced"
        ),
        invariants.bounded_steps(world, 100),
    ]


SCENARIO = Scenario(
    name="cron_overlap_skip",
    summary="a 150 s job on a * * * * * cron for 24 h: skip and reschedule, never spin",
    seeds=(1, 2, 3, 4, 5),
    main=main,
    checks=checks,
)
