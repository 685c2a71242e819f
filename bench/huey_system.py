"""huey as a system under test: `SqliteHuey` and its default consumer, started as a subprocess.

Owns how huey is driven: the producer subprocess (`task()` one at a time, `task.map()` as
its bulk API), the consumer (`huey_consumer bench.huey_app.huey -w 2`, thread workers, every
other option at its default) and how W2 reads huey's window (stamps, as huey keeps no done
rows). Imports huey only inside functions, so `python -m bench` runs without it.

    python -m bench.huey_system produce single|bulk|prefill|pickup --root DIR --n N
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

from bench import harness

if TYPE_CHECKING:
    from collections.abc import Sequence

WORKERS = 2  # W2 asks for two consumers; huey's are threads of one consumer process
_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def available() -> str | None:
    """None if huey can be imported, else why this system is skipped."""
    if importlib.util.find_spec("huey") is None:
        return "huey is not installed (make bench installs the `bench` extra)"
    return None


def db_path(root: str | Path) -> Path:
    return Path(root) / "huey.db"


def _env(root: Path) -> dict[str, str]:
    return {"BENCH_HUEY_DB": str(db_path(root))}


class HueySystem:
    """huey 2.x/3.x with SqliteHuey: enqueue per call, a polling thread consumer."""

    name = "huey"

    def durability(self) -> str:
        """What SqliteHuey actually runs with, read back from a fresh database."""
        import tempfile

        from huey import SqliteHuey

        with tempfile.TemporaryDirectory(prefix="bh-") as tmp:
            storage = SqliteHuey("probe", filename=os.path.join(tmp, "probe.db")).storage
            conn = storage.conn
            (journal,) = conn.execute("PRAGMA journal_mode").fetchone()
            (sync,) = conn.execute("PRAGMA synchronous").fetchone()
            (busy,) = conn.execute("PRAGMA busy_timeout").fetchone()
            conn.close()
        return (
            f"journal_mode={journal}, synchronous={_SYNCHRONOUS.get(sync, sync)} (SQLite's"
            f" default: SqliteHuey sets none unless fsync= is given), busy_timeout={busy};"
            f" consumer: -w {WORKERS} -k thread, default polling (0.1 s x1.15 up to 10 s),"
            " INFO log line per task"
        )

    def prepare(self, root: Path) -> None:
        pass  # SqliteHuey creates its tables on first use, in the producer

    def producer_argv(self, mode: str, root: Path, n: int, batch: int) -> list[str]:
        return harness.producer_argv("bench.huey_system", mode, root, n, batch)

    def sink_paths(self, root: Path) -> list[str]:
        return []  # huey's consumer polls; a producer wakes nobody

    def start(self, root: Path) -> list[harness.Service]:
        argv = harness.module_argv(
            "huey.bin.huey_consumer", "bench.huey_app.huey", "-w", str(WORKERS), "-k", "thread"
        )
        return [harness.start_service("huey consumer", argv, root / "huey.log", _env(root))]

    def ready(self, root: Path) -> bool:
        return True  # W3's warm-up job proves the consumer is up

    def drained(self, root: Path, n: int) -> bool:
        return harness.ledger_lines(root / "ledger") >= min(n, 3)

    def drain_window(self, root: Path, n: int) -> tuple[float, float]:
        stamps = dict(harness.read_ledger(root / "ledger"))
        return stamps[0.0], max(t for i, t in stamps.items() if i >= n - 2)

    def __repr__(self) -> str:
        return "HueySystem()"


def produce(argv: Sequence[str] | None = None) -> int:
    """The producer subprocess: time N enqueues (or prefill, or pace W3) and print JSON."""
    args = harness.parse_producer(argv, "python -m bench.huey_system produce")
    root = Path(args.root)
    os.environ.update(_env(root))
    from bench import huey_app

    ledger = str(root / "ledger")
    if args.mode == "single":
        harness.emit(harness.timed_calls(lambda _i: huey_app.noop(), args.n))
    elif args.mode == "bulk":
        batch = [()] * args.batch
        harness.emit(harness.timed_calls(lambda _i: huey_app.noop.map(batch), args.n // args.batch))
    elif args.mode == "prefill":
        huey_app.drain_job.map([(i, args.n, ledger) for i in range(args.n)])
        harness.emit({})
    else:
        harness.emit(
            harness.paced(lambda at: huey_app.stamp(ledger, at), args.n, args.every, Path(ledger))
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(harness.producer_main(produce, "bench.huey_system"))
