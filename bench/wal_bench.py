"""WAL growth: the largest `-wal` file while two worker processes drain N jobs.

Owns the WAL figure of issue #13 (target: under 64 MiB while two workers drain 200,000
jobs). The run is W2's (the same systems and machinery: the producer pre-enqueues N jobs,
then the system's consumers drain them), except that the WAL the prefill left is
checkpointed and truncated before the consumers start, and that the orchestrating process
samples the size of `<db>-wal` every `every` seconds (a stat, no lock) until the queue is
drained, checking for that more rarely (a query, which competes with the workers).

The systems are those backed by a SQLite file in WAL mode: the project (two worker
processes of concurrency 2) and the limit (two bare consumers, the same SQL and pragmas),
so the figure tells the runtime's share from SQLite's own.

    python -m bench.wal_bench [--n 200000] [--systems limit,project]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench import harness, limit, project

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.harness import System

N = 200_000
TARGET_MIB = 64.0
SAMPLE_EVERY = 0.005  # seconds between two stats of the -wal file
CHECK_EVERY = 0.25  # seconds between two "is it drained?" queries
MIB = 1024 * 1024


def wal_size(db: Path) -> int:
    """The size of `db`'s WAL file in bytes (0 when there is none)."""
    try:
        return os.stat(f"{db}-wal").st_size
    except FileNotFoundError:
        return 0


def truncate_wal(db: Path) -> int:
    """Checkpoint `db` into the main file and truncate its WAL (no writer runs); the size left."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()
    return wal_size(db)


def measure(
    system: System, db: Path, root: Path, n: int, every: float = SAMPLE_EVERY
) -> dict[str, float]:
    """Drain n pre-enqueued jobs with `system`'s consumers, sampling `db`'s WAL size."""
    system.prepare(root)
    harness.run_producer(system.producer_argv("prefill", root, n, n), root / "producer.log")
    prefill_wal = wal_size(db)
    start_wal = truncate_wal(db)
    services = system.start(root)
    samples, largest, last_check = 0, start_wal, 0.0
    deadline = time.monotonic() + max(harness.BOUND, n * 0.02)
    try:
        while True:
            size = wal_size(db)
            samples += 1
            largest = max(largest, size)
            now = time.monotonic()
            if now - last_check >= CHECK_EVERY:
                last_check = now
                for s in services:
                    s.check_alive()
                if system.drained(root, n):
                    break
                if now > deadline:
                    raise harness.BenchError(f"timed out: {system.name} draining {n} jobs")
            time.sleep(every)
        first, last = system.drain_window(root, n)
        end_wal = wal_size(db)
    finally:
        for s in services:
            s.stop()
    return {
        "n": n,
        "max_wal_bytes": largest,
        "end_wal_bytes": end_wal,
        "prefill_wal_bytes": prefill_wal,
        "samples": samples,
        "jobs_per_s": n / (last - first),
        "db_bytes": os.stat(db).st_size,
    }


def systems(names: set[str]) -> list[tuple[System, Callable[[Path], Path]]]:
    """The chosen SQLite-backed systems, each with where its database lives under a root."""
    out: list[tuple[System, Callable[[Path], Path]]] = []
    if "limit" in names:
        out.append((limit.LimitSystem(), limit.db_path))
    if "project" in names:
        out.append((project.ProjectSystem(2, 2), project.db_path))
    return out


def run(
    n: int = N, names: set[str] | None = None, base: Path | None = None
) -> dict[str, dict[str, float]]:
    """The WAL figure for each chosen system (default: the limit, then the project)."""
    chosen = systems({"limit", "project"} if names is None else names)
    results = {}
    for system, db_of in chosen:
        root = Path(tempfile.mkdtemp(prefix="wal-", dir=base))
        try:
            results[system.name] = measure(system, db_of(root), root, n)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return results


def report(results: dict[str, dict[str, float]]) -> list[str]:
    """The WAL section of the report."""
    if not results:
        return []
    n = int(next(iter(results.values()))["n"])
    lines = [
        f"WAL: largest -wal file while two consumers drain {n:,} jobs"
        f" (sampled every {SAMPLE_EVERY * 1e3:.0f} ms)   project target: < {TARGET_MIB:.0f} MiB"
    ]
    for name, r in results.items():
        mib = r["max_wal_bytes"] / MIB
        verdict = ("met   " if mib < TARGET_MIB else "MISSED") if name.startswith("project") else ""
        lines.append(
            f"  {verdict:<6} {name:<12} max {mib:7.1f} MiB,"
            f" at the end {r['end_wal_bytes'] / MIB:.1f} MiB"
            f" (database {r['db_bytes'] / MIB:.1f} MiB; {r['jobs_per_s']:,.0f} jobs/s;"
            f" {r['samples']:,.0f} samples)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wal_bench", description=__doc__)
    parser.add_argument("--n", type=int, default=N, help=f"jobs to drain (default {N})")
    parser.add_argument("--systems", default="limit,project", help="comma list: limit, project")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    base = Path(tempfile.mkdtemp(prefix="bench-"))  # short: AF_UNIX paths are capped
    try:
        results = run(args.n, {s.strip() for s in args.systems.split(",")}, base)
    except harness.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(base)
    for line in report(results):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
