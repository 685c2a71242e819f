"""Catalog scenarios: each passes on a default seed, and a seed replays byte for byte,
in this process and in a fresh one (set iteration order can differ across processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim.mutants import MUTANTS
from sim.scenario import run_scenario
from sim.scenarios import CATALOG, by_name

ROOT = Path(__file__).resolve().parents[2]
NAMES = [s.name for s in CATALOG]


@pytest.mark.parametrize("name", NAMES)
def test_scenario_passes_on_its_first_seed(name: str) -> None:
    scenario = by_name(name)
    outcome = run_scenario(scenario, scenario.seeds[0])
    assert outcome.ok, [(v.name, v.detail) for v in outcome.violations]
    assert outcome.checks, "a scenario must check something"


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_trace_in_process(name: str) -> None:
    scenario = by_name(name)
    first = run_scenario(scenario, 11, keep_trace=True)
    second = run_scenario(scenario, 11, keep_trace=True)
    assert first.trace == second.trace
    assert first.digest == second.digest
    assert first.events > 0


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_trace_across_processes(name: str) -> None:
    scenario = by_name(name)
    here = run_scenario(scenario, 12)
    code = (
        "from sim.scenario import run_scenario; from sim.scenarios import by_name;"
        f"print(run_scenario(by_name({name!r}), 12).digest)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == here.digest


def test_different_seeds_differ() -> None:
    scenario = by_name("cron_overlap_skip")
    assert run_scenario(scenario, 1).digest != run_scenario(scenario, 2).digest


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_each_mutant_is_caught_on_the_first_seed_of_its_scenario(mutant: object) -> None:
    from sim.mutants import Mutant

    assert isinstance(mutant, Mutant)
    scenario = by_name(mutant.caught_by[0])
    with mutant.applied():
        outcome = run_scenario(scenario, scenario.seeds[0])
    assert not outcome.ok, f"{mutant.name} was not caught by {scenario.name}"
    # ...and the mutant is undone afterwards.
    assert run_scenario(scenario, scenario.seeds[0]).ok


def test_cli_run_prints_identical_output_twice() -> None:
    cmd = [sys.executable, "-m", "sim", "run", "cron_overlap_skip", "--seed", "7", "--trace"]
    a = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    b = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    assert a.stdout == b.stdout
    assert "result: ok" in a.stdout
    assert "ratio" in a.stderr  # the wall-clock line goes to stderr, off the replayable output
