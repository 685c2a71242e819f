"""The arq worker settings the benchmark's arq workers load (`bench.arq_app.WorkerSettings`).

Owns the job coroutines and `WorkerSettings`; every worker option is arq's default. The
Redis address comes from `bench.services` (`BENCH_REDIS_URL`).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from arq.connections import RedisSettings

from bench.services import REDIS_URL
from bench.stamp import write_stamp


async def noop(ctx: dict[str, Any]) -> None:
    """Do nothing: W1 and W2 measure the queue, not the job."""


async def stamp(ctx: dict[str, Any], ledger: str, enqueued_at: float) -> None:
    """Record this job's start next to its enqueue time (W3)."""
    write_stamp(ledger, enqueued_at, time.time())


class WorkerSettings:
    """What `arq bench.arq_app.WorkerSettings` runs: two functions, defaults otherwise."""

    functions: ClassVar[list[Any]] = [noop, stamp]
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
