"""procrastinate as a system under test: PostgreSQL, `defer`, and two default workers.

Owns how procrastinate is driven: the producer subprocess (the synchronous `defer` one at a
time, `batch_defer` as its bulk API), the consumers (`procrastinate worker` twice:
concurrency 1 each, LISTEN/NOTIFY wake-ups with 5 s polling as the fallback) and how W2
reads procrastinate's window (its `procrastinate_events` rows). Imports procrastinate and
psycopg only inside functions, so `python -m bench` runs without them.

    python -m bench.procrastinate_system produce single|bulk|prefill|pickup --root DIR --n N
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from bench import harness, services

if TYPE_CHECKING:
    from collections.abc import Sequence

WORKERS = 2
CHUNK = 1000  # prefill: jobs per batch_defer


def available() -> str | None:
    """None if procrastinate can run here, else why this system is skipped."""
    if importlib.util.find_spec("procrastinate") is None:
        return "procrastinate is not installed (make bench installs the `bench` extra)"
    return services.pg_down()


def _query(sql: str) -> tuple[object, ...]:
    import psycopg

    with psycopg.connect(services.PG_DSN) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return tuple(row)


class ProcrastinateSystem:
    """procrastinate with its defaults: a PostgreSQL table, workers woken by NOTIFY."""

    name = "procrastinate"

    def durability(self) -> str:
        from importlib.metadata import version

        return (
            f"{services.pg_durability()}; procrastinate {version('procrastinate')}:"
            f" {WORKERS} worker processes, concurrency 1 each, LISTEN/NOTIFY with 5 s polling"
            " (defaults)"
        )

    def prepare(self, root: Path) -> None:
        from procrastinate.schema import SchemaManager

        services.pg_recreate(SchemaManager.get_schema())

    def producer_argv(self, mode: str, root: Path, n: int, batch: int) -> list[str]:
        return harness.producer_argv("bench.procrastinate_system", mode, root, n, batch)

    def sink_paths(self, root: Path) -> list[str]:
        return []  # PostgreSQL's NOTIFY wakes the workers, inside the INSERT's transaction

    def start(self, root: Path) -> list[harness.Service]:
        argv = harness.module_argv(
            "procrastinate", "--app", "bench.procrastinate_app.app", "worker"
        )
        return harness.start_workers("procrastinate worker", argv, root, WORKERS)

    def ready(self, root: Path) -> bool:
        return True  # W3's warm-up job proves a worker is up

    def drained(self, root: Path, n: int) -> bool:
        open_work, failed = _query(
            "SELECT count(*) FILTER (WHERE status IN ('todo', 'doing')),"
            " count(*) FILTER (WHERE status NOT IN ('todo', 'doing', 'succeeded'))"
            " FROM procrastinate_jobs"
        )
        if failed:
            raise harness.BenchError(f"procrastinate: {failed} jobs did not succeed")
        return open_work == 0

    def drain_window(self, root: Path, n: int) -> tuple[float, float]:
        done, first, last = _query(
            "SELECT (SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'),"
            " extract(epoch FROM min(at) FILTER (WHERE type = 'started')),"
            " extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded'))"
            " FROM procrastinate_events"
        )
        if done != n:
            raise harness.BenchError(f"procrastinate: {done} of {n} jobs succeeded")
        return float(first), float(last)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return "ProcrastinateSystem()"


def produce(argv: Sequence[str] | None = None) -> int:
    """The producer subprocess: time N defers (or prefill, or pace W3) and print JSON."""
    from bench import procrastinate_app

    args = harness.parse_producer(argv, "python -m bench.procrastinate_system produce")
    ledger = str(Path(args.root) / "ledger")
    noop, stamp = procrastinate_app.noop, procrastinate_app.stamp
    with procrastinate_app.app.open():
        if args.mode == "single":
            result = harness.timed_calls(lambda _i: noop.defer(), args.n)
        elif args.mode == "bulk":
            batch: list[dict[str, object]] = [{}] * args.batch
            result = harness.timed_calls(lambda _i: noop.batch_defer(*batch), args.n // args.batch)
        elif args.mode == "prefill":
            for start in range(0, args.n, CHUNK):
                noop.batch_defer(*[{}] * min(CHUNK, args.n - start))
            result = {}
        else:
            result = harness.paced(
                lambda at: stamp.defer(ledger=ledger, enqueued_at=at),
                args.n,
                args.every,
                Path(ledger),
            )
    harness.emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(harness.producer_main(produce, "bench.procrastinate_system"))
