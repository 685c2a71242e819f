"""What would bound the WAL: two bare writer processes mimicking the workers' hot path.

Owns the experiment behind the WAL figure's analysis. The workers' own checkpointing can't
be changed from the bench (they are other processes, and `reference/` is not the bench's
to edit), so two processes here run the worker's steady state in bare sqlite3 with the
store's schema, SQL and pragmas: one `BEGIN IMMEDIATE` per cycle that completes the jobs
claimed last time and claims up to `--claim` more (`claim(settle=...)`), waiting for the
lock with the store's back-off (20 µs doubling to 0.5 ms) or SQLite's busy handler.
Then, one variant at a time: a checkpoint every `--every` seconds (or whenever the -wal
file passes `--over` MiB) from writer 1, in `--mode` PASSIVE, RESTART or TRUNCATE, and/or
`PRAGMA journal_size_limit`. The parent samples the -wal file's size every 5 ms.

    python -m bench.wal_mimic --n 200000 [--mode restart --every 1] [--over 16]
        [--size-limit-mib 16] [--wait backoff|handler]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time

from reference import sqlite_store
from reference.sqlite_store import SqliteStore

LEASE = 60.0
MIB = 1024 * 1024


def _connect(
    db: str, wait: str, size_limit: int | None, opts_autocheckpoint: bool = True
) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None, cached_statements=64)
    conn.execute(f"PRAGMA busy_timeout = {5000 if wait == 'handler' else 0}")
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA mmap_size = {sqlite_store.MMAP_SIZE}").fetchall()
    if not opts_autocheckpoint:
        conn.execute("PRAGMA wal_autocheckpoint = 0")
    if size_limit is not None:
        conn.execute(f"PRAGMA journal_size_limit = {size_limit}").fetchall()
    return conn


def _begin(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, with the store's back-off when the busy handler is off."""
    delay = sqlite_store.LOCK_WAIT_FIRST
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            time.sleep(delay)
            delay = min(delay * 2, sqlite_store.LOCK_WAIT_MAX)


def writer(db: str, index: int, opts: dict[str, object], out: multiprocessing.Queue[str]) -> None:
    """Drain the queue one complete+claim transaction at a time; report checkpoint costs."""
    owner = f"mimic-{index}"
    size_limit = opts["size_limit"]
    conn = _connect(
        db,
        str(opts["wait"]),
        size_limit if isinstance(size_limit, int) else None,
        not opts["no_autocheckpoint"],
    )
    fetch = sqlite_store._CLAIM.format(fault="")
    mode, every, over = opts["mode"], float(opts["every"]), float(opts["over"]) * MIB  # type: ignore[arg-type]
    held: list[tuple[int, int]] = []
    ckpt_ms: list[float] = []
    busy = 0
    last_ckpt = time.monotonic()
    fence: sqlite3.Connection | None = None
    partial = 0  # checkpoints that left frames behind (a reader's older snapshot)
    while True:
        now = time.time()
        _begin(conn)
        for job_id, attempt in held:
            conn.execute(sqlite_store._COMPLETE, (now, job_id, attempt, owner))
        rows = conn.execute(fetch, (owner, now, now + LEASE, now, opts["claim"])).fetchall()
        conn.execute("COMMIT")
        held = [(r[0], r[7]) for r in rows]
        if not held:
            break
        if (index == 1 or opts["by_all"]) and mode != "none":
            t = time.monotonic()
            due = (every > 0 and t - last_ckpt >= every) or (
                over > 0 and os.stat(f"{db}-wal").st_size > over
            )
            if due and mode == "fence":
                # Hold the write lock on one connection (no one can commit) while another
                # backfills every frame: the next writer to begin restarts the WAL.
                last_ckpt = t
                if fence is None:
                    fence = sqlite3.connect(db, isolation_level=None)
                _begin(conn)
                (blocked, log, done) = fence.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                conn.execute("COMMIT")
                busy += blocked
                partial += log != done
                ckpt_ms.append((time.monotonic() - t) * 1e3)
            elif due:
                last_ckpt = t
                conn.execute("PRAGMA busy_timeout = 1000")  # RESTART/TRUNCATE wait for readers
                # SQLITE_BUSY at once, busy handler or not, while the other writer runs its
                # own (auto)checkpoint: retry every ms for up to `--retry` ms.
                for _ in range(int(opts["retry"]) + 1):  # type: ignore[call-overload]
                    (blocked, _, _) = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
                    if not blocked:
                        break
                    busy += 1
                    time.sleep(0.001)
                conn.execute(f"PRAGMA busy_timeout = {5000 if opts['wait'] == 'handler' else 0}")
                ckpt_ms.append((time.monotonic() - t) * 1e3)
    conn.close()
    out.put(
        json.dumps(
            {
                "index": index,
                "checkpoints": len(ckpt_ms),
                "busy": busy,
                "partial": partial,
                "ms": ckpt_ms,
            }
        )
    )


def run(n: int, opts: dict[str, object]) -> dict[str, object]:
    """Fill n jobs, drain them with two writers, sample the WAL; return the figures."""
    with tempfile.TemporaryDirectory(prefix="wal-mimic-") as tmp:
        db = os.path.join(tmp, "q.db")
        SqliteStore.create_schema(db)
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN")
        now = time.time()
        conn.executemany(
            sqlite_store._INSERT, (("bench.jobs.Noop", "[]", "{}", now, now) for _ in range(n))
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        conn.close()
        ctx = multiprocessing.get_context("spawn")
        out: multiprocessing.Queue[str] = ctx.Queue()
        procs = [ctx.Process(target=writer, args=(db, i, opts, out)) for i in (1, 2)]
        largest, samples = 0, 0
        t0 = time.monotonic()
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            with contextlib.suppress(FileNotFoundError):
                largest = max(largest, os.stat(f"{db}-wal").st_size)
            samples += 1
            time.sleep(0.005)
        elapsed = time.monotonic() - t0
        reports = [json.loads(out.get()) for _ in procs]
        for p in procs:
            p.join()
        ms = [m for r in reports for m in r["ms"]]
        return {
            "n": n,
            **opts,
            "max_wal_mib": round(largest / MIB, 1),
            "jobs_per_s": round(n / elapsed),
            "checkpoints": len(ms),
            "busy": sum(r["busy"] for r in reports),
            "partial": sum(r["partial"] for r in reports),
            "ckpt_ms_p50": round(statistics.median(ms), 2) if ms else None,
            "ckpt_ms_max": round(max(ms), 2) if ms else None,
            "samples": samples,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wal_mimic", description=__doc__)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--claim", type=int, default=2, help="jobs claimed per cycle (slots)")
    parser.add_argument("--wait", choices=("backoff", "handler"), default="backoff")
    parser.add_argument(
        "--mode", choices=("none", "passive", "restart", "truncate", "fence"), default="none"
    )
    parser.add_argument("--every", type=float, default=0.0, help="seconds between checkpoints")
    parser.add_argument("--over", type=float, default=0.0, help="checkpoint past this WAL, MiB")
    parser.add_argument(
        "--no-autocheckpoint", action="store_true", help="wal_autocheckpoint = 0 in both"
    )
    parser.add_argument("--by-all", action="store_true", help="both writers checkpoint")
    parser.add_argument("--retry", type=int, default=0, help="retries of a busy checkpoint")
    parser.add_argument("--size-limit-mib", type=float, default=None, help="journal_size_limit")
    args = parser.parse_args(argv)
    opts: dict[str, object] = {
        "claim": args.claim,
        "wait": args.wait,
        "mode": args.mode,
        "every": args.every,
        "over": args.over,
        "retry": args.retry,
        "no_autocheckpoint": args.no_autocheckpoint,
        "by_all": args.by_all,
        "size_limit": None if args.size_limit_mib is None else int(args.size_limit_mib * MIB),
    }
    json.dump(run(args.n, opts), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
