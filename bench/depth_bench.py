"""Queue depth: the cost of one claim+complete cycle at 1,000 and at 1,000,000 pending jobs.

Owns the depth measurement of issue #13 (target: the deep queue within 1.3x of the shallow
one). Each database is built with the store's real schema (`SqliteStore.create_schema`)
and filled directly in SQL, one transaction of `INSERT ... SELECT` from a recursive CTE:
the deep one holds 1,000,000 pending jobs plus 1,000,000 `done` rows not yet purged. The
filled file is cached under the system temp dir (`bench-depth-cache/`, keyed by the
schema text, the sizes and the SQLite version) and copied for each run, since the deep
build takes ~10 s and a run changes the file.

A cycle is the runtime's own calls on a real `SqliteStore`, both as the worker uses them:

- `claim, then record`: claim one job (`BEGIN IMMEDIATE` + the claim), then complete it
  in autocommit: an idle worker's path, two transactions a job.
- `record with the next claim`: complete the previous job and claim the next in one transaction:
  a busy worker's hot path (`Consumer._flush`).

The depth stays constant: after each timed block of cycles, untimed, the jobs it claimed
go back to pending behind every other one (a fresh `run_at`), as if a producer kept up.
The depths take turns block by block; per depth the median µs per cycle, and the median
of the deep/shallow ratios of adjacent blocks, with
`EXPLAIN QUERY PLAN` of the claim statement on the deep database.

    python -m bench.depth_bench [--quick] [--pending 1000000] [--done 1000000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from reference import sqlite_store
from reference.records import Settlement
from reference.sqlite_store import SqliteStore

if TYPE_CHECKING:
    from collections.abc import Callable

SHALLOW = 1_000
DEEP = 1_000_000
DEEP_DONE = 1_000_000
TARGET = 1.3  # the target: deep / shallow
LEASE = 60.0
OWNER = "bench"  # the claiming worker's owner id
T0 = 1_700_000_000.0  # done rows finished at T0 + i; pending jobs due at T0 + DEEP_DONE + i
NOW = T0 + 1e9  # every job is due; a reset puts a job behind all the others, still due
BLOCK = 200  # cycles per timed block (the shallow queue keeps >= 800 pending in a block)
BLOCKS = 15
QUICK_BLOCKS = 5
WARM_UP = 200  # untimed cycles first, on every fresh connection
CACHE = Path(tempfile.gettempdir()) / "bench-depth-cache"

_FILL_DONE = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
    " INSERT INTO jobs (class_name, args, options, status, created_at, run_at,"
    " locked_by, locked_at, finished_at, attempts)"
    " SELECT 'bench.jobs.Noop', '[]', '{}', 'done', ? + i, ? + i, 'bench', ? + i, ? + i, 1 FROM n"
)
_FILL_PENDING = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
    " INSERT INTO jobs (class_name, args, options, status, created_at, run_at)"
    " SELECT 'bench.jobs.Noop', '[]', '{}', 'pending', ? + i, ? + i FROM n"
)
_RESET = (
    "UPDATE jobs SET status = 'pending', run_at = ?, locked_by = NULL, locked_at = NULL,"
    " lease_until = NULL, finished_at = NULL, attempts = 0 WHERE id = ?"
)


def build(path: Path, pending: int, done: int) -> None:
    """A queue database at `path`: the store's schema, `done` done rows, then `pending` jobs."""
    SqliteStore.create_schema(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")  # a scratch file: rebuilt if lost
        conn.execute("PRAGMA cache_size = -262144")  # 256 MiB: the index appends stay cached
        conn.execute("BEGIN")
        if done:
            conn.execute(_FILL_DONE, (done, T0, T0, T0, T0))
        conn.execute(_FILL_PENDING, (pending, T0 + done, T0 + done))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()


def cached(pending: int, done: int, cache: Path = CACHE) -> Path:
    """The filled database for (pending, done), built once per schema and SQLite version."""
    key = hashlib.sha256(
        repr((sqlite_store._SCHEMA, sqlite_store.SCHEMA_VERSION, sqlite3.sqlite_version)).encode()
    ).hexdigest()[:12]
    path = cache / f"depth-{pending}-{done}-{key}.db"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        scratch = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            build(scratch, pending, done)
            scratch.replace(path)  # a complete file or none: an interrupted build is redone
        finally:
            for leftover in (scratch, *(Path(f"{scratch}{s}") for s in ("-wal", "-shm"))):
                leftover.unlink(missing_ok=True)
    return path


def claim_plan(path: Path) -> list[str]:
    """EXPLAIN QUERY PLAN of the store's claim statement (`_CLAIM`), one line per step."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        rows = conn.execute(
            "EXPLAIN QUERY PLAN " + sqlite_store._CLAIM.format(fault=""),
            ("bench", NOW, NOW + LEASE, NOW, 1),
        ).fetchall()
    finally:
        conn.close()
    return [str(r[3]) for r in rows]


class Cycles:
    """Claim+complete cycles on one database through a real SqliteStore."""

    def __init__(self, path: Path, next_run_at: float) -> None:
        self._path = path
        self.store = SqliteStore(path)
        self._next_run_at = next_run_at
        self._held: tuple[int, int] | None = None  # record_with_claim: the claim to complete
        self._touched: list[int] = []

    def claim_then_record(self) -> None:
        """An idle worker's cycle: claim one job, then record its success (two transactions)."""
        _, (row,) = self.store.claim(OWNER, now=NOW, lease=LEASE, limit=1)
        self.store.claim(
            OWNER, now=NOW, lease=LEASE, limit=0, settle=[Settlement(row.id, row.attempts)]
        )
        self._touched.append(row.id)

    def record_with_claim(self) -> None:
        """A busy worker's cycle: complete the held job and claim the next, one transaction."""
        settle = [] if self._held is None else [Settlement(*self._held)]
        _, (row,) = self.store.claim(OWNER, now=NOW, lease=LEASE, limit=1, settle=settle)
        self._held = (row.id, row.attempts)
        self._touched.append(row.id)

    def reset(self) -> None:
        """Untimed: every job claimed since the last reset is pending again, behind the rest."""
        if self._held is not None:
            job_id, attempt = self._held
            self.store.claim(
                OWNER, now=NOW, lease=LEASE, limit=0, settle=[Settlement(job_id, attempt)]
            )
            self._held = None
        params = []
        for job_id in self._touched:
            self._next_run_at += 1.0
            params.append((self._next_run_at, job_id))
        self._touched = []
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_RESET, params)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def close(self) -> None:
        self.store.close()


def measure(paths: dict[str, tuple[Path, int, int]], blocks: int) -> dict[str, object]:
    """µs per cycle of each kind at each depth, over `blocks` timed blocks of BLOCK cycles.

    The depths take turns, block by block (which goes first alternates), so the machine's
    drift and the other processes on it land on both alike; the ratio is the median of the
    deep/shallow ratios of adjacent blocks. CPU time is kept too: it excludes waiting for
    a core, which a shared machine adds to wall time at random.
    """
    opened = {
        label: Cycles(path, T0 + done + pending) for label, (path, pending, done) in paths.items()
    }
    kinds: dict[str, Callable[[Cycles], None]] = {
        "claim, then record": Cycles.claim_then_record,
        "record with the next claim": Cycles.record_with_claim,
    }
    out: dict[str, object] = {}
    wall, cpu = time.perf_counter, time.process_time
    try:
        for name, cycle in kinds.items():
            for cycles in opened.values():
                for _ in range(WARM_UP):
                    cycle(cycles)
                cycles.reset()
            per_block: dict[str, list[float]] = {label: [] for label in opened}
            cpu_block: dict[str, list[float]] = {label: [] for label in opened}
            for b in range(blocks):
                order = list(opened) if b % 2 == 0 else list(reversed(opened))
                for label in order:
                    cycles = opened[label]
                    w0, c0 = wall(), cpu()
                    for _ in range(BLOCK):
                        cycle(cycles)
                    w1, c1 = wall(), cpu()
                    per_block[label].append((w1 - w0) / BLOCK * 1e6)
                    cpu_block[label].append((c1 - c0) / BLOCK * 1e6)
                    cycles.reset()
            shallow, deep = per_block["shallow"], per_block["deep"]
            out[name] = {
                "shallow_us": statistics.median(shallow),
                "deep_us": statistics.median(deep),
                "ratio": statistics.median(d / s for s, d in zip(shallow, deep, strict=True)),
                "shallow_cpu_us": statistics.median(cpu_block["shallow"]),
                "deep_cpu_us": statistics.median(cpu_block["deep"]),
            }
    finally:
        for cycles in opened.values():
            cycles.close()
    return out


def run(
    *,
    quick: bool = False,
    pending: int = DEEP,
    done: int = DEEP_DONE,
    workdir: Path | None = None,
    cache: Path = CACHE,
) -> dict[str, object]:
    """Both depths, each on a fresh copy of its cached database."""
    blocks = QUICK_BLOCKS if quick else BLOCKS
    t0 = time.monotonic()
    sizes = {"shallow": (SHALLOW, 0), "deep": (pending, done)}
    sources = {label: cached(p, d, cache) for label, (p, d) in sizes.items()}
    result: dict[str, object] = {
        "block": BLOCK,
        "blocks": blocks,
        "prepare_s": time.monotonic() - t0,
        "sizes": {label: {"pending": p, "done": d} for label, (p, d) in sizes.items()},
    }
    with tempfile.TemporaryDirectory(prefix="depth-", dir=workdir) as tmp:
        paths = {}
        for label, (p, d) in sizes.items():
            paths[label] = (Path(tmp) / f"{label}.db", p, d)
            shutil.copyfile(sources[label], paths[label][0])
        result["plan"] = claim_plan(paths["deep"][0])
        result["cycles"] = measure(paths, blocks)
    return result


def report(result: dict[str, object]) -> list[str]:
    """The depth section of the report: µs per cycle at each depth and the ratio."""
    sizes, cycles = result["sizes"], result["cycles"]
    assert isinstance(sizes, dict)
    assert isinstance(cycles, dict)
    shallow, deep = sizes["shallow"], sizes["deep"]
    lines = [
        f"Depth: wall µs per claim+complete cycle, real SqliteStore, median of"
        f" {result['blocks']} blocks of {result['block']} (CPU µs in brackets)"
        f"   target: deep <= {TARGET}x shallow",
        f"  shallow = {shallow['pending']:,} pending; deep = {deep['pending']:,} pending"
        f" + {deep['done']:,} done not yet purged",
    ]
    for name, f in cycles.items():
        verdict = "met   " if f["ratio"] <= TARGET else "MISSED"
        lines.append(
            f"  {verdict} {name:<22} shallow {f['shallow_us']:6.1f} µs ({f['shallow_cpu_us']:.1f})"
            f"   deep {f['deep_us']:6.1f} µs ({f['deep_cpu_us']:.1f})   {f['ratio']:.2f}x"
        )
    plan = result.get("plan")
    if isinstance(plan, list):
        lines.append("  claim plan (deep): " + "; ".join(plan))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.depth_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_BLOCKS} blocks, not {BLOCKS}")
    parser.add_argument("--pending", type=int, default=DEEP, help="pending jobs in the deep queue")
    parser.add_argument("--done", type=int, default=DEEP_DONE, help="done rows in the deep queue")
    args = parser.parse_args(argv)
    for line in report(run(quick=args.quick, pending=args.pending, done=args.done)):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
