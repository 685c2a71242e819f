"""`placement_failover`: the placed workers of a cron and an interval entry die for good;
the entries keep firing from the survivors after the grace, each tick exactly once.

Two "supervisors" share one database: hosts 1-2 and hosts 3-4, each pair with its own
worker 1 (hosts 1 and 3), on which both entries are placed, as crc32 placement puts an
entry on the same index under every supervisor. So while both are up, two placed workers
race for every tick at the same instant and only the CAS on `next_fire` keeps it to one
fire. At a seeded minute host 1 is killed, later host 3 too, and neither comes back: host
2 or 4 must then fire every tick, at most `PLACEMENT_GRACE` late, and the interval entry
must keep its cadence. Checks: each tick fires once; no cron slot and no interval period
is missed; every cron fire is at a whole minute and at most a grace late; the bounded loop.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from reference import Job
from reference.row_scheduler import PLACEMENT_GRACE
from reference.schedule import ScheduleEntry
from reference.triggers import CronSchedule
from sim import invariants
from sim.host import Host, sqlite_queue
from sim.scenario import Check, Scenario

if TYPE_CHECKING:
    from sim.world import World

HOURS = 2.0
EVERY = 45.0
CRON = "cron_minute"
INTERVAL = "interval_45"
EPS = 1e-3


class Beat(Job):
    """A short scheduled job."""

    async def perform(self) -> None:
        await asyncio.sleep(1.0)


def entries(placed: int) -> list[ScheduleEntry]:
    """Both entries, placed (pinned) on worker `placed` of a supervisor."""
    return [
        ScheduleEntry(
            name=CRON,
            job_class=Beat,
            cron=CronSchedule("* * * * *", ZoneInfo("UTC")),
            timeout=30.0,
            worker=placed,
        ),
        ScheduleEntry(name=INTERVAL, job_class=Beat, every=EVERY, timeout=30.0, worker=placed),
    ]


async def main(world: World) -> None:
    spec = sqlite_queue(world, f"{world.tmpdir}/queue.db", 4, schedule_rows=True)
    # Supervisor A is hosts 1-2, supervisor B hosts 3-4; each one's worker 1 is placed.
    hosts = [Host(world, i, entries=entries(1 if i <= 2 else 3), queue=spec) for i in range(1, 5)]
    rng = world.child_rng("failover")
    await asyncio.sleep(rng.uniform(0, 60))
    for host in hosts:
        host.start()
    await asyncio.sleep(rng.uniform(10, 20) * 60)
    world.emit("kill_placed", host=1)
    await hosts[0].crash()
    await asyncio.sleep(rng.uniform(10, 20) * 60)
    world.emit("kill_placed", host=3)
    await hosts[2].crash()
    world.emit("placed_all_dead")
    end = HOURS * 3600
    await asyncio.sleep(max(end - world.now(), 60))
    for host in hosts:
        await host.stop()


def checks(world: World) -> list[Check]:
    trace = world.trace
    started = next((r.ns / 1e9 for r in trace.of("host_start")), 0.0)
    stopped = max((r.ns / 1e9 for r in trace.of("host_stopped")), default=world.now())
    all_dead = next((r.ns / 1e9 for r in trace.of("placed_all_dead")), stopped)
    fired = invariants.fires(trace)
    cron = fired.get(CRON, [])
    late = [at - (tick - world.clock.epoch.timestamp()) for at, _, tick in cron]
    whole = all(abs(tick % 60) < EPS for _, _, tick in cron)
    pairs = list(itertools.pairwise(tick for _, _, tick in fired.get(INTERVAL, [])))
    survivors = {host for at, host, _ in cron + fired.get(INTERVAL, []) if at > all_dead}
    return [
        invariants.each_tick_fires_once(trace),
        # Every minute slot fires: never more than a minute plus a grace between fires.
        invariants.fire_gaps(
            trace, CRON, most=60 + PLACEMENT_GRACE, start=started + 60, end=stopped - 60
        ),
        invariants.fire_gaps(
            trace, INTERVAL, most=EVERY + PLACEMENT_GRACE, start=started + 50, end=stopped - 50
        ),
        Check(
            "the interval keeps its cadence: ticks exactly 45 s apart",
            bool(pairs) and all(abs(b - a - EVERY) < EPS for a, b in pairs),
            f"{len(pairs) + 1} ticks, gaps {sorted({round(b - a, 3) for a, b in pairs})}",
        ),
        Check(
            "cron fires are at whole minutes, at most a grace late",
            bool(cron) and whole and max(late) <= PLACEMENT_GRACE + EPS and min(late) >= -EPS,
            f"{len(cron)} fires, lateness {min(late, default=0):.3f}..{max(late, default=0):.3f}",
        ),
        Check(
            "after both placed workers died, the survivors fire",
            bool(survivors) and survivors <= {2, 4},
            f"hosts {sorted(survivors)}",
        ),
        invariants.bounded_steps(world, 200),
    ]


SCENARIO = Scenario(
    name="placement_failover",
    summary="two supervisors' placed workers die for good; peers fire each tick once",
    seeds=(1, 2, 3, 4, 5),
    main=main,
    checks=checks,
)
