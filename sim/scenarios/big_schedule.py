"""`schedule_1000`: 1,000 schedule entries for 24 virtual hours, the compression benchmark.

850 interval entries (60 s to 3,600 s) and 150 cron entries (UTC and Europe/Berlin) on one
worker with the default two slots; a tenth of the jobs take a few seconds. Each entry must
keep its cadence (runs + skips = the fires its trigger implies), never overlap itself, and
the loop must never spin. The report's ratio column is the time compression.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
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

ENTRIES = 1000
CRON_SHARE = 150
HOURS = 24.0
CRONS = (
    "*/5 * * * *",
    "*/15 * * * *",
    "0 * * * *",
    "30 */2 * * *",
    "0 3 * * *",
    "*/10 9-17 * * 1-5",
)
ZONES = ("UTC", "Europe/Berlin")


class Tick(Job):
    """Returns at once."""

    async def perform(self) -> None:
        return None


class Chunk(Job):
    """Takes three virtual seconds."""

    async def perform(self) -> None:
        await asyncio.sleep(3)


def build_entries(world: World) -> list[ScheduleEntry]:
    rng = world.child_rng("schedule")
    entries = []
    for i in range(ENTRIES):
        job = Chunk if rng.random() < 0.1 else Tick
        if i < ENTRIES - CRON_SHARE:
            every = float(rng.randint(60, 3600))
            entries.append(
                ScheduleEntry(name=f"every{i}", job_class=job, every=every, timeout=60, worker=1)
            )
        else:
            cron = CronSchedule(rng.choice(CRONS), ZoneInfo(rng.choice(ZONES)))
            entries.append(
                ScheduleEntry(name=f"cron{i}", job_class=job, cron=cron, timeout=60, worker=1)
            )
    return entries


async def main(world: World) -> None:
    host = Host(world, 1, entries=build_entries(world))
    world.hosts_entries = host.entries  # type: ignore[attr-defined]  # read by the checks
    host.start()
    await asyncio.sleep(HOURS * 3600)
    await host.stop()


def checks(world: World) -> list[Check]:
    trace = world.trace
    host = world.hosts[0]
    starts = Counter(str(r.get("label")) for r in trace.of(LogEvent.JOB_STARTED.value))
    skips = Counter(str(r.get("entry")) for r in trace.of(LogEvent.JOB_SKIPPED.value))
    start = world.clock.epoch
    end = start + timedelta(hours=HOURS)
    off_cadence = []
    for entry in host.entries:
        fired = starts[entry.name] + skips[entry.name]
        if entry.every is not None:
            # First run at jitter + every, then every `every`: floor((T - j) / every) fires.
            expected = int(HOURS * 3600 // entry.every)
            ok = expected - 1 <= fired <= expected
        else:
            assert entry.cron is not None
            expected = 0
            t = entry.cron.next_after(start)
            while t <= end:
                expected += 1
                t = entry.cron.next_after(t)
            ok = expected - 1 <= fired <= expected
        if not ok:
            off_cadence.append(f"{entry.name}: {fired} fired, {expected} expected")
    total = sum(starts.values())
    return [
        Check("all entries keep their cadence", not off_cadence, "; ".join(off_cadence[:3])),
        invariants.no_self_overlap(trace),
        invariants.bounded_steps(world, 5000),
        Check("runs happened", total > 10_000, f"{total} runs"),
    ]


SCENARIO = Scenario(
    name="schedule_1000",
    summary="1,000 interval and cron entries for 24 h: cadence kept, compression measured",
    seeds=(1,),
    main=main,
    checks=checks,
)
