"""A real worker process runs known jobs; its shared-memory counters, read from another
process, match exactly what happened (successes, failures, timeouts, skips)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.integration.conftest import (
    BOUND,
    ROOT,
    clean_env,
    ledger_lines,
    status_counts,
    wait_until,
)

if TYPE_CHECKING:
    from tests.integration.conftest import Workspace

JOBS = "tests.integration.jobs_for_tests"


@pytest.mark.slow
def test_counters_match_what_the_worker_did(ws: Workspace) -> None:
    schedule = ws.root / "schedule.yml"
    schedule.write_text(f"tick:\n  class: {JOBS}.ScheduledSlow\n  every: 1\n  timeout: 30\n")
    metrics = ws.root / "metrics.bin"
    worker = ws.worker(
        "--workers",
        "1",
        "--worker-index",
        "1",
        "--schedule",
        str(schedule),
        "--metrics",
        str(metrics),
        env={"H6_LEDGER": str(ws.ledger), "H6_SECONDS": "2.5"},
    )
    worker.wait_log("worker 1 started")
    for n in range(3):
        assert (
            ws.queue_cli(
                "push", f"{JOBS}.Record", json.dumps([str(ws.ledger), f"ok{n}"])
            ).returncode
            == 0
        )
    for n in range(2):
        assert (
            ws.queue_cli(
                "push", f"{JOBS}.Failing", json.dumps([str(ws.ledger), f"bad{n}"])
            ).returncode
            == 0
        )
    slow = ws.queue_cli(
        "push",
        f"{JOBS}.SlowRecord",
        json.dumps([str(ws.ledger), "late", 5.0]),
        "--options",
        '{"timeout": 0.3}',
    )
    assert slow.returncode == 0, slow.stderr

    def settled() -> bool:
        return status_counts(ws.db) == {"done": 3, "failed": 3}

    wait_until(settled, what="the six queue jobs to settle")
    wait_until(lambda: "skipping tick" in worker.stderr, what="an overlap skip")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.stderr

    ticks = [f for f in ledger_lines(ws.ledger) if f[0] == "tick"]
    tick_runs = sum(1 for f in ticks if f[3] == "start")
    assert tick_runs == sum(1 for f in ticks if f[3] == "end")  # graceful: every run ended
    skips = worker.stderr.count("skipping tick")
    read = subprocess.run(
        [
            sys.executable,
            "-m",
            "reference.metrics",
            "--json",
            "--workers",
            "1",
            "--metrics",
            str(metrics),
        ],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=True,
    )
    (snap,) = json.loads(read.stdout)
    assert snap["total_successes"] == 3 + tick_runs
    assert snap["total_failures"] == 2
    assert snap["total_timeouts"] == 1
    assert snap["total_skips"] == skips > 0
    assert snap["total_runs"] == 3 + 2 + 1 + tick_runs
    assert snap["active_jobs"] == 0
