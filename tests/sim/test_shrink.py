"""Shrinking: a failing swarm world reduces to a smaller one that still fails, and the
printed description replays it."""

from __future__ import annotations

from sim.mutants import MUTANTS
from sim.scenarios.swarm import SwarmSpec, spec_for
from sim.shrink import run_spec, shrink, size


def test_a_failing_world_shrinks_and_still_fails() -> None:
    mutant = next(m for m in MUTANTS if m.name == "retry_off_by_one")
    with mutant.applied():
        seed = next(s for s in range(1, 13) if not run_spec(spec_for(s), s).ok)
        spec = spec_for(seed)
        small, runs = shrink(spec, seed, max_runs=200)
        assert size(small) < size(spec)
        replayed = SwarmSpec.from_json(small.to_json())
        assert replayed == small
        assert not run_spec(replayed, seed).ok
        assert runs > 0
    # Without the bug, the shrunk world passes: the failure was the mutant's.
    assert run_spec(small, seed).ok


def test_spec_round_trips_through_json() -> None:
    for seed in range(1, 6):
        spec = spec_for(seed)
        assert SwarmSpec.from_json(spec.to_json()) == spec
