"""A wave-1 (schema version 1) queue database opens under this code with its rows intact."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from reference.records import JobStatus, NewSchedule
from reference.sqlite_store import SCHEMA_VERSION, SqliteStore

if TYPE_CHECKING:
    from pathlib import Path

# The jobs table exactly as schema version 1 created it.
V1_SCHEMA = (
    """CREATE TABLE jobs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        class_name  TEXT    NOT NULL,
        args        TEXT    NOT NULL,
        status      TEXT    NOT NULL
                    CHECK (status IN ('pending', 'running', 'done', 'failed')),
        created_at  REAL    NOT NULL,
        run_at      REAL    NOT NULL,
        locked_by   INTEGER,
        locked_at   REAL,
        lease_until REAL,
        finished_at REAL,
        options     TEXT    NOT NULL DEFAULT '{}',
        attempts    INTEGER NOT NULL DEFAULT 0,
        last_error  TEXT
    )""",
    "CREATE INDEX jobs_pending_due ON jobs (run_at, id) WHERE status = 'pending'",
    "CREATE INDEX jobs_running_lease ON jobs (lease_until) WHERE status = 'running'",
    "CREATE INDEX jobs_done_finished ON jobs (finished_at) WHERE status = 'done'",
    "PRAGMA user_version = 1",
)


def test_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    conn = sqlite3.connect(db)
    for statement in V1_SCHEMA:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO jobs (class_name, args, status, created_at, run_at, locked_by, attempts)"
        " VALUES ('app.Job', '[1]', 'running', 1.0, 1.0, 1, 1)"
    )
    conn.commit()
    conn.close()

    store = SqliteStore(db)
    try:
        row = store.get(1)
        assert row is not None
        assert (row.name, row.args, row.status, row.attempts) == (
            "app.Job",
            "[1]",
            JobStatus.RUNNING,
            1,
        )
        # The new column works: the left-over run (locked by an index, so ownerless now)
        # is recovered once its lease has ended, and counts as a crash.
        assert store.recover([], now=1e12) == 1
        assert store.get(1).status is JobStatus.PENDING  # type: ignore[union-attr]
    finally:
        store.close()
    check = sqlite3.connect(db)
    try:
        assert check.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert check.execute("SELECT crashes FROM jobs WHERE id = 1").fetchone() == (1,)
    finally:
        check.close()


def test_a_file_stamped_before_the_schedules_table_reads_empty_and_gets_it_at_sync(
    tmp_path: Path,
) -> None:
    """A current-version file made before `schedules` existed (the table is created with
    the schema, and again by the first sync, so such a file is never a crash)."""
    db = tmp_path / "q.db"
    SqliteStore.create_schema(db)
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE schedules")
    conn.commit()
    conn.close()
    store = SqliteStore(db)
    try:
        assert store.list_schedules() == []
        assert store.get_schedule("tick") is None
        assert not store.set_paused("tick", True)
        (row,) = store.sync_schedules([NewSchedule("tick", "every 5.0", 100.0, "a.B")], now=1.0)
        assert (row.name, row.next_fire) == ("tick", 100.0)
        assert store.set_paused("tick", True)
    finally:
        store.close()
