"""The scenario catalog: an explicit list, no discovery magic."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.scenarios import (
    big_schedule,
    cron_overlap,
    fetch_rollback,
    lease_takeover,
    placement_failover,
    poison_jobs,
    ring_fallback,
    rolling_restarts,
    shared_slots,
    swarm,
    two_supervisors,
)

if TYPE_CHECKING:
    from sim.scenario import Scenario

CATALOG: tuple[Scenario, ...] = (
    cron_overlap.SCENARIO,
    fetch_rollback.SCENARIO,
    ring_fallback.SCENARIO,
    big_schedule.SCENARIO,
    shared_slots.SCENARIO,
    swarm.SCENARIO,
    poison_jobs.SCENARIO,
    lease_takeover.SCENARIO,
    placement_failover.SCENARIO,
    rolling_restarts.SCENARIO,
    two_supervisors.SCENARIO,
)


def by_name(name: str) -> Scenario:
    for scenario in CATALOG:
        if scenario.name == name:
            return scenario
    known = ", ".join(s.name for s in CATALOG)
    raise KeyError(f"unknown scenario {name!r}; known: {known}")
