"""`python -m reference.queue` given hostile values, as a real process (issue 12).

Found by a hostile tester: `push --in 1e300` was stored and then killed every `list` and
`stats`; a 5,000-digit integer or 50,000-deep nesting in ARGS_JSON, `retry 2**70` and a
socket dir too long for AF_UNIX each printed a traceback. Every bad value is now one line on
stderr, exit 2, nothing stored; and rows another program wrote never kill a read.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import pytest

from tests.integration.conftest import JOBS, db_rows, one_error_line

if TYPE_CHECKING:
    from tests.integration.conftest import Workspace

pytestmark = pytest.mark.slow

ANY_JOB = f"{JOBS}.Anything"  # any arguments: these tests are about the CLI


def _count(ws: Workspace) -> int:
    ((n,),) = db_rows(ws.db, "SELECT count(*) FROM jobs")
    return int(str(n))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["--in", "1e300"], "--in", id="in-1e300"),
        pytest.param(["--in=-1e300"], "--in", id="in-minus-1e300"),
        pytest.param(["--in", "4e9"], "--in", id="in-127-years"),
        pytest.param(["--in", "1e999"], "--in", id="in-overflow-to-inf"),
        pytest.param(["--in", "soon"], "--in", id="in-word"),
        pytest.param(["--at", "9999-12-31T23:59:59"], "100 years", id="at-year-9999"),
        pytest.param(["--at", "0001-01-01T00:00:00"], "100 years", id="at-year-1"),
        pytest.param(["--at", "1800-01-01T00:00:00+00:00"], "100 years", id="at-1800"),
    ],
)
def test_push_time_out_of_range_is_one_line_and_stores_nothing(
    db: Workspace, args: list[str], needle: str
) -> None:
    line = one_error_line(db.queue_cli("push", ANY_JOB, "[]", *args))
    assert needle in line
    assert _count(db) == 0


def test_push_within_the_horizon_is_stored(db: Workspace) -> None:
    result = db.queue_cli("push", ANY_JOB, "[]", "--in", "3e9")  # 95 years
    assert result.returncode == 0, result.stderr
    assert _count(db) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["[" + "1" * 5000 + "]"], "too many digits", id="5000-digit-int"),
        pytest.param(["[" * 50_000 + "]" * 50_000], "nested too deeply", id="deep-50000"),
        pytest.param(["[]", "--options", "[" * 50_000 + "]" * 50_000], "--options", id="deep-opts"),
        pytest.param(
            ["[]", "--options", '{"retry": ' + "9" * 5000 + "}"], "--options", id="opts-int"
        ),
    ],
)
def test_hostile_json_is_one_line_and_stores_nothing(
    db: Workspace, args: list[str], needle: str
) -> None:
    line = one_error_line(db.queue_cli("push", ANY_JOB, *args))
    assert needle in line
    assert _count(db) == 0


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["retry", str(2**70)], id="retry-2**70"),
        pytest.param(["retry", str(2**63)], id="retry-2**63"),
        pytest.param(["retry", "0"], id="retry-0"),
        pytest.param(["retry", "-1"], id="retry-negative"),
        pytest.param(["retry", "9" * 5000], id="retry-5000-digits"),
        pytest.param(["retry", "one"], id="retry-word"),
        pytest.param(["list", "--limit", str(2**70)], id="limit-2**70"),
        pytest.param(["list", "--limit", "0"], id="limit-0"),
        pytest.param(["list", "--status", "x" * 5000], id="status-huge"),
        pytest.param(["--workers", "100000", "stats"], id="workers-huge"),
        pytest.param(["push"], id="push-without-job"),
        pytest.param(["frobnicate"], id="unknown-command"),
        pytest.param([], id="no-command"),
    ],
)
def test_bad_usage_is_one_line_exit_2(db: Workspace, args: list[str]) -> None:
    line = one_error_line(db.queue_cli(*args))
    assert "--help" in line


def test_largest_id_is_accepted(db: Workspace) -> None:
    line = one_error_line(db.queue_cli("retry", str(2**63 - 1)), 1)
    assert "does not exist" in line


def test_workers_from_the_environment_are_bounded_too(db: Workspace) -> None:
    line = one_error_line(db.queue_cli("stats", env={"BACKGROUND_FORKS": "100000000"}))
    assert "key 'workers': must be at most 4096" in line  # config's bound, for every command


def test_socket_dir_too_long_is_one_line_before_anything_is_stored(db: Workspace) -> None:
    long_dir = str(db.root / ("d" * 120))
    result = db.queue_cli("--socket-dir", long_dir, "push", ANY_JOB, "[]")
    line = one_error_line(result)
    assert "over the AF_UNIX limit of 107" in line
    assert "bytes" in line
    assert _count(db) == 0


def _insert_raw(ws: Workspace, rows: list[tuple[object, object, object]]) -> None:
    """Rows as another program might write them: (run_at, class_name, last_error)."""
    conn = sqlite3.connect(ws.db)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO jobs (class_name, args, status, created_at, run_at, last_error)"
                " VALUES (?, '[]', 'pending', 0, ?, ?)",
                [(name, run_at, error) for run_at, name, error in rows],
            )
    finally:
        conn.close()


def test_list_and_stats_survive_absurd_rows_written_by_other_code(db: Workspace) -> None:
    _insert_raw(
        db,
        [
            (1e300, ANY_JOB, None),
            (-1e300, ANY_JOB, None),
            (float("inf"), ANY_JOB, None),
            ("soon", ANY_JOB, None),  # REAL affinity keeps a non-numeric text as text
            (1.0, "evil\x1b[2J\x1b]0;pwned\x07", "boom\x1b[31m\nsecond line"),
            (2.0, ANY_JOB, b"\xff\xfe binary error"),
        ],
    )
    listed = db.queue_cli("list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr == ""
    _header, *lines = listed.stdout.splitlines()
    assert [int(line.split()[0]) for line in lines] == [6, 5, 4, 3, 2, 1]
    assert "epoch 1e+300" in lines[5]
    assert "\x1b" not in listed.stdout  # a job's text cannot drive the operator's terminal
    assert "\x07" not in listed.stdout
    stats = db.queue_cli("stats")
    assert stats.returncode == 0, stats.stderr
    assert stats.stderr == ""
    assert stats.stdout.splitlines()[0] == "pending  6"
    assert stats.stdout.splitlines()[4].startswith("oldest pending: ")
