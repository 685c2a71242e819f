"""rq as a system under test: Redis, `Queue.enqueue`, and two default `rq worker` processes.

Owns how rq is driven: the producer subprocess (`enqueue` one at a time, `enqueue_many`
with `prepare_data` as its bulk API), the consumers (`rq worker` twice, every option at its
default, so each job runs in a freshly forked work horse) and how W2 reads rq's window
(the `started_at`/`ended_at` rq records on every finished job). Imports rq only inside
functions, so `python -m bench` runs without it.

    python -m bench.rq_system produce single|bulk|prefill|pickup --root DIR --n N
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import harness, services

if TYPE_CHECKING:
    from collections.abc import Sequence

WORKERS = 2
CHUNK = 1000  # prefill: jobs per enqueue_many pipeline


def available() -> str | None:
    """None if rq can run here, else why this system is skipped."""
    if importlib.util.find_spec("rq") is None:
        return "rq is not installed (make bench installs the `bench` extra)"
    return services.redis_down()


def _queue() -> Any:
    from redis import Redis
    from rq import Queue

    return Queue("default", connection=Redis.from_url(services.REDIS_URL))


class RqSystem:
    """rq with its defaults: a Redis list per queue, a forking worker blocked on BLPOP."""

    name = "rq"

    def durability(self) -> str:
        import rq

        return (
            f"{services.redis_durability()}; rq {rq.__version__}: {WORKERS} `rq worker`"
            " processes, default Worker (forks a work horse per job), results kept 500 s,"
            " INFO log lines per job"
        )

    def prepare(self, root: Path) -> None:
        services.redis_reset()

    def producer_argv(self, mode: str, root: Path, n: int, batch: int) -> list[str]:
        return harness.producer_argv("bench.rq_system", mode, root, n, batch)

    def sink_paths(self, root: Path) -> list[str]:
        return []  # rq's workers block on Redis; a producer wakes nobody itself

    def start(self, root: Path) -> list[harness.Service]:
        argv = harness.module_argv("rq.cli", "worker", "--url", services.REDIS_URL)
        return harness.start_workers("rq worker", argv, root, WORKERS)

    def ready(self, root: Path) -> bool:
        return True  # W3's warm-up job proves a worker is up

    def drained(self, root: Path, n: int) -> bool:
        from rq.registry import FailedJobRegistry, FinishedJobRegistry

        queue = _queue()
        failed = FailedJobRegistry(queue=queue).count
        if failed:
            raise harness.BenchError(f"rq: {failed} jobs failed")
        return bool(FinishedJobRegistry(queue=queue).count >= n)

    def drain_window(self, root: Path, n: int) -> tuple[float, float]:
        from rq.job import Job
        from rq.registry import FinishedJobRegistry

        queue = _queue()
        ids = FinishedJobRegistry(queue=queue).get_job_ids()
        jobs = [j for j in Job.fetch_many(ids, connection=queue.connection) if j is not None]
        if len(jobs) != n:
            raise harness.BenchError(f"rq: {len(jobs)} of {n} finished jobs found")
        first = min(j.started_at for j in jobs if j.started_at is not None)
        last = max(j.ended_at for j in jobs if j.ended_at is not None)
        return first.timestamp(), last.timestamp()

    def __repr__(self) -> str:
        return "RqSystem()"


def produce(argv: Sequence[str] | None = None) -> int:
    """The producer subprocess: time N enqueues (or prefill, or pace W3) and print JSON."""
    from rq import Queue

    from bench import rq_app

    args = harness.parse_producer(argv, "python -m bench.rq_system produce")
    queue = _queue()
    ledger = str(Path(args.root) / "ledger")
    if args.mode == "single":
        harness.emit(harness.timed_calls(lambda _i: queue.enqueue(rq_app.noop), args.n))
    elif args.mode == "bulk":

        def bulk(_i: int) -> object:
            return queue.enqueue_many([Queue.prepare_data(rq_app.noop) for _ in range(args.batch)])

        harness.emit(harness.timed_calls(bulk, args.n // args.batch))
    elif args.mode == "prefill":
        for start in range(0, args.n, CHUNK):
            count = min(CHUNK, args.n - start)
            queue.enqueue_many([Queue.prepare_data(rq_app.noop) for _ in range(count)])
        harness.emit({})
    else:
        harness.emit(
            harness.paced(
                lambda at: queue.enqueue(rq_app.stamp, ledger, at), args.n, args.every, Path(ledger)
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(harness.producer_main(produce, "bench.rq_system"))
