"""`rolling_restarts`: workers restarted one at a time, over and over; cadence survives.

Three workers share one database and the whole schedule (an `every: 600` entry, an
`every: 40` one and a per-minute cron, placed by crc32). Every 60-180 virtual seconds one
worker (in turn) is killed or stopped gracefully, then started again a few seconds later,
for two hours, so every worker restarts far more often than the long entry's period. With
cadence from each start (a fresh `now + jitter + every` per boot) the `every: 600` entry
would never fire; from its row it fires every 600 s whatever restarts. A tick due while its
placed worker is down is fired by a peer after the grace; when the placed worker is back,
both try at the same instant and the CAS picks one.
Checks: each tick fires once; each entry never goes longer than its period plus a grace
(plus the few seconds a tick can wait while its only claimant reboots) without a fire;
the long entry's ticks are exactly 600 s apart; the bounded loop.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from reference import Job
from reference.row_scheduler import PLACEMENT_GRACE
from reference.schedule import ScheduleEntry
from reference.sharding import shard_for
from reference.triggers import CronSchedule
from sim import invariants
from sim.host import Host, sqlite_queue
from sim.scenario import Check, Scenario

if TYPE_CHECKING:
    from sim.world import World

WORKERS = 3
HOURS = 2.0
LONG, SHORT, MINUTE = "long_600", "short_40", "cron_minute"
PERIODS = {LONG: 600.0, SHORT: 40.0, MINUTE: 60.0}
DOWN = (2.0, 8.0)  # seconds a restarted worker stays down
EPS = 1e-3


class Beat(Job):
    """A short scheduled job."""

    async def perform(self) -> None:
        await asyncio.sleep(2.0)


def schedule() -> list[ScheduleEntry]:
    def placed(name: str) -> int:
        return shard_for(name, WORKERS)

    return [
        ScheduleEntry(name=LONG, job_class=Beat, every=600.0, timeout=30.0, worker=placed(LONG)),
        ScheduleEntry(name=SHORT, job_class=Beat, every=40.0, timeout=30.0, worker=placed(SHORT)),
        ScheduleEntry(
            name=MINUTE,
            job_class=Beat,
            cron=CronSchedule("* * * * *", ZoneInfo("UTC")),
            timeout=30.0,
            worker=placed(MINUTE),
        ),
    ]


async def main(world: World) -> None:
    spec = sqlite_queue(world, f"{world.tmpdir}/queue.db", WORKERS, schedule_rows=True)
    entries = schedule()
    hosts = [Host(world, i, entries=entries, queue=spec) for i in range(1, WORKERS + 1)]
    rng = world.child_rng("restarts")
    for host in hosts:
        host.start()
    end = HOURS * 3600
    for turn in itertools.count():
        await asyncio.sleep(rng.uniform(60, 180))
        if world.now() >= end:
            break
        host = hosts[turn % WORKERS]
        graceful = rng.random() < 0.5
        world.emit("restart", host=host.index, graceful=graceful)
        if graceful:
            await host.stop()
        else:
            await host.crash()
        await asyncio.sleep(rng.uniform(*DOWN))
        host.start()
    for host in hosts:
        await host.stop()


def checks(world: World) -> list[Check]:
    trace = world.trace
    started = next((r.ns / 1e9 for r in trace.of("host_start")), 0.0)
    stopped = max((r.ns / 1e9 for r in trace.of("host_stopped")), default=world.now())
    restarts = sum(1 for _ in trace.of("restart"))
    fired = invariants.fires(trace)
    long_ticks = [tick for _, _, tick in fired.get(LONG, [])]
    pairs = list(itertools.pairwise(long_ticks))
    # A tick can wait for its grace, plus (when the only worker that would fire it on time
    # is the one rebooting) up to the longest downtime.
    slack = PLACEMENT_GRACE + DOWN[1]
    first_long = started + 5 + PERIODS[LONG]  # 600 s plus at most the 5 s startup jitter
    return [
        Check("workers were restarted", restarts >= HOURS * 3600 / 180 - 1, f"{restarts}"),
        invariants.each_tick_fires_once(trace),
        invariants.fire_gaps(
            trace, LONG, most=PERIODS[LONG] + slack, start=first_long - PERIODS[LONG], end=stopped
        ),
        *(
            invariants.fire_gaps(
                trace, name, most=PERIODS[name] + slack, start=started + 60, end=stopped
            )
            for name in (SHORT, MINUTE)
        ),
        Check(
            f"{LONG} keeps its cadence across restarts: ticks exactly 600 s apart",
            len(long_ticks) >= HOURS * 6 - 1 and all(abs(b - a - 600) < EPS for a, b in pairs),
            f"{len(long_ticks)} ticks, gaps {sorted({round(b - a, 3) for a, b in pairs})}",
        ),
        invariants.bounded_steps(world, 200),
    ]


SCENARIO = Scenario(
    name="rolling_restarts",
    summary="workers restarted one at a time for 2 h; an every: 600 entry keeps its cadence",
    seeds=(1, 2, 3, 4, 5),
    main=main,
    checks=checks,
)
