"""The functions the benchmark's rq workers run (rq enqueues a function by its import path).

Owns only the job bodies. Imports `bench.harness` and nothing of rq, so an rq work horse
loads no benchmark machinery.
"""

from __future__ import annotations

import time

from bench.stamp import write_stamp


def noop() -> None:
    """Do nothing: W1 and W2 measure the queue, not the job."""


def stamp(ledger: str, enqueued_at: float) -> None:
    """Record this job's start next to its enqueue time (W3)."""
    write_stamp(ledger, enqueued_at, time.time())
