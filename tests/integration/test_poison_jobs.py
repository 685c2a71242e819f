"""Poison jobs against real worker processes: each ends as its own outcome, the queue behind
it drains, and nothing crash-loops or hangs."""

from __future__ import annotations

import signal
import sqlite3
from typing import TYPE_CHECKING

import pytest

from tests.integration.conftest import JOBS, db_rows, ledger_lines, status_counts, wait_until

if TYPE_CHECKING:
    from tests.integration.conftest import Workspace

POISON = "tests.integration.poison_jobs"


def _push(ws: Workspace, job: str, args: str) -> int:
    pushed = ws.queue_cli("--import", POISON, "push", job, args)
    assert pushed.returncode == 0, pushed.stderr
    return int(pushed.stdout)


def _push_records(ws: Workspace, n: int) -> list[int]:
    return [_push(ws, f"{JOBS}.Record", f'["{ws.ledger}.ok", "r{i}"]') for i in range(n)]


def _job(ws: Workspace, job_id: int) -> tuple[str, int, str | None]:
    ((status, attempts, error),) = db_rows(
        ws.db, "SELECT status, attempts, last_error FROM jobs WHERE id = ?", (job_id,)
    )
    return str(status), int(str(attempts)), None if error is None else str(error)


def _done(ws: Workspace) -> int:
    try:
        return status_counts(ws.db).get("done", 0)
    except sqlite3.OperationalError:
        return 0


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("exit", "SystemExit: 3"),
        ("interrupt", "KeyboardInterrupt"),
        ("surrogate", "OSError: cannot open caf\\udce9.txt"),
    ],
)
def test_a_job_raising_anything_fails_once_and_the_queue_drains(
    ws: Workspace, kind: str, error: str
) -> None:
    proc = ws.worker(
        "--workers", "1", "--worker-index", "1", "--concurrency", "1", "--import", POISON
    )
    proc.wait_log("worker 1 started")
    poison = _push(ws, f"{POISON}.Raises", f'["{ws.ledger}", "{kind}"]')
    _push_records(ws, 10)
    wait_until(lambda: _done(ws) == 10, what="the 10 jobs behind the poison job")
    assert _job(ws, poison) == ("failed", 1, error)
    assert len(ledger_lines(ws.ledger)) == 1  # ran once: no crash loop
    assert proc.proc.poll() is None  # the worker is still serving
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.stderr


def test_a_sync_job_calling_sys_exit_is_a_failure(ws: Workspace) -> None:
    proc = ws.worker("--workers", "1", "--worker-index", "1", "--import", POISON)
    proc.wait_log("worker 1 started")
    poison = _push(ws, f"{POISON}.SyncExits", f'["{ws.ledger}"]')
    wait_until(lambda: _job(ws, poison)[0] == "failed", what="the job to fail")
    assert _job(ws, poison) == ("failed", 1, "SystemExit: bye")
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.stderr


def test_a_job_that_kills_its_worker_fails_after_max_crashes(ws: Workspace) -> None:
    """Each run takes the worker down; the supervisor restarts it, the restart re-queues
    the job as a crash, and the third crash ends it `failed`; the jobs behind it then run."""
    sup = ws.worker("--workers", "1", "--concurrency", "1", "--import", POISON, name="sup")
    sup.wait_log("worker 1 started")
    poison = _push(ws, f"{POISON}.KillsWorker", f'["{ws.ledger}"]')
    _push_records(ws, 10)
    wait_until(lambda: _done(ws) == 10, timeout=60, what="the 10 jobs behind the poison job")
    status, attempts, error = _job(ws, poison)
    assert (status, attempts) == ("failed", 3)
    assert error is not None
    assert error.startswith("WorkerLostError: the worker running this job died during 3")
    assert len(ledger_lines(ws.ledger)) == 3  # 3 runs, each in a new worker process
    assert len({f[1] for f in ledger_lines(ws.ledger)}) == 3
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0, sup.stderr


def test_a_job_ignoring_cancellation_is_abandoned_and_sigterm_finishes(ws: Workspace) -> None:
    proc = ws.worker("--workers", "1", "--worker-index", "1", "--import", POISON)
    proc.wait_log("worker 1 started")
    stubborn = _push(ws, f"{POISON}.IgnoresCancel", f'["{ws.ledger}"]')
    wait_until(
        lambda: any(f[0] == "cancel-ignored" for f in ledger_lines(ws.ledger)),
        what="the timeout's cancellation to be swallowed",
    )
    # Abandoned after timeout + grace: the run is recorded, its slot is free again.
    wait_until(lambda: _job(ws, stubborn)[0] == "failed", what="the run to be given up")
    _, attempts, error = _job(ws, stubborn)
    assert attempts == 1
    assert error is not None
    assert error.endswith("ignored cancellation; abandoned")
    records = _push_records(ws, 2)
    wait_until(lambda: _done(ws) == len(records), what="jobs in the freed slots")
    # The stubborn job is still going (60 s); a graceful stop must not wait for it.
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, proc.stderr
    assert "ignored cancellation and was abandoned" in proc.stderr
