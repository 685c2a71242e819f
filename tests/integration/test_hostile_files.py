"""Files that are not queue databases are refused and left byte-identical (issue 12).

Found by a hostile tester: `stats`/`list` on a 0-byte file wrote a schema into it, and on
another application's SQLite file they added tables, changed `user_version` and switched it
to WAL; a worker pointed at such a file did the same. Now `SqliteStore.open_readonly` (what
`stats` and `list` use) opens with `mode=ro` and writes nothing, and every open identifies
the file before anything writes to it. Real SQLite files; CLI cases as real processes.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
from typing import TYPE_CHECKING

import pytest

from reference.errors import StoreCorruptError, StoreError
from reference.records import NewJob
from reference.sqlite_store import SqliteStore
from tests.integration.conftest import BOUND, JOBS, db_rows

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.integration.conftest import Workspace

OLD = 1_000_000_000  # a past mtime set on every fixture file, so any write shows


def _stamp(path: Path) -> tuple[str, int, int]:
    """(sha256, mtime_ns, size) of `path`: what must not change."""
    st = os.stat(path)
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_size


def _foreign(path: Path, *, version: int = 0, wal: bool = False, jobs: bool = False) -> None:
    """Another application's SQLite file: its own tables, rollback journal unless `wal`."""
    conn = sqlite3.connect(path)
    try:
        if wal:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
        if jobs:  # a `jobs` table of its own, nothing like ours
            conn.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, title TEXT)")
        conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
    finally:
        conn.close()


def _make_empty(path: Path) -> None:
    path.write_bytes(b"")


def _make_foreign(path: Path) -> None:
    _foreign(path)


def _make_foreign_version(path: Path) -> None:
    _foreign(path, version=7)


def _make_foreign_jobs(path: Path) -> None:
    _foreign(path, jobs=True)


def _make_foreign_jobs_v1(path: Path) -> None:
    _foreign(path, jobs=True, version=1)  # our version number, not our table


def _make_foreign_wal(path: Path) -> None:
    _foreign(path, wal=True)


NOT_OURS: dict[str, Callable[[Path], None]] = {
    "empty-file": _make_empty,
    "foreign-tables": _make_foreign,
    "foreign-user-version": _make_foreign_version,
    "foreign-jobs-table": _make_foreign_jobs,
    "foreign-jobs-table-v1": _make_foreign_jobs_v1,
    "foreign-wal": _make_foreign_wal,
}
# Files with tables: even the read-write (worker) open must refuse them.
HAS_TABLES = [k for k in NOT_OURS if k != "empty-file"]


def _prepare(tmp_path: Path, kind: str) -> tuple[Path, tuple[str, int, int], list[str]]:
    path = tmp_path / "app.db"
    NOT_OURS[kind](path)
    os.utime(path, ns=(OLD * 10**9, OLD * 10**9))
    return path, _stamp(path), sorted(os.listdir(tmp_path))


@pytest.mark.parametrize("kind", list(NOT_OURS))
def test_open_readonly_refuses_and_writes_nothing(tmp_path: Path, kind: str) -> None:
    path, before, listing = _prepare(tmp_path, kind)
    with pytest.raises(StoreCorruptError, match="not a queue database") as info:
        SqliteStore.open_readonly(path)
    assert str(path) in str(info.value)
    assert _stamp(path) == before
    if kind != "foreign-wal":  # reading a WAL file at all makes SQLite open -wal/-shm
        assert sorted(os.listdir(tmp_path)) == listing


@pytest.mark.parametrize("kind", HAS_TABLES)
@pytest.mark.parametrize("opener", ["worker", "create_schema", "open_existing"])
def test_read_write_open_refuses_another_applications_file(
    tmp_path: Path, kind: str, opener: str
) -> None:
    path, before, listing = _prepare(tmp_path, kind)
    open_it: Callable[[Path], object] = {
        "worker": SqliteStore,
        "create_schema": SqliteStore.create_schema,
        "open_existing": SqliteStore.open_existing,
    }[opener]
    with pytest.raises(StoreCorruptError, match="not a queue database"):
        open_it(path)
    assert _stamp(path) == before
    if kind != "foreign-wal":
        assert sorted(os.listdir(tmp_path)) == listing
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:  # still the other application's file: its journal mode, version and tables
        expected_mode = "wal" if kind == "foreign-wal" else "delete"
        assert conn.execute("PRAGMA journal_mode").fetchone() == (expected_mode,)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "jobs_pending_due" not in names
    finally:
        conn.close()


def test_empty_file_is_initialised_by_a_worker_but_not_by_open_existing(
    tmp_path: Path,
) -> None:
    path, before, _ = _prepare(tmp_path, "empty-file")
    with pytest.raises(StoreCorruptError, match="not a queue database"):
        SqliteStore.open_existing(path)  # the CLI's push and retry
    assert _stamp(path) == before
    store = SqliteStore(path)  # a worker may initialise a brand-new (0-byte) file
    try:
        assert store.stats().pending == 0
    finally:
        store.close()


def test_readonly_store_reads_our_database_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    writer = SqliteStore(path)
    writer.enqueue(NewJob(name="app.Job", args="[]", options="{}", run_at=1.0, created_at=1.0))
    reader = SqliteStore.open_readonly(path)
    try:
        assert reader.stats().pending == 1
        writer.enqueue(NewJob(name="app.Job", args="[]", options="{}", run_at=2.0, created_at=2.0))
        assert [r.run_at for r in reader.list_jobs()] == [2.0, 1.0]  # sees a live writer
        with pytest.raises(StoreError, match="readonly"):
            reader.enqueue(NewJob(name="x", args="[]", options="{}", run_at=1.0, created_at=1.0))
    finally:
        reader.close()
        writer.close()


def test_readonly_open_of_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        SqliteStore.open_readonly(tmp_path / "typo.db")
    assert os.listdir(tmp_path) == []


# -- the CLI, as a real process ---------------------------------------------------------------


def _cli(ws: Workspace, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"QUEUE_DB_PATH": str(db)}
    return ws.queue_cli(*args, db=False, env=env)


def _one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(NOT_OURS))
@pytest.mark.parametrize(
    "command",
    [["stats"], ["list"], ["retry", "1"], ["push", f"{JOBS}.Record", "[]"]],
    ids=lambda c: c[0],
)
def test_cli_refuses_a_file_that_is_not_a_queue_database(
    ws: Workspace, kind: str, command: list[str]
) -> None:
    path, before, listing = _prepare(ws.root, kind)
    line = _one_line(_cli(ws, path, *command), 1)
    assert f"{str(path)!r}: not a queue database" in line
    assert _stamp(path) == before
    if kind != "foreign-wal":
        assert sorted(os.listdir(ws.root)) == listing


@pytest.mark.slow
def test_cli_stats_and_list_leave_a_queue_database_byte_identical(ws: Workspace) -> None:
    store = SqliteStore(ws.db)
    store.enqueue(NewJob(name="app.Job", args="[]", options="{}", run_at=1.0, created_at=1.0))
    store.close()
    os.utime(ws.db, ns=(OLD * 10**9, OLD * 10**9))
    before = _stamp(ws.db)
    for command in ("stats", "list"):
        result = _cli(ws, ws.db, command)
        assert result.returncode == 0, result.stderr
    assert _stamp(ws.db) == before
    assert db_rows(ws.db, "SELECT count(*) FROM jobs") == [(1,)]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["stats", "list", "retry"])
def test_cli_on_a_fifo_is_an_error_not_a_hang(ws: Workspace, command: str) -> None:
    fifo = ws.root / "q.db"
    os.mkfifo(fifo)
    args = [command, "1"] if command == "retry" else [command]
    try:
        result = _cli(ws, fifo, *args)
    except subprocess.TimeoutExpired:  # pragma: no cover - the old behaviour
        pytest.fail(f"`{command}` on a FIFO hung for {BOUND * 2:.0f} s")
    line = _one_line(result, 1)
    assert "is not a regular file" in line
