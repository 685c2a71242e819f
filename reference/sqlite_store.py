"""`SqliteStore`: the production `Store`, one SQLite file in WAL mode shared by every worker.

Owns the `jobs` schema, every SQL statement, and the translation of driver errors into
`reference.errors` (`sqlite3.Error` never leaves this module). The only module that may import
`sqlite3`; it imports nothing above layer 1 and never reads a clock (times are bound from the
caller, and the schema has no time defaults).
"""

# Why every write goes through `SqliteStore._transaction` (the 0.6.1 fix)
# -----------------------------------------------------------------------
# Fetch must claim a job atomically across processes, so it runs as
#     BEGIN IMMEDIATE; UPDATE ... WHERE id IN (SELECT ... LIMIT ?) RETURNING ...; COMMIT
# on a connection with isolation_level=None (no implicit BEGINs from the driver).
# SQLite's error handling inside an explicit transaction is the trap. When a statement fails
# (a constraint, a function raising, "database is locked" on a page it needed), SQLite rolls
# back that *statement*, not the transaction. When Python code between statements fails (a
# bug, a KeyboardInterrupt, a cancelled task unwinding), nothing is rolled back at all. Either
# way the connection is left inside BEGIN IMMEDIATE still holding the RESERVED lock, and:
#   * its next fetch fails with "cannot start a transaction within a transaction", forever;
#   * single-statement writes (complete, enqueue) silently join the orphan transaction and
#     are never committed;
#   * every other connection gets "database is locked" after busy_timeout, so one bad fetch
#     in one worker stalls the whole fleet.
# That is the 0.6.0 bug. The fix is one rule in one place: on *any* exception (BaseException,
# so cancellation is covered too) roll back if `conn.in_transaction`, close the cursors in
# `finally`, then re-raise (translated). An *interrupt* fault would hide the bug because
# SQLite rolls an interrupted transaction back by itself, so the simulator injects
# statement-level errors instead: `fault_hook` sites between statements, and the
# `fault_point()` SQL function evaluated *inside* the fetch UPDATE.
# `_rollback_open_transaction` is a module-level function on purpose: `sim/mutants.py` swaps
# it for a no-op to bring the 0.6.0 behaviour back, and the simulator must catch it.
#
# Single-statement writes (enqueue, complete, fail, requeue_*, purge, retry, renew) run in
# autocommit: SQLite makes one statement atomic and rolls it back itself, so an explicit
# transaction would only add two round trips to the hot path.
#
# Waiting for the write lock: the store, not SQLite's busy handler
# -----------------------------------------------------------------
# `PRAGMA busy_timeout` makes SQLite sleep 1 ms, then 2, 5, 10, ... ms between attempts to
# take a lock another connection holds. A claim or a completion holds it for tens of
# microseconds, so two workers draining one queue spent most of their time asleep behind
# each other (`make bench`, W2 with two worker processes: 0.47x the bare-SQLite limit).
# The connection therefore runs with busy_timeout 0 and `_retry_locked` waits itself, from
# 20 µs doubling to 0.5 ms, until `busy_timeout_ms` of waiting is spent (then
# StoreLockedError, as before). It retries only the statement that takes the lock (BEGIN
# IMMEDIATE, an autocommit write, a read): a statement refused for SQLITE_BUSY never ran.
# The cap matters: with 1 ms a waiter still missed most gaps (W2 2x2 0.52x); with 0.5 ms
# it got 0.66-1.06x over five repetitions. A long writer (a big enqueue_many) costs a
# retry every 0.5 ms, a few µs each.

# Bounding the WAL: each writer checkpoints it itself
# ---------------------------------------------------
# SQLite restarts the WAL from its beginning only when a write transaction starts with every
# frame already copied back into the database. With the automatic checkpoint (a passive one
# after each commit past 1,000 pages) that moment never came while two workers took turns:
# the other worker's back-off had its next transaction open before the checkpoint ended, so
# the file grew without bound (376 MiB draining 200,000 jobs, `make bench` --workloads wal).
# So automatic checkpoints are off, and after each committed write the store looks at the
# `-wal` file's size every WAL_CHECK_EVERY commits (one stat); past WAL_CHECKPOINT_BYTES it runs
# `wal_checkpoint(TRUNCATE)`, which waits up to CHECKPOINT_WAIT_MS for the other writers and
# otherwise copies what it can, passively; the next write tries again. Every writer is a
# SqliteStore, producers included, so whoever writes keeps it bounded. A failed checkpoint
# is housekeeping, never the write's failure: the write had already committed.

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import urllib.parse
from typing import TYPE_CHECKING, Any, Final, TypeVar

from reference.clock import block_for
from reference.errors import StoreCorruptError, StoreError, StoreLockedError, StoreUnusableError
from reference.options import DEFAULT_MAX_CRASHES  # for rows stored without the option
from reference.records import (
    JobRow,
    JobStatus,
    LogEvent,
    ScheduleRow,
    Settlement,
    StoreStats,
    WorkerRow,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from reference.records import NewJob, NewSchedule

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# 1: wave 1's jobs table. 2: `crashes` (runs that ended with their worker's death).
# 3: the `workers` table (each worker process's owner id and heartbeat).
# 4: `jobs.locked_by` holds the owner id (text) instead of the worker index; recovery is by
#    owner. A v3 file keeps its INTEGER-declared column (SQLite stores the text ids in it
#    as text); its rows still running under an index fall back to their leases.
SCHEMA_VERSION: Final = 4
MMAP_SIZE: Final = 256 * 1024 * 1024
DEFAULT_BUSY_TIMEOUT_MS: Final = 5000
LOCK_WAIT_FIRST: Final = 20e-6  # seconds: the first back-off while another writer holds the lock
LOCK_WAIT_MAX: Final = 0.5e-3
# The WAL is checkpointed back and truncated by the writer that finds it past this size
# (see "Bounding the WAL" above); the checkpoint may wait this long for the other writers.
WAL_CHECKPOINT_BYTES: Final = 16 * 1024 * 1024
CHECKPOINT_WAIT_MS: Final = 50
WAL_CHECK_EVERY: Final = 32  # commits between two looks at the -wal file's size

# One row per schedule entry, fired by compare-and-set on next_fire (`claim_fire`).
_SCHEDULES_TABLE: Final = """CREATE TABLE IF NOT EXISTS schedules (
        name       TEXT    PRIMARY KEY,
        spec       TEXT    NOT NULL,
        next_fire  REAL,
        last_fire  REAL,
        paused     INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
        fires      INTEGER NOT NULL DEFAULT 0,
        skips      INTEGER NOT NULL DEFAULT 0,
        class_name TEXT    NOT NULL,
        args       TEXT    NOT NULL DEFAULT '[]',
        queue      TEXT    NOT NULL DEFAULT 'default',
        priority   INTEGER NOT NULL DEFAULT 0,
        synced_at  REAL    NOT NULL
    )"""

# AUTOINCREMENT: ids are handles users keep (`queue retry ID`), so an id freed by purge must
# never name a different job later; plain INTEGER PRIMARY KEY would reuse the highest id.
_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS jobs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        class_name  TEXT    NOT NULL,
        args        TEXT    NOT NULL,
        status      TEXT    NOT NULL
                    CHECK (status IN ('pending', 'running', 'done', 'failed')),
        created_at  REAL    NOT NULL,
        run_at      REAL    NOT NULL,
        locked_by   TEXT,
        locked_at   REAL,
        lease_until REAL,
        finished_at REAL,
        options     TEXT    NOT NULL DEFAULT '{}',
        attempts    INTEGER NOT NULL DEFAULT 0,
        last_error  TEXT,
        crashes     INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS jobs_pending_due ON jobs (run_at, id) WHERE status = 'pending'",
    """CREATE TABLE IF NOT EXISTS workers (
        owner        TEXT    PRIMARY KEY,
        host         TEXT    NOT NULL,
        pid          INTEGER NOT NULL,
        idx          INTEGER NOT NULL,
        queues       TEXT    NOT NULL DEFAULT '*',
        started_at   REAL    NOT NULL,
        heartbeat_at REAL    NOT NULL,
        stopped_at   REAL
    )""",
    "CREATE INDEX IF NOT EXISTS jobs_running_lease ON jobs (lease_until) WHERE status = 'running'",
    "CREATE INDEX IF NOT EXISTS jobs_done_finished ON jobs (finished_at) WHERE status = 'done'",
    _SCHEDULES_TABLE,
)

_COLUMNS: Final = (
    "id, class_name, args, options, status, run_at, created_at, attempts,"
    " locked_by, locked_at, lease_until, finished_at, last_error"
)
_INSERT: Final = (
    "INSERT INTO jobs (class_name, args, options, status, created_at, run_at)"
    " VALUES (?, ?, ?, 'pending', ?, ?)"
)
_CLAIM: Final = (
    "UPDATE jobs SET status = 'running', locked_by = ?, locked_at = ?, lease_until = ?,"
    " attempts = attempts + 1"
    " WHERE id IN (SELECT id FROM jobs WHERE status = 'pending' AND run_at <= ?"
    " ORDER BY run_at, id LIMIT ?){fault} RETURNING " + _COLUMNS
)
# Outcomes are fenced by owner and attempt: only the run that holds the claim records it.
_FENCE: Final = " WHERE id = ? AND status = 'running' AND attempts = ? AND locked_by = ?"
# A success clears the error an earlier attempt left: a done job has no last_error.
_COMPLETE: Final = (
    "UPDATE jobs SET status = 'done', finished_at = ?, lease_until = NULL, last_error = NULL"
    + _FENCE
)
_FAIL_RETRY: Final = (
    "UPDATE jobs SET status = 'pending', run_at = ?, last_error = ?,"
    " locked_by = NULL, locked_at = NULL, lease_until = NULL" + _FENCE
)
_FAIL_FINAL: Final = (
    "UPDATE jobs SET status = 'failed', finished_at = ?, last_error = ?, lease_until = NULL"
    + _FENCE
)
# Re-queue runs whose owner died (judged dead by a peer, or ownerless with an expired
# lease). Such a run counts as a crash; a job whose runs took down `max_crashes` workers
# ends `failed` so the queue behind it keeps draining (a poison job that os._exit()s or
# segfaults its worker would otherwise be claimed first by every restart, forever). SET
# expressions all read the row as it was before the update.
_CRASHED: Final = (
    f"crashes + 1 >= coalesce(json_extract(options, '$.max_crashes'), {DEFAULT_MAX_CRASHES})"
)
_REQUEUE: Final = (
    "UPDATE jobs SET crashes = crashes + 1,"
    f" status = CASE WHEN {_CRASHED} THEN 'failed' ELSE 'pending' END,"
    f" finished_at = CASE WHEN {_CRASHED} THEN ? END,"
    f" last_error = CASE WHEN {_CRASHED} THEN printf('WorkerLostError: the worker running"
    " this job died during %d of its runs (max_crashes)', crashes + 1) ELSE last_error END,"
    " locked_by = NULL, locked_at = NULL, lease_until = NULL"
    " WHERE status = 'running' AND "
)
# Whose runs `recover` re-queues: the owners judged dead (a JSON array), and any run with an
# expired (or no) lease whose owner has no live row (a v3 row locked by an index, a purged
# owner).
_DEAD_RUNS: Final = (
    "(locked_by IN (SELECT value FROM json_each(?)) OR (coalesce(lease_until, 0) < ?"
    " AND locked_by NOT IN (SELECT owner FROM workers WHERE stopped_at IS NULL)))"
)
# A graceful stop gives back what its owner still holds: no crash, attempts kept (they only
# grow, which is what fences a late outcome of the released run).
_RELEASE: Final = (
    "UPDATE jobs SET status = 'pending', locked_by = NULL, locked_at = NULL, lease_until = NULL"
    " WHERE status = 'running' AND locked_by = ?"
)
_STATS: Final = (
    "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'running'),"
    " count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'failed'),"
    " (SELECT min(run_at) FROM jobs WHERE status = 'pending') FROM jobs"
)

_STATUS: Final = {s.value: s for s in JobStatus}
_LOCKED_CODES: Final = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_CORRUPT_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
# The SPEC's columns: a file whose `jobs` table lacks one is not a queue database.
_QUEUE_COLUMNS: Final = frozenset(
    {
        *("id", "class_name", "args", "status", "created_at", "run_at"),
        *("locked_by", "locked_at", "options", "attempts", "last_error"),
    }
)


def _default_connect(path: str, *, check_same_thread: bool = True) -> sqlite3.Connection:
    return sqlite3.connect(
        path, isolation_level=None, cached_statements=64, check_same_thread=check_same_thread
    )


def _readonly_connect(path: str, *, check_same_thread: bool) -> sqlite3.Connection:
    """Connect with `mode=ro`: SQLite itself refuses every write, the schema's included."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    return sqlite3.connect(
        uri,
        uri=True,
        isolation_level=None,
        cached_statements=64,
        check_same_thread=check_same_thread,
    )


def _check_regular_file(path: str) -> None:
    """Refuse a FIFO, device or directory: opening one can block or read forever."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return  # a new database; SQLite creates it
    except OSError as exc:
        raise StoreError(f"queue database {path!r}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise StoreError(f"queue database {path!r} is not a regular file")


def _inspect(conn: sqlite3.Connection) -> tuple[int, int, frozenset[str]]:
    """(user_version, schema object count, jobs columns) read without writing anything."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    (objects,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    rows = conn.execute("SELECT name FROM pragma_table_info('jobs')").fetchall()
    return int(version), int(objects), frozenset(str(r[0]) for r in rows)


def _file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`; None for `:memory:` or a missing file."""
    if path == ":memory:":
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _rollback_open_transaction(conn: sqlite3.Connection) -> None:
    """Roll back `conn` if a failed write left it inside a transaction (the 0.6.1 fix)."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _is_locked(exc: sqlite3.Error) -> bool:
    """True for SQLITE_BUSY / SQLITE_LOCKED: another connection holds a lock we need."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    return primary in _LOCKED_CODES or "database is locked" in str(exc)


def _settle_one(conn: sqlite3.Connection, owner: str, s: Settlement, now: float) -> bool:
    """Record one run's outcome inside the caller's transaction; False if superseded."""
    if s.error is None:
        cur = conn.execute(_COMPLETE, (now, s.job_id, s.attempt, owner))
    elif s.retry_at is not None:
        cur = conn.execute(_FAIL_RETRY, (s.retry_at, s.error, s.job_id, s.attempt, owner))
    else:
        cur = conn.execute(_FAIL_FINAL, (now, s.error, s.job_id, s.attempt, owner))
    return cur.rowcount == 1


def _row(r: tuple[Any, ...]) -> JobRow:
    return JobRow(
        r[0], r[1], r[2], r[3], _STATUS[r[4]], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12]
    )


class SqliteStore:
    """A `Store` over one SQLite file; one instance owns one connection.

    Args:
        path: the database file; its directory must exist.
        mmap: memory-map up to 256 MiB of the file (SPEC default on).
        busy_timeout_ms: how long a write waits for another connection's lock.
        connect: connection factory (the simulator's seam); must return a new connection.
        fault_hook: called at named sites ("fetch.after_begin", "fetch.statement" inside the
            fetch UPDATE, "fetch.before_commit", "enqueue", "heartbeat", ...); whatever it
            raises aborts the operation. None in production, which then runs plain SQL.
        create: when False, refuse a missing or empty file instead of creating the schema.
        readonly: open with `mode=ro` and change nothing: no pragma that writes, no schema;
            the file must already be a queue database (`stats`, `list`). Implies
            `create=False`; `connect` is not used.
        check_same_thread: False lets other threads use the connection; the caller must
            then serialise calls (the producer does, for sync jobs that enqueue).

    Raises:
        StoreError: missing directory or file, or not a regular file.
        StoreCorruptError: not a SQLite database, or a SQLite database that is not a queue
            database (another application's file is refused, never given our schema).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mmap: bool = True,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        connect: Callable[[str], sqlite3.Connection] | None = None,
        fault_hook: Callable[[str], None] | None = None,
        create: bool = True,
        check_same_thread: bool = True,
        readonly: bool = False,
    ) -> None:
        self._path = os.fspath(path)
        self._mmap = mmap
        self._readonly = readonly
        self._create = create and not readonly
        self._busy_timeout_ms = busy_timeout_ms
        self._fault_hook = fault_hook
        self._closed = False
        self._statement_fault: BaseException | None = None
        if self._path != ":memory:":
            parent = os.path.dirname(os.path.abspath(self._path))
            if not os.path.isdir(parent):
                raise StoreError(
                    f"queue database {self._path!r}: directory {parent!r} does not exist"
                )
            if not self._create and not os.path.exists(self._path):
                raise StoreError(f"queue database {self._path!r} does not exist")
            _check_regular_file(self._path)
        # Which file this store opened: `verify` notices the path later naming another one.
        self._identity = _file_identity(self._path)
        self._wal_path: str | None = None  # set by _setup for a writable WAL database
        self._commits = 0
        self._claim_sql = _CLAIM.format(
            fault=" AND fault_point('fetch.statement')" if fault_hook else ""
        )
        try:
            if readonly:
                self._conn = _readonly_connect(self._path, check_same_thread=check_same_thread)
            elif connect is not None:
                self._conn = connect(self._path)
            else:
                self._conn = _default_connect(self._path, check_same_thread=check_same_thread)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        try:
            self._setup()
        except sqlite3.Error as exc:
            self._conn.close()
            raise self._translate(exc) from exc
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def open_existing(cls, path: str | os.PathLike[str], **kwargs: Any) -> SqliteStore:
        """Open a database that must already exist (the CLI's guard against a typo'd path)."""
        return cls(path, create=False, **kwargs)

    @classmethod
    def open_readonly(cls, path: str | os.PathLike[str], **kwargs: Any) -> SqliteStore:
        """Open an existing queue database for reading only; the file is never written."""
        return cls(path, readonly=True, **kwargs)

    @classmethod
    def create_schema(cls, path: str | os.PathLike[str]) -> None:
        """Create the database and schema, then close: no connection survives into a fork."""
        cls(path).close()

    def _setup(self) -> None:
        conn = self._conn
        conn.isolation_level = None  # a custom factory may not have set it
        conn.execute("PRAGMA busy_timeout = 0")  # lock waits are _retry_locked's
        # Identify the file before anything writes to it: `PRAGMA journal_mode = WAL` alone
        # rewrites another application's header, and the schema would add our tables to it.
        version, objects, columns = self._retry_locked(_inspect, conn)
        empty = version == 0 and objects == 0
        if not empty:
            self._check_queue_database(version, columns)
        elif not self._create:
            raise self._not_a_queue_database("an empty database")
        if self._readonly:
            conn.execute("PRAGMA query_only = 1")  # mode=ro already; belt and braces
            conn.execute(f"PRAGMA mmap_size = {MMAP_SIZE if self._mmap else 0}").fetchall()
            return
        self._retry_locked(conn.execute, "PRAGMA journal_mode = WAL").fetchall()
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # _after_commit checkpoints instead
        self._wal_path = None if self._path == ":memory:" else self._path + "-wal"
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA mmap_size = {MMAP_SIZE if self._mmap else 0}").fetchall()
        if self._fault_hook is not None:
            conn.create_function("fault_point", 1, self._fault_point)
        if version == SCHEMA_VERSION:
            return
        self._transaction(self._create_tables, "schema")

    def _check_queue_database(self, version: int, columns: frozenset[str]) -> None:
        """Raise unless a non-empty file holds our `jobs` table at a version we can use."""
        if not columns:
            raise self._not_a_queue_database(f"no jobs table, user_version {version}")
        missing = _QUEUE_COLUMNS - columns
        if missing:
            raise self._not_a_queue_database(f"its jobs table lacks {', '.join(sorted(missing))}")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"queue database {self._path!r} has schema version {version}, newer than"
                f" this code's {SCHEMA_VERSION}"
            )
        if version < 1:
            # Every release stamped user_version with the schema; a jobs table without one
            # belongs to some other application.
            raise self._not_a_queue_database(f"a jobs table but user_version {version}")

    def _not_a_queue_database(self, why: str) -> StoreCorruptError:
        return StoreCorruptError(f"{self._path!r}: not a queue database ({why})")

    @staticmethod
    def _create_tables(conn: sqlite3.Connection) -> None:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == 1:  # a wave-1 database: its rows keep their ids and states
            conn.execute("ALTER TABLE jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _fault_point(self, site: str) -> int:
        if self._fault_hook is not None:
            try:
                self._fault_hook(site)
            except BaseException as exc:
                # SQLite reduces it to "user-defined function raised exception"; keep the
                # original so the caller (and the simulator's trace) sees what was injected.
                self._statement_fault = exc
                raise
        return 1

    def _retry_locked(self, run: Callable[..., _T], *args: Any) -> _T:
        """`run(*args)`, retried while the database is locked, for up to busy_timeout_ms."""
        budget = self._busy_timeout_ms / 1000
        delay = LOCK_WAIT_FIRST
        while True:
            try:
                return run(*args)
            except sqlite3.OperationalError as exc:
                if budget <= 0 or not _is_locked(exc):
                    raise
            wait = min(delay, budget)
            block_for(wait)
            budget -= wait
            delay = min(delay * 2, LOCK_WAIT_MAX)

    def _translate(self, exc: sqlite3.Error) -> StoreError:
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        text = str(exc)
        if _is_locked(exc):
            return StoreLockedError(
                f"queue database {self._path!r} is locked: another connection held the write"
                f" lock longer than busy_timeout ({self._busy_timeout_ms} ms)"
            )
        if primary in _CORRUPT_CODES or "not a database" in text or "malformed" in text:
            return StoreCorruptError(
                f"queue database {self._path!r} is not a usable SQLite database: {text}"
            )
        if isinstance(exc, sqlite3.ProgrammingError) and self._closed:
            return StoreError(f"queue database {self._path!r}: store is closed")
        return StoreError(f"queue database {self._path!r}: {text}")

    def _transaction(self, body: Callable[..., _T], site: str, *args: Any) -> _T:
        """Run `body(conn, *args)` inside BEGIN IMMEDIATE ... COMMIT; roll back on any error."""
        conn = self._conn
        hook = self._fault_hook
        try:
            self._retry_locked(conn.execute, "BEGIN IMMEDIATE")
            if hook is not None:
                hook(site + ".after_begin")
            result = body(conn, *args)
            if hook is not None:
                hook(site + ".before_commit")
            conn.execute("COMMIT")
            self._after_commit()
            return result
        except BaseException as exc:
            try:
                _rollback_open_transaction(conn)
            except sqlite3.Error as rollback_exc:
                # Keep the original error; the next BEGIN will report the stuck state.
                logger.warning(
                    "rollback after a failed write on %s failed: %s",
                    self._path,
                    rollback_exc,
                    extra={"event": LogEvent.STORE_ERROR},
                )
            fault, self._statement_fault = self._statement_fault, None
            if fault is not None:
                if isinstance(fault, sqlite3.Error):
                    raise self._translate(fault) from fault
                raise fault from exc
            if isinstance(exc, sqlite3.Error):
                raise self._translate(exc) from exc
            raise

    def _write(self, site: str, sql: str, params: tuple[Any, ...]) -> int:
        """Run one autocommit write statement; return the number of rows it changed."""
        try:
            if self._fault_hook is not None:
                self._fault_hook(site)
            changed = self._retry_locked(self._conn.execute, sql, params).rowcount
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        self._after_commit()
        return changed

    def _after_commit(self) -> None:
        """Checkpoint and truncate the WAL once it is past WAL_CHECKPOINT_BYTES."""
        wal = self._wal_path
        self._commits += 1
        if wal is None or self._commits % WAL_CHECK_EVERY:
            return
        try:
            if os.stat(wal).st_size <= WAL_CHECKPOINT_BYTES:
                return
        except OSError:
            return
        conn = self._conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_WAIT_MS}")
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            logger.debug(
                "WAL checkpoint on %s did not finish: %s (the next write tries again)",
                self._path,
                exc,
                extra={"event": LogEvent.STORE_ERROR},
            )

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._retry_locked(self._conn.execute, sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    # -- writes -----------------------------------------------------------------------------

    def enqueue(self, job: NewJob) -> int:
        """Insert one pending job; return its id."""
        try:
            if self._fault_hook is not None:
                self._fault_hook("enqueue")
            rowid = self._retry_locked(
                self._conn.execute,
                _INSERT,
                (job.name, job.args, job.options, job.created_at, job.run_at),
            ).lastrowid
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        assert rowid is not None  # an INSERT that succeeded always has one
        self._after_commit()
        return rowid

    @staticmethod
    def _insert_all(conn: sqlite3.Connection, jobs: Sequence[NewJob]) -> list[int]:
        ids: list[int] = []
        for job in jobs:
            rowid = conn.execute(
                _INSERT, (job.name, job.args, job.options, job.created_at, job.run_at)
            ).lastrowid
            assert rowid is not None
            ids.append(rowid)
        return ids

    def enqueue_many(self, jobs: Sequence[NewJob]) -> list[int]:
        """Insert many pending jobs in one transaction; return their ids in order."""
        if not jobs:
            return []
        return self._transaction(self._insert_all, "enqueue_many", jobs)

    def _claim(
        self, conn: sqlite3.Connection, owner: str, now: float, lease: float, limit: int
    ) -> list[JobRow]:
        cur = conn.execute(self._claim_sql, (owner, now, now + lease, now, limit))
        try:
            rows = cur.fetchall()
        finally:
            cur.close()
        if len(rows) > 1:
            # RETURNING order is unspecified; the contract is (run_at, id).
            rows.sort(key=lambda r: (r[5], r[0]))
        return [_row(r) for r in rows]

    def claim(
        self,
        owner: str,
        *,
        now: float,
        lease: float,
        limit: int,
        settle: Sequence[Settlement] = (),
    ) -> tuple[list[bool], list[JobRow]]:
        """Record `owner`'s finished runs, then claim up to `limit` due jobs, atomically."""
        if not settle and not limit:
            return [], []
        return self._transaction(self._settle_then_claim, "fetch", owner, now, lease, limit, settle)

    def _settle_then_claim(
        self,
        conn: sqlite3.Connection,
        owner: str,
        now: float,
        lease: float,
        limit: int,
        settle: Sequence[Settlement],
    ) -> tuple[list[bool], list[JobRow]]:
        recorded = [_settle_one(conn, owner, s, now) for s in settle]
        return recorded, (self._claim(conn, owner, now, lease, limit) if limit else [])

    def heartbeat(
        self, owner: str, *, now: float, renew: Sequence[int] = (), lease_until: float = 0.0
    ) -> bool:
        """Say `owner` is alive at `now` and extend the leases of its running jobs `renew`."""
        alive = (
            self._write(
                "heartbeat",
                "UPDATE workers SET heartbeat_at = ? WHERE owner = ? AND stopped_at IS NULL",
                (now, owner),
            )
            == 1
        )
        if alive and renew:
            self._write(
                "renew",
                "UPDATE jobs SET lease_until = ? WHERE status = 'running' AND locked_by = ?"
                " AND id IN (SELECT value FROM json_each(?))",
                (lease_until, owner, json.dumps(list(renew))),
            )
        return alive

    def recover(self, dead: Sequence[str], *, now: float) -> int:
        """Re-queue the running jobs of `dead` owners (and ownerless expired leases)."""
        return self._transaction(self._recover, "recover", json.dumps(list(dead)), now)

    @staticmethod
    def _recover(conn: sqlite3.Connection, dead: str, now: float) -> int:
        conn.execute(
            "UPDATE workers SET stopped_at = ? WHERE stopped_at IS NULL"
            " AND owner IN (SELECT value FROM json_each(?))",
            (now, dead),
        )
        requeued: int = conn.execute(_REQUEUE + _DEAD_RUNS, (now, dead, now)).rowcount
        return requeued

    def stop_worker(self, owner: str, *, now: float) -> int:
        """A graceful stop: release what `owner` still runs (no crash counted), mark it stopped."""
        return self._transaction(self._stop_worker, "stop", owner, now)

    @staticmethod
    def _stop_worker(conn: sqlite3.Connection, owner: str, now: float) -> int:
        released: int = conn.execute(_RELEASE, (owner,)).rowcount
        conn.execute("UPDATE workers SET stopped_at = ? WHERE owner = ?", (now, owner))
        return released

    def purge(self, *, done_before: float, workers_before: float) -> int:
        """Delete done jobs finished before `done_before`, workers gone before `workers_before`."""
        purged = self._write(
            "purge", "DELETE FROM jobs WHERE status = 'done' AND finished_at < ?", (done_before,)
        )
        self._write(
            "purge",
            "DELETE FROM workers WHERE coalesce(stopped_at, heartbeat_at) < ?",
            (workers_before,),
        )
        return purged

    def retry(self, job_id: int, *, now: float) -> bool:
        """Re-queue a failed job at `now`, `attempts` and `crashes` reset: a full budget again.

        `last_error` is kept until the next run records its own outcome.
        """
        return (
            self._write(
                "retry",
                "UPDATE jobs SET status = 'pending', run_at = ?, attempts = 0, crashes = 0,"
                " locked_by = NULL, locked_at = NULL, lease_until = NULL, finished_at = NULL"
                " WHERE id = ? AND status = 'failed'",
                (now, job_id),
            )
            == 1
        )

    def verify(self) -> None:
        """Check that the path still names the file this store opened, and that it answers.

        SQLite keeps working on a file deleted or replaced under it (the connection holds
        the old inode), so without this a worker would serve jobs nobody can enqueue into.

        Raises:
            StoreUnusableError: the file was deleted or replaced.
            StoreError: the database does not answer a read.
        """
        if self._identity is not None and _file_identity(self._path) != self._identity:
            raise StoreUnusableError(
                f"queue database {self._path!r} was deleted or replaced while this worker had"
                " it open; restart the workers on the database the producers use"
            )
        self._read("SELECT 1 FROM jobs LIMIT 0")

    # -- workers ----------------------------------------------------------------------------

    def register_worker(self, worker: WorkerRow) -> None:
        """Record a worker process that starts serving (its owner id is new)."""
        self._write(
            "worker",
            "INSERT OR REPLACE INTO workers (owner, host, pid, idx, queues, started_at,"
            " heartbeat_at, stopped_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
            (
                worker.owner,
                worker.host,
                worker.pid,
                worker.index,
                worker.queues,
                worker.started_at,
                worker.heartbeat_at,
            ),
        )

    def list_workers(self) -> list[WorkerRow]:
        """Every worker row, newest start first."""
        rows = self._read(
            "SELECT owner, host, pid, idx, queues, started_at, heartbeat_at, stopped_at"
            " FROM workers ORDER BY started_at DESC, owner"
        )
        return [WorkerRow(*r) for r in rows]

    # -- schedules --------------------------------------------------------------------------
    # The `ScheduleStore` side. Each tick is claimed by one UPDATE whose WHERE holds the
    # next_fire value the caller read (`_CLAIM_FIRE`): SQLite runs writes one at a time,
    # so of all the workers that read one value exactly one sees its UPDATE change a row.

    def sync_schedules(self, entries: Sequence[NewSchedule], *, now: float) -> list[ScheduleRow]:
        """Insert missing rows and refresh the others in one transaction; return the rows.

        A row whose `spec` is unchanged keeps `next_fire`, `last_fire`, `paused` and its
        counts (cadence survives restarts); a changed spec takes the entry's `next_fire`.
        Class, args, queue and priority always take the entry's; `synced_at` is `now`.
        Rows come back in the order of `entries`. Rows of names not given are left alone.
        """
        return self._transaction(self._sync_schedules, "schedules", entries, now)

    @staticmethod
    def _sync_schedules(
        conn: sqlite3.Connection, entries: Sequence[NewSchedule], now: float
    ) -> list[ScheduleRow]:
        # A file stamped with the current schema version before the table existed gets it
        # here (CREATE ... IF NOT EXISTS is a no-op otherwise).
        conn.execute(_SCHEDULES_TABLE)
        conn.executemany(
            _SYNC_SCHEDULE,
            [
                (e.name, e.spec, e.next_fire, e.class_name, e.args, e.queue, e.priority, now)
                for e in entries
            ],
        )
        rows = {
            r[0]: _schedule_row(r)
            for r in conn.execute(f"SELECT {_SCHEDULE_COLUMNS} FROM schedules")
        }
        return [rows[e.name] for e in entries]

    def claim_fire(
        self, name: str, *, expected: float, next_fire: float | None, fired_at: float | None
    ) -> bool:
        """Claim the tick at `expected`: move `next_fire` from `expected` to `next_fire`.

        True for exactly one caller per value of `expected`; False if another worker moved
        it first, the entry is paused, or has no row. `fired_at` is the fire's time (it
        becomes `last_fire`, `fires` + 1); None records a skip (`skips` + 1, `last_fire`
        kept). `next_fire` None retires the entry (no fire time left).
        """
        return self._write("schedule", _CLAIM_FIRE, (next_fire, fired_at, name, expected)) == 1

    def get_schedule(self, name: str) -> ScheduleRow | None:
        """One entry's row, or None if it has none."""
        rows = self._schedule_rows(" WHERE name = ?", (name,))
        return rows[0] if rows else None

    def list_schedules(self) -> list[ScheduleRow]:
        """Every row, by name (an empty list if the table does not exist yet)."""
        return self._schedule_rows(" ORDER BY name", ())

    def set_paused(self, name: str, paused: bool) -> bool:
        """Pause (no tick is claimed) or resume an entry; False if it has no row."""
        try:
            sql = "UPDATE schedules SET paused = ? WHERE name = ?"
            return self._write("schedule", sql, (int(paused), name)) == 1
        except StoreError as exc:
            if _no_schedules_table(exc):
                return False  # no worker with a schedule has opened this file yet
            raise

    def _schedule_rows(self, where: str, params: tuple[Any, ...]) -> list[ScheduleRow]:
        try:
            rows = self._read(f"SELECT {_SCHEDULE_COLUMNS} FROM schedules{where}", params)
        except StoreError as exc:
            if _no_schedules_table(exc):
                return []  # no worker with a schedule has opened this file yet
            raise
        return [_schedule_row(r) for r in rows]

    # -- reads ------------------------------------------------------------------------------

    def next_run_at(self) -> float | None:
        """The earliest `run_at` among pending jobs, or None if none is pending."""
        value: float | None = self._read("SELECT min(run_at) FROM jobs WHERE status = 'pending'")[
            0
        ][0]
        return value

    def get(self, job_id: int) -> JobRow | None:
        """One job by id."""
        rows = self._read(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _row(rows[0]) if rows else None

    def list_jobs(self, status: JobStatus | None = None, *, limit: int = 100) -> list[JobRow]:
        """Jobs by id, newest first, optionally of one status."""
        if status is None:
            rows = self._read(f"SELECT {_COLUMNS} FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._read(
                f"SELECT {_COLUMNS} FROM jobs WHERE status = ? ORDER BY id DESC LIMIT ?",
                (str(status), limit),
            )
        return [_row(r) for r in rows]

    def stats(self) -> StoreStats:
        """Counts by status and the oldest pending job's run_at."""
        pending, running, done, failed, oldest = self._read(_STATS)[0]
        return StoreStats(pending, running, done, failed, oldest)

    def close(self) -> None:
        """Close the connection; idempotent. Later calls raise `StoreError`."""
        if self._closed:
            return
        self._closed = True
        try:
            _rollback_open_transaction(self._conn)
        except sqlite3.Error:
            pass  # closing discards the transaction anyway
        finally:
            self._conn.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<SqliteStore path={self._path!r} mmap={self._mmap}"
            f" busy_timeout_ms={self._busy_timeout_ms} {state}>"
        )


# -- schedules (module level, after the class: the SQL and row mapping it uses) --------

_SCHEDULE_COLUMNS: Final = (
    "name, spec, next_fire, last_fire, paused, fires, skips, class_name, args, queue,"
    " priority, synced_at"
)
# In DO UPDATE, a bare column is the stored row and `excluded.` the entry being synced.
_SYNC_SCHEDULE: Final = (
    "INSERT INTO schedules (name, spec, next_fire, class_name, args, queue, priority,"
    " synced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
    " next_fire = CASE WHEN spec = excluded.spec THEN next_fire ELSE excluded.next_fire END,"
    " spec = excluded.spec, class_name = excluded.class_name, args = excluded.args,"
    " queue = excluded.queue, priority = excluded.priority, synced_at = excluded.synced_at"
)
# The compare-and-set: `next_fire = ?` holds the value the claimant read.
_CLAIM_FIRE: Final = (
    "UPDATE schedules SET next_fire = ?1, last_fire = coalesce(?2, last_fire),"
    " fires = fires + (?2 IS NOT NULL), skips = skips + (?2 IS NULL)"
    " WHERE name = ?3 AND next_fire = ?4 AND paused = 0"
)


def _schedule_row(r: tuple[Any, ...]) -> ScheduleRow:
    name, spec, next_fire, last_fire, paused, fires, skips, cls, args, queue, prio, synced = r
    return ScheduleRow(
        name, spec, next_fire, last_fire, bool(paused), fires, skips, cls, args, queue, prio, synced
    )


def _no_schedules_table(exc: StoreError) -> bool:
    """True if `exc` is SQLite's "no such table: schedules" (a file from before the table)."""
    cause = exc.__cause__
    return isinstance(cause, sqlite3.OperationalError) and "no such table: schedules" in str(cause)
