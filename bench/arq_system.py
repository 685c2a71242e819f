"""arq as a system under test: Redis, `enqueue_job`, and two default arq worker processes.

Owns how arq is driven: the producer subprocess (asyncio; `enqueue_job` one at a time, and
since arq has no bulk API, a batch of `enqueue_job` calls under `asyncio.gather` as the
bulk row), the consumers (`arq bench.arq_app.WorkerSettings` twice: max_jobs 10, polling
every 0.5 s) and how W2 reads arq's window (the start and finish times arq stores in every
job's result). Imports arq only inside functions, so `python -m bench` runs without it.

    python -m bench.arq_system produce single|bulk|prefill|pickup --root DIR --n N
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import harness, services

if TYPE_CHECKING:
    from collections.abc import Sequence

WORKERS = 2
CHUNK = 500  # prefill: enqueue_job calls gathered at once
QUEUE_KEY = "arq:queue"  # arq's default queue name
RESULT_PREFIX = "arq:result:"
W2_PREFIX = "w2-"  # prefilled jobs get known ids, so W2 can find every result


def available() -> str | None:
    """None if arq can run here, else why this system is skipped."""
    if importlib.util.find_spec("arq") is None:
        return "arq is not installed (make bench installs the `bench` extra)"
    return services.redis_down()


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(services.REDIS_URL)


class ArqSystem:
    """arq with its defaults: a Redis sorted set, asyncio workers that poll it."""

    name = "arq"

    def durability(self) -> str:
        from arq.version import VERSION

        return (
            f"{services.redis_durability()}; arq {VERSION}: {WORKERS} worker processes,"
            " max_jobs=10 each, poll_delay=0.5 s, results kept 3600 s (defaults),"
            " INFO log lines per job"
        )

    def prepare(self, root: Path) -> None:
        services.redis_reset()

    def producer_argv(self, mode: str, root: Path, n: int, batch: int) -> list[str]:
        return harness.producer_argv("bench.arq_system", mode, root, n, batch)

    def sink_paths(self, root: Path) -> list[str]:
        return []  # arq's workers poll Redis; a producer wakes nobody

    def start(self, root: Path) -> list[harness.Service]:
        argv = harness.module_argv("arq", "bench.arq_app.WorkerSettings")
        return harness.start_workers("arq worker", argv, root, WORKERS)

    def ready(self, root: Path) -> bool:
        return True  # W3's warm-up job proves a worker is up

    def drained(self, root: Path, n: int) -> bool:
        client = _redis()
        try:
            # The queue empties before its last jobs finish: only then count the results.
            if client.zcard(QUEUE_KEY):
                return False
            keys = [f"{RESULT_PREFIX}{W2_PREFIX}{i}" for i in range(n)]
            return bool(client.exists(*keys) == n)
        finally:
            client.close()

    def drain_window(self, root: Path, n: int) -> tuple[float, float]:
        from arq.jobs import deserialize_result

        client = _redis()
        try:
            raw = client.mget([f"{RESULT_PREFIX}{W2_PREFIX}{i}" for i in range(n)])
        finally:
            client.close()
        results = [deserialize_result(r) for r in raw if r is not None]
        if len(results) != n:
            raise harness.BenchError(f"arq: {len(results)} of {n} results found")
        failed = sum(1 for r in results if not r.success)
        if failed:
            raise harness.BenchError(f"arq: {failed} jobs failed")
        first = min(r.start_time for r in results)
        last = max(r.finish_time for r in results)
        return first.timestamp(), last.timestamp()

    def __repr__(self) -> str:
        return "ArqSystem()"


async def _produce(args: harness.ProducerArgs) -> dict[str, object]:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(services.REDIS_URL))
    ledger = Path(args.root) / "ledger"
    try:
        if args.mode == "single":
            return await harness.timed_calls_async(lambda _i: pool.enqueue_job("noop"), args.n)
        if args.mode == "bulk":

            async def bulk(_i: int) -> object:
                return await asyncio.gather(*(pool.enqueue_job("noop") for _ in range(args.batch)))

            return await harness.timed_calls_async(bulk, args.n // args.batch)
        if args.mode == "prefill":
            for start in range(0, args.n, CHUNK):
                ids = range(start, min(args.n, start + CHUNK))
                await asyncio.gather(
                    *(pool.enqueue_job("noop", _job_id=f"{W2_PREFIX}{i}") for i in ids)
                )
            return {}
        # W3 paces with blocking sleeps; each enqueue runs to completion on this loop.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None,
            lambda: harness.paced(
                lambda at: asyncio.run_coroutine_threadsafe(
                    pool.enqueue_job("stamp", str(ledger), at), loop
                ).result(),
                args.n,
                args.every,
                ledger,
            ),
        )
    finally:
        await pool.aclose()


def produce(argv: Sequence[str] | None = None) -> int:
    """The producer subprocess: time N enqueues (or prefill, or pace W3) and print JSON."""
    args = harness.parse_producer(argv, "python -m bench.arq_system produce")
    harness.emit(asyncio.run(_produce(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(harness.producer_main(produce, "bench.arq_system"))
