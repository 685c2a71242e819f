"""SqliteStore throughput against a bare sqlite3 loop running the same SQL with the same pragmas.

Run: `python -m bench.store_bench [--n 5000] [--reps 3]`. Measures, in one process, the enqueue
rate (one producer, autocommit) and the fetch+complete rate (one consumer), reporting medians
and the store/bare ratio. Goals (issue): enqueue >= 0.7x, fetch+complete >= 0.6x.
The SQL text is imported from `reference.sqlite_store` so the baseline can never drift from it.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass

from reference import sqlite_store
from reference.records import NewJob, Settlement
from reference.sqlite_store import SqliteStore

T0 = 1_700_000_000.0
LEASE = 30.0
GOALS = {"enqueue": 0.7, "fetch+complete": 0.6}


@dataclass(frozen=True, slots=True)
class Result:
    """Median rates of one benchmark."""

    name: str
    bare_per_s: float
    store_per_s: float

    @property
    def ratio(self) -> float:
        return self.store_per_s / self.bare_per_s


def _bare_connection(path: str) -> sqlite3.Connection:
    """A raw connection configured exactly as SqliteStore configures its own (mmap on)."""
    SqliteStore.create_schema(path)
    conn = sqlite3.connect(path, isolation_level=None, cached_statements=64)
    conn.execute(f"PRAGMA busy_timeout = {sqlite_store.DEFAULT_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA mmap_size = {sqlite_store.MMAP_SIZE}").fetchall()
    return conn


def bare_enqueue(path: str, n: int) -> float:
    """Seconds for `n` autocommit INSERTs on a bare connection."""
    conn = _bare_connection(path)
    sql = sqlite_store._INSERT
    start = time.perf_counter()
    for i in range(n):
        conn.execute(sql, ("bench.Noop", "[]", "{}", T0, T0 + i)).lastrowid  # noqa: B018
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def store_enqueue(path: str, n: int) -> float:
    """Seconds for `n` SqliteStore.enqueue calls, building each NewJob as a producer would."""
    store = SqliteStore(path)
    start = time.perf_counter()
    for i in range(n):
        store.enqueue(NewJob("bench.Noop", "[]", "{}", T0 + i, T0))
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed


def _fill(path: str, n: int) -> None:
    store = SqliteStore(path)
    store.enqueue_many([NewJob("bench.Noop", "[]", "{}", T0 + i, T0) for i in range(n)])
    store.close()


def bare_fetch_complete(path: str, n: int) -> float:
    """Seconds to claim and complete `n` jobs one at a time on a bare connection."""
    _fill(path, n)
    conn = _bare_connection(path)
    fetch = sqlite_store._CLAIM.format(fault="")
    complete = sqlite_store._COMPLETE
    now = T0 + n
    start = time.perf_counter()
    for _ in range(n):
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(fetch, ("bench", now, now + LEASE, now, 1)).fetchall()
        conn.execute("COMMIT")
        conn.execute(complete, (now, rows[0][0], rows[0][7], "bench"))
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def store_fetch_complete(path: str, n: int) -> float:
    """Seconds to claim and complete `n` jobs one at a time through SqliteStore."""
    _fill(path, n)
    store = SqliteStore(path)
    now = T0 + n
    start = time.perf_counter()
    for _ in range(n):
        _, (row,) = store.claim("bench", now=now, lease=LEASE, limit=1)
        store.claim(
            "bench", now=now, lease=LEASE, limit=0, settle=[Settlement(row.id, row.attempts)]
        )
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed


def run(n: int = 5000, reps: int = 3) -> list[Result]:
    """Run both benchmarks `reps` times (baseline first in each rep); return medians."""
    pairs = {
        "enqueue": (bare_enqueue, store_enqueue),
        "fetch+complete": (bare_fetch_complete, store_fetch_complete),
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        for name, (bare, ours) in pairs.items():
            bare_rates, store_rates = [], []
            for rep in range(reps):
                bare_rates.append(n / bare(os.path.join(tmp, f"{name}-{rep}-bare.db"), n))
                store_rates.append(n / ours(os.path.join(tmp, f"{name}-{rep}-store.db"), n))
            results.append(
                Result(name, statistics.median(bare_rates), statistics.median(store_rates))
            )
    return results


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit 1 if a ratio misses its goal."""
    parser = argparse.ArgumentParser(prog="python -m bench.store_bench")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    results = run(args.n, args.reps)
    print(
        f"SqliteStore vs bare sqlite3 {sqlite3.sqlite_version} (n={args.n}, median of {args.reps})"
    )
    print(f"{'benchmark':<16}{'bare jobs/s':>14}{'store jobs/s':>14}{'ratio':>8}{'goal':>7}")
    ok = True
    for r in results:
        goal = GOALS[r.name]
        ok = ok and r.ratio >= goal
        print(
            f"{r.name:<16}{r.bare_per_s:>14,.0f}{r.store_per_s:>14,.0f}{r.ratio:>8.2f}{goal:>7.2f}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
