"""The huey application the benchmark's huey consumer loads (`bench.huey_app.huey`).

Owns the `SqliteHuey` instance and its three tasks. The database file comes from
`BENCH_HUEY_DB`, read at import because huey's consumer loads an instance by dotted path;
only huey processes started by `bench.huey_system` import this module.
"""

from __future__ import annotations

import os
import time

from huey import SqliteHuey

from bench.stamp import write_stamp

huey = SqliteHuey("bench", filename=os.environ["BENCH_HUEY_DB"])


@huey.task()
def noop() -> None:
    """Do nothing (W1)."""


@huey.task()
def drain_job(i: int, n: int, ledger: str) -> None:
    """Do nothing, but stamp the first job's start and the last two jobs' ends (W2).

    huey deletes a task when it dequeues it and stores no result for None, so it has no
    "done" row to read; these three stamps are the cheapest faithful window.
    """
    if i == 0 or i >= n - 2:
        write_stamp(ledger, float(i), time.time())


@huey.task()
def stamp(ledger: str, enqueued_at: float) -> None:
    """Record this task's start next to its enqueue time (W3)."""
    write_stamp(ledger, enqueued_at, time.time())
