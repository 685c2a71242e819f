"""SqliteStore against real failure modes: lock contention, corrupt and missing files, and
errors raised inside the fetch transaction (the 0.6.1 rollback fix, and its 0.6.0 mutant).
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import pytest

from reference import sqlite_store
from reference.errors import StoreCorruptError, StoreError, StoreLockedError
from reference.records import JobStatus, NewJob, Settlement, WorkerRow
from reference.sqlite_store import SqliteStore
from sim.faults import (
    FETCH_SITES,
    STORE_SITES,
    FaultKind,
    FaultPlan,
    Injection,
    LockHolder,
    open_faulty_store,
)
from tests.storeops import claim, record

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

T0 = 1_700_000_000.0


def job(run_at: float = T0) -> NewJob:
    return NewJob(name="app.Job", args="[]", options="{}", run_at=run_at, created_at=T0)


class InjectedError(sqlite3.OperationalError):
    """What the tests' fault hooks raise; a driver error, so the store must translate it."""


class Faults:
    """A fault hook that raises at the armed sites, `after` calls in."""

    def __init__(self) -> None:
        self.armed: dict[str, int] = {}
        self.calls: list[str] = []

    def arm(self, site: str, after: int = 0) -> None:
        self.armed[site] = after

    def __call__(self, site: str) -> None:
        self.calls.append(site)
        if site in self.armed:
            if self.armed[site] == 0:
                del self.armed[site]
                raise InjectedError(f"injected at {site}")
            self.armed[site] -= 1


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "queue.db")
    SqliteStore.create_schema(path)
    return path


@pytest.fixture
def other(db: str) -> Iterator[sqlite3.Connection]:
    """A second, raw connection on the same file that never waits for a lock."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=0)
    yield conn
    conn.close()


def can_write_now(conn: sqlite3.Connection) -> bool:
    """True if `conn` can take the write lock immediately (nobody else holds it)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:
        return False
    conn.execute("ROLLBACK")
    return True


def test_lock_held_beyond_busy_timeout_raises_locked_then_recovers(
    db: str, other: sqlite3.Connection
) -> None:
    store = SqliteStore(db, busy_timeout_ms=50)
    store.enqueue(job())
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreLockedError, match=r"another connection held the write lock") as info:
        claim(store, now=T0, lease=30)
    assert db in str(info.value)
    assert "50 ms" in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    with pytest.raises(StoreLockedError):
        store.enqueue(job())
    other.execute("ROLLBACK")
    assert len(claim(store, now=T0, lease=30)) == 1
    store.close()


@pytest.mark.parametrize("op", ["fetch", "enqueue", "complete", "read"])
def test_every_kind_of_statement_waits_out_a_short_lock(db: str, op: str) -> None:
    store = SqliteStore(db, busy_timeout_ms=10_000)
    job_id = store.enqueue(job())
    (row,) = claim(store, now=T0, lease=30)
    holder = sqlite3.connect(db, isolation_level=None, timeout=0, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # the write lock; in WAL mode readers read on
    release = threading.Timer(0.05, holder.execute, ("ROLLBACK",))
    release.start()
    try:
        if op == "fetch":
            assert claim(store, now=T0, lease=30) == []
        elif op == "enqueue":
            assert store.enqueue(job()) == job_id + 1
        elif op == "complete":
            assert record(store, job_id, row.attempts, now=T0)
        else:
            assert store.get(job_id) is not None
    finally:
        release.join()
        holder.close()
        store.close()


def test_corrupt_file_raises_corrupt_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(random.Random(7).randbytes(8192))
    with pytest.raises(StoreCorruptError, match=r"garbage\.db"):
        SqliteStore(path)


def test_file_corrupted_after_open_raises_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    store = SqliteStore(path, mmap=False)
    store.close()
    with open(path, "r+b") as f:
        f.write(b"\x00" * 100)  # wipe the header: no longer "SQLite format 3"
    with pytest.raises(StoreCorruptError, match=r"queue\.db"):
        SqliteStore(path)


def test_missing_directory_raises_store_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "queue.db"
    with pytest.raises(StoreError, match="does not exist") as info:
        SqliteStore(path)
    assert str(path) in str(info.value)
    assert not isinstance(info.value, (StoreLockedError, StoreCorruptError))


def test_open_existing_refuses_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    with pytest.raises(StoreError, match=r"typo\.db"):
        SqliteStore.open_existing(path)
    assert not path.exists()
    SqliteStore.create_schema(path)
    SqliteStore.open_existing(path).close()


def test_newer_schema_version_is_refused(db: str, other: sqlite3.Connection) -> None:
    other.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        SqliteStore(db)


def test_pragmas_are_applied(db: str) -> None:
    store = SqliteStore(db, mmap=False, busy_timeout_ms=1234)
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    # SQLite's own busy handler is off: the store waits for locks itself (_retry_locked).
    assert conn.execute("PRAGMA busy_timeout").fetchone() == (0,)
    assert conn.execute("PRAGMA mmap_size").fetchone() == (0,)
    assert conn.execute("PRAGMA user_version").fetchone() == (sqlite_store.SCHEMA_VERSION,)
    store.close()


def test_closed_store_raises_store_error(db: str) -> None:
    store = SqliteStore(db)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.enqueue(job())
    assert "closed" in repr(store)


@pytest.mark.parametrize(
    ("site", "after"),
    [
        ("fetch.after_begin", 0),
        ("fetch.statement", 0),  # inside the UPDATE, on the first claimed row
        ("fetch.statement", 1),  # inside the UPDATE, after one row was already updated
        ("fetch.before_commit", 0),
    ],
)
def test_error_inside_fetch_rolls_back_and_store_stays_usable(
    db: str, other: sqlite3.Connection, site: str, after: int
) -> None:
    faults = Faults()
    store = SqliteStore(db, fault_hook=faults, busy_timeout_ms=50)
    store.enqueue_many([job(), job()])
    faults.arm(site, after)
    with pytest.raises(StoreError, match=f"injected at {site}") as info:
        claim(store, now=T0, lease=30, limit=2)
    assert isinstance(info.value.__cause__, InjectedError)
    assert not store._conn.in_transaction
    assert can_write_now(other)  # other connections are not locked out
    assert store.stats().pending == 2  # nothing half-claimed
    assert len(claim(store, now=T0, lease=30, limit=2)) == 2
    store.close()


def test_non_driver_exception_inside_fetch_also_rolls_back(
    db: str, other: sqlite3.Connection
) -> None:
    def hook(site: str) -> None:
        if site == "fetch.before_commit":
            raise KeyboardInterrupt  # BaseException: cancellation-like unwinding

    store = SqliteStore(db, fault_hook=hook)
    store.enqueue(job())
    with pytest.raises(KeyboardInterrupt):
        claim(store, now=T0, lease=30)
    assert not store._conn.in_transaction
    assert can_write_now(other)
    store.close()


def test_wrapped_connection_factory_raising_inside_update(
    db: str, other: sqlite3.Connection
) -> None:
    """The `connect` seam alone: the factory's connection makes the fetch UPDATE itself fail."""
    failing = [True]

    def maybe_fail() -> int:
        if failing[0]:
            raise ValueError("disk on fire")
        return 0

    def connect(path: str) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.create_function("maybe_fail", 0, maybe_fail)
        # A TEMP trigger is private to this connection: only this store's claims fail.
        conn.execute(
            "CREATE TEMP TRIGGER claim_fails BEFORE UPDATE OF status ON main.jobs"
            " WHEN NEW.status = 'running' BEGIN SELECT maybe_fail(); END"
        )
        return conn

    store = SqliteStore(db, connect=connect, busy_timeout_ms=50)
    store.enqueue(job())
    with pytest.raises(StoreError, match="user-defined function raised exception"):
        claim(store, now=T0, lease=30)
    assert not store._conn.in_transaction
    assert can_write_now(other)
    failing[0] = False
    assert len(claim(store, now=T0, lease=30)) == 1
    store.close()


def test_error_in_enqueue_many_stores_nothing(db: str) -> None:
    faults = Faults()
    store = SqliteStore(db, fault_hook=faults)
    faults.arm("enqueue_many.before_commit")
    with pytest.raises(StoreError):
        store.enqueue_many([job(), job(), job()])
    assert store.stats().total == 0
    assert len(store.enqueue_many([job(), job()])) == 2
    store.close()


def test_fault_at_single_statement_sites_changes_nothing(db: str) -> None:
    faults = Faults()
    store = SqliteStore(db, fault_hook=faults)
    faults.arm("enqueue")
    with pytest.raises(StoreError):
        store.enqueue(job())
    faults.arm("heartbeat")
    store.register_worker(WorkerRow("w1", "h", 1, 1, "*", T0, T0))
    with pytest.raises(StoreError):
        store.heartbeat("w1", now=T0 + 5)
    assert store.list_workers()[0].heartbeat_at == T0
    assert store.heartbeat("w1", now=T0 + 6)
    store.close()


def test_mutant_without_rollback_wedges_the_store(
    db: str, other: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The simulator's 0.6.0 mutant seam: with the rollback disabled the bug comes back."""
    monkeypatch.setattr(sqlite_store, "_rollback_open_transaction", lambda conn: None)
    faults = Faults()
    store = SqliteStore(db, fault_hook=faults, busy_timeout_ms=50)
    store.enqueue(job())
    faults.arm("fetch.statement")
    with pytest.raises(StoreError):
        claim(store, now=T0, lease=30)
    assert store._conn.in_transaction
    with pytest.raises(StoreError, match="within a transaction"):
        claim(store, now=T0, lease=30)
    assert not can_write_now(other)
    monkeypatch.undo()
    store.close()  # close rolls back, releasing the lock
    assert can_write_now(other)


def test_repr_names_path_and_mmap(db: str) -> None:
    store = SqliteStore(db, mmap=False)
    assert os.path.basename(db) in repr(store)
    assert "mmap=False" in repr(store)
    store.close()


# -- sim/faults.py: the simulator's injector drives the same rollback paths -----------------


@pytest.mark.parametrize("site", FETCH_SITES)
def test_fault_plan_every_fetch_site_rolls_back(
    db: str, other: sqlite3.Connection, site: str
) -> None:
    plan = FaultPlan(random.Random(1), {site: 1.0})
    store = open_faulty_store(db, plan)
    store.enqueue(job())
    with pytest.raises(StoreError, match=f"sim fault at {site}"):
        claim(store, now=T0, lease=30)
    assert plan.injected == [Injection(site, FaultKind.ERROR, 1)]
    assert not store._conn.in_transaction
    assert can_write_now(other)
    plan.quiesce()
    assert len(claim(store, now=T0, lease=30)) == 1
    store.close()


@pytest.mark.parametrize("site", FETCH_SITES)
def test_a_fault_in_a_claim_made_with_a_completion_rolls_back_both(
    db: str, other: sqlite3.Connection, site: str
) -> None:
    plan = FaultPlan(random.Random(1), {site: 1.0})
    store = open_faulty_store(db, plan)
    plan.enabled = False
    first, second = store.enqueue_many([job(), job()])
    (row,) = claim(store, now=T0, lease=30)
    plan.enabled = True
    with pytest.raises(StoreError, match=f"sim fault at {site}"):
        store.claim("w1", now=T0, lease=30, limit=1, settle=[Settlement(first, row.attempts)])
    assert not store._conn.in_transaction
    assert can_write_now(other)
    # Neither half was kept: the job is still running under its claim, the next one pending.
    assert store.get(first).status is JobStatus.RUNNING  # type: ignore[union-attr]
    assert store.get(second).status is JobStatus.PENDING  # type: ignore[union-attr]
    plan.quiesce()
    done, claimed = store.claim(
        "w1", now=T0, lease=30, limit=1, settle=[Settlement(first, row.attempts)]
    )
    assert done == [True]
    assert [r.id for r in claimed] == [second]
    store.close()


def test_fault_plan_locked_kind_surfaces_as_store_locked(db: str) -> None:
    plan = FaultPlan(random.Random(1), {"heartbeat": 1.0}, kinds={"heartbeat": FaultKind.LOCKED})
    store = open_faulty_store(db, plan)
    with pytest.raises(StoreLockedError):
        store.heartbeat("w1", now=T0)
    store.close()


def test_fault_plan_is_deterministic_and_two_level() -> None:
    def run(seed: int) -> tuple[list[str], list[Injection]]:
        plan = FaultPlan.swarm(random.Random(seed), max_rate=0.5, activation=0.5)
        for _ in range(200):
            for site in STORE_SITES:
                with contextlib.suppress(sqlite3.OperationalError):
                    plan.check(site)
        return sorted(plan.rates), plan.injected

    assert run(3) == run(3)
    active_sets = {tuple(run(seed)[0]) for seed in range(20)}
    assert len(active_sets) > 1  # activation varies per seed
    assert all(0 < len(s) < len(STORE_SITES) for s in active_sets)
    rates, injected = run(3)
    assert {i.site for i in injected} <= set(rates)  # only active sites ever fire


def test_fault_plan_reports_injections() -> None:
    seen: list[Injection] = []
    plan = FaultPlan(random.Random(0), {"enqueue": 1.0, "heartbeat": 0.0}, on_inject=seen.append)
    assert plan.rates == {"enqueue": 1.0}
    plan.check("heartbeat")
    with pytest.raises(sqlite3.OperationalError):
        plan("enqueue")
    assert seen == plan.injected == [Injection("enqueue", FaultKind.ERROR, 1)]
    assert "enqueue" in repr(plan)


def test_lock_holder_makes_a_zero_timeout_store_locked(db: str) -> None:
    store = open_faulty_store(db, FaultPlan(random.Random(0), {}))
    holder = LockHolder(db)
    assert holder.acquire()
    assert holder.held
    with pytest.raises(StoreLockedError):
        store.enqueue(job())
    holder.release()
    store.enqueue(job())
    holder.close()
    holder.close()
    store.close()


_CLAIMER = """
import sys
from reference.records import Settlement
from reference.sqlite_store import SqliteStore
store = SqliteStore(sys.argv[1])
owner = "w" + sys.argv[2]
claimed = []
while rows := store.claim(owner, now=2e9, lease=30, limit=int(sys.argv[3]))[1]:
    done = [Settlement(row.id, row.attempts) for row in rows]
    assert store.claim(owner, now=2e9, lease=30, limit=0, settle=done)[0] == [True] * len(rows)
    claimed += [row.id for row in rows]
store.close()
print(" ".join(map(str, claimed)))
"""


def test_concurrent_processes_never_claim_the_same_job(db: str) -> None:
    store = SqliteStore(db)
    expected = set(store.enqueue_many([job(run_at=T0 + i % 13) for i in range(3000)]))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, db, str(worker), str(worker)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for worker in (1, 2, 3)
    ]
    claims: list[int] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        claims += [int(x) for x in out.split()]
    assert len(claims) == len(set(claims))
    assert set(claims) == expected
    assert store.stats().done == 3000
    store.close()
