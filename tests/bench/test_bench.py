"""`python -m bench`: its statistics, its table, its errors, and one real end-to-end run.

The figures themselves are never asserted (speed is measured, not tested); what is tested
is that the benchmark measures what it says: ratios taken within a repetition, every
system's row present, clear errors for a bad system name or an absent service, and a real
run over the limit and the project that writes every figure.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import services
from bench.__main__ import METRICS, Run, key_of, main, table, verdicts
from bench.harness import quantile

ROOT = Path(__file__).resolve().parents[2]


def test_quantile_is_nearest_rank_so_p99_is_a_real_sample() -> None:
    values = [float(v) for v in range(1, 201)]
    assert quantile(values, 0.99) == 198.0
    assert quantile(values, 0.5) == 100.0
    assert quantile([7.0], 0.99) == 7.0


def test_ratio_is_the_median_of_per_repetition_ratios() -> None:
    run = Run()
    key = "W2 drain | jobs/s"
    for rep, (limit, project) in enumerate([(100.0, 90.0), (200.0, 100.0), (50.0, 35.0)]):
        run.put(rep, key, "limit", limit)
        run.put(rep, key, "project", project)
    value, ratio = run.medians(key, "project")  # type: ignore[misc]
    assert value == 90.0
    # 0.9, 0.5, 0.7 -> 0.7; the ratio of the medians would be 90 / 100 = 0.9.
    assert ratio == pytest.approx(0.7)
    assert run.medians(key, "huey") is None


def test_table_shows_each_system_that_ran_a_workload_and_only_those() -> None:
    run = Run()
    for m in METRICS:
        run.put(0, key_of(m), "limit", 10.0)
        if m.workload.startswith("W3"):
            run.put(0, key_of(m), "rq", 20.0)
    lines = table(run, ["limit", "rq"])
    w1 = lines.index(next(line for line in lines if line.startswith("W1 enqueue, one")))
    w3 = lines.index(next(line for line in lines if line.startswith("W3 pickup")))
    assert lines[w1 + 1].split()[0] == "limit"
    assert not lines[w1 + 2].strip()  # rq ran no W1: no row
    assert [line.split()[0] for line in lines[w3 + 1 : w3 + 3]] == ["limit", "rq"]
    assert "(2.00x)" in lines[w3 + 2]


def test_verdicts_say_which_targets_the_project_missed() -> None:
    run = Run()
    run.put(0, "W2 drain | jobs/s", "limit", 100.0)
    run.put(0, "W2 drain | jobs/s", "project 2x2", 50.0)
    run.put(0, "W3 pickup | p50", "project 2x2", 0.4)
    lines = verdicts(run, ["project 2x2"])
    assert any(line.startswith("  MISSED") and "W2 drain" in line for line in lines)
    assert any(line.startswith("  met") and "W3 pickup, p50" in line for line in lines)
    assert math.isnan(run.medians("W3 pickup | p50", "project 2x2")[1])  # type: ignore[index]


def test_an_unknown_system_is_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--systems", "limit,sidekiq", "--reps", "1"])
    assert exc.value.code == 2
    assert "unknown system(s): sidekiq" in capsys.readouterr().err


def test_an_absent_redis_is_a_printed_reason_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("redis")
    monkeypatch.setattr(services, "REDIS_URL", "redis://127.0.0.1:1/15")
    why = services.redis_down()
    assert why is not None
    assert why.startswith("no Redis at 127.0.0.1:1")


def test_an_absent_postgresql_is_a_printed_reason_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("psycopg")
    monkeypatch.setattr(services, "PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:1/postgres")
    why = services.pg_down()
    assert why is not None
    assert why.startswith("no PostgreSQL at postgresql://postgres@127.0.0.1:1/postgres")


@pytest.mark.slow
def test_a_real_run_over_the_limit_and_the_project_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    argv = ["--n", "200", "--reps", "1", "--quick", "--no-sched", "--systems", "limit,project"]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    systems = ["limit", "project 2x2", "project 1x2"]
    for m in METRICS:
        row = results["medians"][key_of(m)]
        ran = systems[:2] if m.workload.startswith("W1") else systems
        assert sorted(row) == sorted(ran), m
        for system in ran:
            assert row[system]["value"] > 0
        assert row["limit"]["ratio"] == 1.0
    assert "project 2x2" in done.stdout
    assert "Durability and settings:" in done.stdout
