"""`python -m sim soak`: fresh seeds past the defaults until the time is up; a failing
seed is printed with its violations and replay command, and the exit status is 1."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sim.__main__ import main
from sim.mutants import MUTANTS
from sim.scenarios import by_name

if TYPE_CHECKING:
    import pytest


def test_a_tiny_soak_runs_fresh_seeds_and_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["soak", "--minutes", "0", "--scenario", "cron_overlap_skip"]) == 0
    out = capsys.readouterr().out
    first = max(by_name("cron_overlap_skip").seeds) + 1
    match = re.search(
        r"soak cron_overlap_skip: (\d+) seeds \((\d+)\.\.(\d+)\) in .* seeds/min", out
    )
    assert match is not None, out
    assert int(match[1]) >= 1
    assert int(match[2]) == first
    assert "0 failed" in out


def test_soak_defaults_to_the_swarm(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["soak", "--minutes", "0"]) == 0
    assert "soak swarm: 1 seeds (13..13)" in capsys.readouterr().out


def test_a_failing_soak_reports_each_seed_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    mutant = next(m for m in MUTANTS if m.name == "fetch_ignores_run_at")
    with mutant.applied():
        code = main(["soak", "--minutes", "0", "--scenario", "fetch_error_rollback"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "fetch_error_rollback seed 6: VIOLATION" in out
    assert "[FAIL] no job claimed or started before its run_at" in out
    assert "replay: python -m sim run fetch_error_rollback --seed 6 --trace" in out
    assert "1 failed: [6]" in out


def test_soak_refuses_a_negative_duration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["soak", "--minutes", "-1"]) == 2
    assert "--minutes" in capsys.readouterr().err
