"""`python -m reference.queue` as a real process against real SQLite files (issue 3).

Every error is one line on stderr with no traceback; exit 2 for bad input, 1 for a failed
operation. A missing or corrupt database is never created or overwritten.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from reference.sqlite_store import SqliteStore
from tests.integration.conftest import JOBS, db_rows, one_error_line

if TYPE_CHECKING:
    from tests.integration.conftest import Workspace

pytestmark = pytest.mark.slow

ANY_JOB = f"{JOBS}.Anything"  # any arguments: these tests are about the CLI


def _push(ws: Workspace, *args: str) -> int:
    result = ws.queue_cli("push", *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().isdigit(), result.stdout  # exactly the id on stdout
    return int(result.stdout)


def _row(ws: Workspace, job_id: int) -> dict[str, object]:
    cols = ("class_name", "args", "status", "run_at", "created_at", "options", "attempts")
    rows = db_rows(ws.db, f"SELECT {', '.join(cols)} FROM jobs WHERE id = ?", (job_id,))
    assert rows, f"job {job_id} not in the database"
    return dict(zip(cols, rows[0], strict=True))


def test_push_prints_the_id_and_stores_the_job(db: Workspace) -> None:
    first = _push(db, ANY_JOB, '["ledger", "a"]')
    second = _push(db, ANY_JOB)  # ARGS_JSON defaults to []
    assert second == first + 1
    row = _row(db, first)
    assert row["class_name"] == ANY_JOB
    assert json.loads(str(row["args"])) == ["ledger", "a"]
    assert row["status"] == "pending"
    assert row["attempts"] == 0
    assert abs(float(str(row["run_at"])) - time.time()) < 30
    assert json.loads(str(_row(db, second)["args"])) == []


def test_push_options_are_stored(db: Workspace) -> None:
    job_id = _push(db, ANY_JOB, "[]", "--options", '{"retry": 3, "timeout": 5}')
    options = json.loads(str(_row(db, job_id)["options"]))
    assert options["retry"] == 3
    assert options["timeout"] == 5


def test_push_in_sets_run_at(db: Workspace) -> None:
    before = time.time()
    job_id = _push(db, ANY_JOB, "[]", "--in", "300")
    after = time.time()
    run_at = float(str(_row(db, job_id)["run_at"]))
    assert before + 300 <= run_at <= after + 300


@pytest.mark.parametrize(
    "stamp",
    [
        pytest.param("2031-05-04T03:02:01", id="naive-local"),
        pytest.param("2031-05-04T03:02:01+02:00", id="offset"),
        pytest.param("2031-05-04T03:02:01Z", id="utc-z"),
    ],
)
def test_push_at_sets_run_at(db: Workspace, stamp: str) -> None:
    job_id = _push(db, ANY_JOB, "[]", "--at", stamp)
    expected = datetime.fromisoformat(stamp).timestamp()  # naive = local time (SPEC)
    assert float(str(_row(db, job_id)["run_at"])) == pytest.approx(expected)


def test_push_at_in_the_past_is_due_now(db: Workspace) -> None:
    stamp = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    job_id = _push(db, ANY_JOB, "[]", "--at", stamp)
    assert float(str(_row(db, job_id)["run_at"])) < time.time()


def test_stats_counts_by_status_and_oldest_pending(db: Workspace) -> None:
    empty = db.queue_cli("stats")
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.splitlines() == [
        "pending  0",
        "running  0",
        "done     0",
        "failed   0",
        "oldest pending: -",
    ]
    for _ in range(3):
        _push(db, ANY_JOB)
    _push(db, ANY_JOB, "[]", "--in", "3600")
    stats = db.queue_cli("stats")
    lines = stats.stdout.splitlines()
    assert lines[0] == "pending  4"
    assert lines[4].startswith("oldest pending: ")
    assert "s ago)" in lines[4]


def test_list_shows_jobs_newest_first_and_filters_by_status(db: Workspace) -> None:
    ids = [_push(db, ANY_JOB, f'["l", "{i}"]') for i in range(3)]
    conn_rows = db_rows(db.db, "SELECT count(*) FROM jobs")
    assert conn_rows == [(3,)]
    _mark_failed(db, ids[1], "RuntimeError: boom")
    listed = db.queue_cli("list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:3] == ["id", "status", "try"]
    assert [int(r.split()[0]) for r in rows] == sorted(ids, reverse=True)
    failed = db.queue_cli("list", "--status", "failed")
    _, *failed_rows = failed.stdout.splitlines()
    assert len(failed_rows) == 1
    assert failed_rows[0].split()[:2] == [str(ids[1]), "failed"]
    assert ANY_JOB in failed_rows[0]
    assert "RuntimeError: boom" in failed_rows[0]


def _mark_failed(ws: Workspace, job_id: int, error: str) -> None:
    import sqlite3

    conn = sqlite3.connect(ws.db)
    try:
        with conn:
            conn.execute(
                "UPDATE jobs SET status = 'failed', attempts = 1, last_error = ? WHERE id = ?",
                (error, job_id),
            )
    finally:
        conn.close()


def test_retry_requeues_a_failed_job(db: Workspace) -> None:
    job_id = _push(db, ANY_JOB)
    _mark_failed(db, job_id, "RuntimeError: boom")
    result = db.queue_cli("retry", str(job_id))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"job {job_id} re-queued"
    assert _row(db, job_id)["status"] == "pending"


def test_retry_of_a_job_that_is_not_failed_is_exit_1(db: Workspace) -> None:
    job_id = _push(db, ANY_JOB)
    line = one_error_line(db.queue_cli("retry", str(job_id)), 1)
    assert f"job {job_id} is pending, not failed" in line
    line = one_error_line(db.queue_cli("retry", "9999"), 1)
    assert "9999 does not exist" in line


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param([f"{JOBS}.NoSuchJob"], "unknown job", id="unknown-job"),
        pytest.param(["os.system", '["true"]'], "unknown job", id="not-a-job"),
        pytest.param([f"{JOBS}.Record", "[]"], "takes 1 to 2 argument", id="wrong-arity"),
        pytest.param([ANY_JOB, "[1, 2"], "ARGS_JSON is not valid JSON", id="non-json"),
        pytest.param([ANY_JOB, "hello"], "ARGS_JSON is not valid JSON", id="bare-word"),
        pytest.param([ANY_JOB, '{"a": 1}'], "ARGS_JSON must be a JSON array", id="object"),
        pytest.param([ANY_JOB, "42"], "ARGS_JSON must be a JSON array", id="number"),
        pytest.param([ANY_JOB, "[NaN]"], "not JSON", id="nan-argument"),
        pytest.param([ANY_JOB, "[]", "--at", "tomorrow"], "ISO 8601", id="bad-at"),
        pytest.param([ANY_JOB, "[]", "--options", '{"bogus": 1}'], "bogus", id="unknown-option"),
        pytest.param([ANY_JOB, "[]", "--options", '{"retry": "x"}'], "retry", id="option-type"),
        pytest.param([ANY_JOB, "[]", "--options", "[1]"], "JSON object", id="options-array"),
        pytest.param([ANY_JOB, "[]", "--in", "nan"], "--in", id="in-nan"),
        pytest.param([ANY_JOB, "[]", "--in", "inf"], "--in", id="in-inf"),
    ],
)
def test_bad_push_is_one_line_and_stores_nothing(
    db: Workspace, args: list[str], needle: str
) -> None:
    line = one_error_line(db.queue_cli("push", *args), 2)
    assert needle in line, line
    assert db_rows(db.db, "SELECT count(*) FROM jobs") == [(0,)]


def test_unknown_job_hints_at_the_missing_import(ws: Workspace) -> None:
    SqliteStore.create_schema(ws.db)
    result = ws.queue_cli("push", "examples.jobs.SendEmail", '[1, "x"]')
    line = one_error_line(result, 2)
    assert "--import examples.jobs" in line


@pytest.mark.parametrize(
    "command",
    [["push", ANY_JOB, "[]"], ["stats"], ["list"], ["retry", "1"]],
    ids=lambda c: c[0],
)
def test_missing_database_is_exit_1_and_not_created(ws: Workspace, command: list[str]) -> None:
    line = one_error_line(ws.queue_cli(*command), 1)
    assert "does not exist" in line
    assert str(ws.db) in line
    assert not ws.db.exists()
    assert sorted(os.listdir(ws.root)) == []


@pytest.mark.parametrize(
    "command",
    [["push", ANY_JOB, "[]"], ["stats"], ["list"], ["retry", "1"]],
    ids=lambda c: c[0],
)
def test_corrupt_database_is_exit_1_and_untouched(ws: Workspace, command: list[str]) -> None:
    garbage = os.urandom(16384)
    ws.db.write_bytes(garbage)
    line = one_error_line(ws.queue_cli(*command), 1)
    assert "not a usable SQLite database" in line
    assert ws.db.read_bytes() == garbage
    assert sorted(os.listdir(ws.root)) == ["q.db"]  # no -wal/-shm left beside it


def test_environment_fallback_for_the_database(db: Workspace) -> None:
    result = db.queue_cli("push", ANY_JOB, "[]", db=False, env={"QUEUE_DB_PATH": str(db.db)})
    assert result.returncode == 0, result.stderr
    assert db_rows(db.db, "SELECT id FROM jobs") == [(int(result.stdout),)]


def test_workers_lists_each_process_live_then_stopped(ws: Workspace) -> None:
    """Two supervisors' worker 1 would share an index; each process has its own owner row."""
    proc = ws.worker("--workers", "1", "--worker-index", "1")
    proc.wait_log("worker 1 started")

    def rows() -> list[list[str]]:
        out = ws.queue_cli("workers")
        assert out.returncode == 0, out.stderr
        return [line.split() for line in out.stdout.splitlines()[1:]]

    (live,) = rows()
    assert live[:3] == ["1", "live", str(proc.pid)]
    assert live[-1].split(":")[1] == str(proc.pid)  # owner id: host:pid:token
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.stderr
    (stopped,) = rows()
    assert stopped[:3] == ["1", "stopped", str(proc.pid)]
