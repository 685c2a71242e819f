"""`reference.queue.configure()`: a missing database is refused unless `create=True` (#12).

A deleted, moved or mistyped database path used to become a new empty queue whose jobs no
worker would ever see; now it is one clear error and nothing is created.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

import reference.queue
from reference.errors import StoreError, TransportError
from reference.sqlite_store import SqliteStore

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    reference.queue.reset()
    yield
    reference.queue.reset()


def _configure(db: Path, **kwargs: bool) -> reference.queue.LockedProducer:
    return reference.queue.configure(db, str(db.parent / "s"), 1, environ={}, **kwargs)


def test_a_missing_database_is_refused_and_not_created(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    with pytest.raises(StoreError) as info:
        _configure(db)
    message = str(info.value)
    assert message == (
        f"queue database {str(db)!r} does not exist (start a worker first, or pass create=True)"
    )
    assert "\n" not in message
    assert os.listdir(tmp_path) == []
    assert reference.queue.producer() is None


def test_a_deleted_database_is_refused_on_reconfigure(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    SqliteStore.create_schema(db)
    _configure(db).close()
    reference.queue.reset()
    for leftover in tmp_path.iterdir():  # the db and its WAL files: "deleted"
        leftover.unlink()
    with pytest.raises(StoreError, match="does not exist"):
        _configure(db)
    assert not db.exists()


def test_create_true_creates_the_database(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    locked = _configure(db, create=True)
    assert db.exists()
    assert locked.producer.store.stats().pending == 0
    assert reference.queue.producer() is locked


def test_an_existing_database_needs_no_flag(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    SqliteStore.create_schema(db)
    locked = _configure(db)
    assert reference.queue.producer() is locked


def test_the_environment_path_is_checked_too(tmp_path: Path) -> None:
    db = tmp_path / "env.db"
    with pytest.raises(StoreError, match=r"env\.db' does not exist"):
        reference.queue.configure(environ={"QUEUE_DB_PATH": str(db)})
    assert not db.exists()


def test_a_socket_dir_too_long_for_af_unix_is_refused_up_front(tmp_path: Path) -> None:
    """Each enqueue used to print a traceback from the wake-up send instead."""
    db = tmp_path / "q.db"
    SqliteStore.create_schema(db)
    long_dir = str(tmp_path / ("d" * 120))
    with pytest.raises(TransportError, match="107"):
        reference.queue.configure(db, long_dir, 1, environ={})
    assert reference.queue.producer() is None


def test_the_producer_never_wakes_a_worker_isolation_forks_keeps_off_the_queue(
    tmp_path: Path,
) -> None:
    """The producer's address map ignored ISOLATION_FORKS: a wake-up picked an isolated
    worker (which never listens) and fell back, one syscall wasted per enqueue."""
    db = tmp_path / "q.db"
    SqliteStore.create_schema(db)
    locked = reference.queue.configure(
        db, str(tmp_path / "s"), 3, environ={"ISOLATION_FORKS": "1,3"}
    )
    waker = locked.producer._waker
    assert waker is not None
    assert list(waker.indices) == [2]
