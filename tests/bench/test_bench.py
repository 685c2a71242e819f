"""`python -m bench`: its statistics, its table, its errors, and one real end-to-end run.

The figures themselves are never asserted (speed is measured, not tested); what is tested
is that the benchmark measures what it says: ratios taken within a repetition, every
system's row present, clear errors for a bad system name or an absent service, and a real
run over the limit and the project that writes every figure.
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bench import depth_bench, services, wal_bench, wal_mimic
from bench.__main__ import METRICS, Run, key_of, main, table, verdicts
from bench.harness import quantile
from reference.sqlite_store import SqliteStore
from tests.storeops import claim

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
    argv += ["--workloads", "W1,W2,W3"]
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


@pytest.mark.slow
def test_the_depth_and_wal_workloads_run_once_and_write_their_figures(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    argv = ["--workloads", "depth,wal", "--systems", "limit,project", "--quick", "--no-sched"]
    argv += ["--depth-pending", "3000", "--depth-done", "3000", "--wal-n", "300"]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    assert results["reps"] == []  # no W1-W3 asked for: no repetitions
    for cycle in results["depth"]["cycles"].values():
        assert cycle["shallow_us"] > 0
        assert cycle["deep_us"] > 0
    assert sorted(results["wal"]) == ["limit", "project 2x2"]
    assert all(r["max_wal_bytes"] > 0 for r in results["wal"].values())
    assert "Depth: wall µs per claim+complete cycle" in done.stdout
    assert "WAL: largest -wal file while two consumers drain 300 jobs" in done.stdout


def test_an_unknown_workload_is_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--workloads", "W2,deep", "--reps", "1"])
    assert exc.value.code == 2
    assert "unknown workload(s): DEEP" in capsys.readouterr().err


def test_the_depth_database_has_the_store_schema_and_the_rows_asked_for(tmp_path: Path) -> None:
    path = depth_bench.cached(500, 700, cache=tmp_path)
    assert depth_bench.cached(500, 700, cache=tmp_path) == path  # built once, then reused
    store = SqliteStore.open_existing(path)
    try:
        stats = store.stats()
        assert (stats.pending, stats.running, stats.done, stats.failed) == (500, 0, 700, 0)
        (first,) = claim(store, now=depth_bench.NOW, lease=60.0)
        assert first.id == 701  # the oldest pending job, behind every done row
    finally:
        store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_the_depth_case_reports_both_cycles_at_both_depths_with_the_claim_plan(
    tmp_path: Path,
) -> None:
    result = depth_bench.run(
        quick=True, pending=3000, done=3000, workdir=tmp_path, cache=tmp_path / "cache"
    )
    cycles = result["cycles"]
    assert isinstance(cycles, dict)
    assert sorted(cycles) == ["claim, then record", "record with the next claim"]
    for figures in cycles.values():
        for key in ("shallow_us", "deep_us", "ratio", "shallow_cpu_us", "deep_cpu_us"):
            assert figures[key] > 0, key
    assert any("jobs_pending_due" in step for step in result["plan"])  # type: ignore[union-attr]
    lines = depth_bench.report(result)
    assert "deep = 3,000 pending + 3,000 done not yet purged" in lines[1]
    assert sum(" record" in line and line.endswith("x") for line in lines) == 2
    # Depth held constant: both copies were drained only inside the blocks, and removed.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_the_depth_reset_keeps_the_queue_depth(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    shutil.copyfile(depth_bench.cached(300, 0, cache=tmp_path / "cache"), path)
    cycles = depth_bench.Cycles(path, depth_bench.T0 + 300)
    try:
        for _ in range(50):
            cycles.record_with_claim()
        cycles.reset()
    finally:
        cycles.close()
    with sqlite3.connect(path) as conn:
        rows = dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
    assert rows == {"pending": 300}


@pytest.mark.slow
def test_the_wal_figure_is_sampled_while_two_consumers_drain() -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-"))  # short: AF_UNIX paths are capped
    try:
        results = wal_bench.run(300, {"limit", "project"}, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert sorted(results) == ["limit", "project 2x2"]
    for r in results.values():
        assert r["n"] == 300
        assert r["max_wal_bytes"] >= r["end_wal_bytes"] > 0
        assert r["samples"] >= 1
        assert r["jobs_per_s"] > 0
    lines = wal_bench.report(results)
    assert lines[0].startswith("WAL: largest -wal file while two consumers drain 300 jobs")
    (project,) = [line for line in lines if "project 2x2" in line]
    assert project.split()[0] in ("met", "MISSED")  # the verdict against the 64 MiB target


@pytest.mark.slow
def test_the_wal_mimic_drains_with_a_bounding_checkpoint_and_reports_it() -> None:
    opts: dict[str, object] = {
        "claim": 2,
        "wait": "backoff",
        "mode": "fence",
        "every": 0.0,
        "over": 0.01,  # MiB: a fence after nearly every commit
        "retry": 0,
        "no_autocheckpoint": True,
        "by_all": True,
        "size_limit": 64 * 1024,
    }
    result = wal_mimic.run(500, opts)
    assert result["n"] == 500
    assert isinstance(result["max_wal_mib"], float)
    assert result["jobs_per_s"] > 0  # type: ignore[operator]
    assert result["checkpoints"] > 0  # type: ignore[operator]
