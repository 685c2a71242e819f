"""The project as a system under test: its public producer API and its real worker CLI.

Owns how the project is driven: the producer subprocess goes through
`reference.queue.configure()` and `Noop.perform_async()` / `reference.queue.enqueue_many()`,
the workers are `python -m reference.worker ... --metrics off --import bench.jobs` (a
supervisor and its worker processes), and W2 reads the window from the store's own columns.

    python -m bench.project produce single|bulk|prefill|pickup --root DIR --n N --workers W
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from bench import harness

if TYPE_CHECKING:
    from collections.abc import Sequence

DURABILITY = (
    "WAL, synchronous=NORMAL, mmap 256 MiB; lock waits up to 5000 ms in the store's own"
    " back-off (20 µs doubling to 0.5 ms) instead of SQLite's busy handler (SqliteStore defaults)"
)


def db_path(root: str | Path) -> Path:
    return Path(root) / "project.db"


def socket_dir(root: str | Path) -> Path:
    return Path(root) / "s"


class ProjectSystem:
    """The project with `workers` processes of `concurrency` slots each."""

    def __init__(self, workers: int, concurrency: int) -> None:
        self.workers = workers
        self.concurrency = concurrency
        self.name = f"project {workers}x{concurrency}"

    def durability(self) -> str:
        return DURABILITY

    def prepare(self, root: Path) -> None:
        from reference.sqlite_store import SqliteStore

        SqliteStore.create_schema(db_path(root))
        socket_dir(root).mkdir(mode=0o700)

    def producer_argv(self, mode: str, root: Path, n: int, batch: int) -> list[str]:
        return harness.producer_argv(
            "bench.project",
            mode,
            root,
            n,
            batch,
            "--workers",
            str(self.workers),
        )

    def sink_paths(self, root: Path) -> list[str]:
        from reference.waker import socket_address

        return [socket_address(str(socket_dir(root)), i) for i in range(1, self.workers + 1)]

    def worker_args(self, root: Path) -> list[str]:
        """`python -m reference.worker` arguments for this configuration on `root`."""
        return [
            "--workers",
            str(self.workers),
            "--concurrency",
            str(self.concurrency),
            "--metrics",
            "off",
            "--import",
            "bench.jobs",
            "--db",
            str(db_path(root)),
            "--socket-dir",
            str(socket_dir(root)),
        ]

    def start(self, root: Path) -> list[harness.Service]:
        argv = harness.module_argv("reference.worker", *self.worker_args(root))
        return [harness.start_service(self.name, argv, root / "workers.log")]

    def ready(self, root: Path) -> bool:
        return all(os.path.exists(p) for p in self.sink_paths(root))

    def drained(self, root: Path, n: int) -> bool:
        return harness.db_drained(db_path(root), n)

    def drain_window(self, root: Path, n: int) -> tuple[float, float]:
        return harness.db_window(db_path(root), n)

    def __repr__(self) -> str:
        return f"ProjectSystem(workers={self.workers}, concurrency={self.concurrency})"


def produce(argv: Sequence[str] | None = None) -> int:
    """The producer subprocess: time N enqueues (or prefill, or pace W3) and print JSON."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workers", type=int, default=2)
    ns, rest = parser.parse_known_args(argv)
    args = harness.parse_producer(rest, "python -m bench.project produce")

    import reference.queue
    from bench.jobs import Noop, Stamp

    reference.queue.configure(db_path(args.root), str(socket_dir(args.root)), ns.workers)
    ledger = str(Path(args.root) / "ledger")
    if args.mode == "single":
        harness.emit(harness.timed_calls(lambda _i: Noop.perform_async(), args.n))
    elif args.mode == "bulk":
        calls = [(Noop, (), None)] * args.batch
        harness.emit(
            harness.timed_calls(
                lambda _i: reference.queue.enqueue_many(calls), args.n // args.batch
            )
        )
    elif args.mode == "prefill":
        reference.queue.enqueue_many([(Noop, (), None)] * args.n)
        harness.emit({})
    else:
        harness.emit(
            harness.paced(
                lambda at: Stamp.perform_async(ledger, at), args.n, args.every, Path(ledger)
            )
        )
    reference.queue.reset()
    return 0


if __name__ == "__main__":
    raise SystemExit(harness.producer_main(produce, "bench.project"))
