"""The project's benchmark jobs; workers import them with `--import bench.jobs`.

Owns only `Job` subclasses. Imports `reference` and `bench.harness`, nothing else, so a
worker process loads no benchmark machinery.
"""

from __future__ import annotations

import time

from bench.stamp import write_stamp
from reference import Job


class Noop(Job):
    """Does nothing: W1 and W2 measure the queue, not the job."""

    async def perform(self) -> None:
        return None


class Stamp(Job):
    """Records its start time next to its enqueue time in `ledger` (W3)."""

    async def perform(self, ledger: str, enqueued_at: float) -> None:
        write_stamp(ledger, enqueued_at, time.time())
