"""The WAL stays bounded while two stores take turns writing (the two-worker drain).

With SQLite's automatic checkpoint the `-wal` file grew to hundreds of MiB while two
workers drained a queue (`make bench --workloads wal`): the other writer always had a
transaction open when the checkpoint ended. Each store now checkpoints it itself.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import reference.sqlite_store as sqlite_store
from reference.records import NewJob
from reference.sqlite_store import SqliteStore
from tests.storeops import claim, record

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

T0 = 1_700_000_000.0


def test_two_writers_taking_turns_keep_the_wal_near_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 1024 * 1024  # small, so the test writes tens of MiB, not hundreds
    monkeypatch.setattr(sqlite_store, "WAL_CHECKPOINT_BYTES", limit)
    db = tmp_path / "q.db"
    a, b = SqliteStore(db), SqliteStore(db)
    wal = f"{db}-wal"
    largest = 0
    try:
        payload = '["' + "x" * 8000 + '"]'
        for i in range(3000):
            writer = a if i % 2 else b
            writer.enqueue(NewJob("app.Job", payload, "{}", T0, T0))
            claimed = claim(b if i % 2 else a, now=T0 + 1, lease=30.0)
            for row in claimed:
                record(writer, row.id, row.attempts, now=T0 + 2)
            largest = max(largest, os.stat(wal).st_size)
        written = 3000 * 8000
    finally:
        a.close()
        b.close()
    assert written > 20 * limit  # the test wrote far more than the bound
    # WAL_CHECK_EVERY commits past the bound at most (each a few pages), then truncated.
    assert largest < 2 * limit, f"-wal reached {largest:,} bytes with a {limit:,} bound"
