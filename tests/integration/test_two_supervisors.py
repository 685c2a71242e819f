"""Two supervisors on one SQLite database, each with its own socket dir (issue #13).

Before owners, the second supervisor's "worker 1" took the first one's running jobs for its
own leftovers at start and ran them a second time, concurrently. Now a worker re-queues
only the jobs of owners that are gone: every job runs exactly once with no overlap while
both serve, and when one whole supervisor group is SIGKILLed the other finishes its jobs
within the lease and a few seconds.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from tests.integration.conftest import (
    BOUND,
    db_rows,
    ledger_lines,
    status_counts,
    wait_until,
)

if TYPE_CHECKING:
    from tests.integration.conftest import WorkerProc, Workspace

pytestmark = pytest.mark.slow

LEASE = "3"  # QUEUE_LEASE for both supervisors: a lost host's jobs move within seconds
PRODUCE = """
import sys
from reference.queue import configure
from tests.integration.jobs_for_tests import SlowRecord
db, sockets, ledger, n, seconds = sys.argv[1:6]
configure(db, sockets, 2, create=False)
for i in range(int(n)):
    SlowRecord.perform_async(ledger, f"job{i}", float(seconds))
"""


def _supervisor(ws: Workspace, sockets: str, name: str) -> WorkerProc:
    sup = ws.worker(
        "--workers",
        "2",
        "--socket-dir",
        sockets,
        env={"QUEUE_LEASE": LEASE, "QUEUE_POLL_INTERVAL": "0.5"},
        name=name,
    )
    sup.wait_log("worker 1 started")
    sup.wait_log("worker 2 started")
    return sup


def _produce(ws: Workspace, n: int, seconds: float) -> None:
    result = ws.python(PRODUCE, str(ws.db), str(ws.sockets), str(ws.ledger), str(n), str(seconds))
    assert result.returncode == 0, result.stderr


def _runs(ws: Workspace) -> dict[str, list[tuple[str, str]]]:
    """tag -> [(pid, "start"|"end"), ...] in ledger order."""
    runs: dict[str, list[tuple[str, str]]] = {}
    for tag, _worker, pid, event in ledger_lines(ws.ledger):
        runs.setdefault(tag, []).append((pid, event))
    return runs


def test_two_supervisors_run_every_job_exactly_once_with_no_overlap(db: Workspace) -> None:
    ws = db
    first = _supervisor(ws, str(ws.sockets), "first")
    _produce(ws, 200, 0.3)
    # The second supervisor starts while the first one's jobs are running: its workers'
    # start-up recovery must leave them alone.
    wait_until(lambda: len(ledger_lines(ws.ledger)) >= 4, what="the first jobs to start")
    second = _supervisor(ws, str(ws.root / "s2"), "second")
    wait_until(
        lambda: status_counts(ws.db) == {"done": 200}, timeout=BOUND * 3, what="200 jobs done"
    )
    runs = _runs(ws)
    assert sorted(runs) == sorted(f"job{i}" for i in range(200))
    twice = {tag: events for tag, events in runs.items() if len(events) != 2}
    assert not twice, f"jobs run more than once: {dict(list(twice.items())[:3])}"
    assert all([e for _, e in events] == ["start", "end"] for events in runs.values())
    assert all(attempts == 1 for (attempts,) in db_rows(ws.db, "SELECT attempts FROM jobs"))
    pids = Counter(pid for events in runs.values() for pid, _ in events)
    assert len(pids) >= 3, f"both supervisors' workers served: {pids}"
    for sup in (first, second):
        assert "re-queued" not in sup.stderr, sup.stderr
        assert "taken over" not in sup.stderr, sup.stderr
        sup.signal(signal.SIGTERM)
    for sup in (first, second):
        assert sup.wait() == 0, sup.stderr
    # Both graceful: every owner row says stopped.
    rows = db_rows(ws.db, "SELECT count(*), count(stopped_at) FROM workers")
    assert rows == [(4, 4)]


def test_a_killed_supervisor_groups_jobs_are_finished_by_the_other(db: Workspace) -> None:
    ws = db
    victim = _supervisor(ws, str(ws.sockets), "victim")
    _produce(ws, 8, 2.0)
    wait_until(lambda: len(ledger_lines(ws.ledger)) >= 2, what="the victim to start jobs")
    survivor = _supervisor(ws, str(ws.root / "s2"), "survivor")
    in_flight = {tag for tag, events in _runs(ws).items() if [e for _, e in events] == ["start"]}
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait()
    wait_until(
        lambda: status_counts(ws.db) == {"done": 8},
        timeout=float(LEASE) + 2.0 * 8 + BOUND,
        what="the survivor to finish every job",
    )
    elapsed = time.monotonic() - killed_at
    runs = _runs(ws)
    assert sorted(runs) == sorted(f"job{i}" for i in range(8)), "nothing lost"
    for tag, events in runs.items():
        ends = [pid for pid, e in events if e == "end"]
        assert len(ends) == 1, (tag, events)  # done once
        if tag not in in_flight:
            assert len(events) == 2, (tag, events)  # run again only after the crash
    assert "re-queued" in survivor.stderr
    # The lease and a few seconds, plus the jobs themselves on the survivor's slots.
    assert elapsed < float(LEASE) + 2.0 * 8 + 10.0, elapsed
    survivor.signal(signal.SIGTERM)
    assert survivor.wait() == 0, survivor.stderr
