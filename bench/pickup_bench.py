"""Pickup latency: enqueue to job start across real processes, with idle workers.

Run: `python -m bench.pickup_bench [--jobs 200] [--every 0.02] [--workers 2]`. Starts a real
supervisor (`python -m reference.worker`) on a temp queue, then from this process enqueues one
`PickupStamp` job every `--every` seconds with `perform_async`, passing `time.time()` taken
just before the call; the job writes `time.time()` at its start. Prints p50/p99/max of the
difference, and the producer's cost per enqueue with the wake-up and without one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from reference import Job, current_worker

if TYPE_CHECKING:
    from collections.abc import Callable

BOUND = 30.0  # seconds to wait for the workers or the jobs before giving up


class PickupStamp(Job):
    """Appends "<enqueued_at> <started_at> <worker>" to `ledger` (one atomic write)."""

    async def perform(self, ledger: str, enqueued_at: float) -> None:
        started = time.time()
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{enqueued_at!r} {started!r} {current_worker()}\n".encode())
        finally:
            os.close(fd)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def _paced_costs(enqueue: Callable[[], object], n: int, every: float) -> list[float]:
    """Seconds per `enqueue()` call, one call every `every` s (so the workers stay idle)."""
    costs = []
    for _ in range(n):
        t0 = time.perf_counter()
        enqueue()
        costs.append(time.perf_counter() - t0)
        time.sleep(every)  # pacing, not a wait on a condition
    return costs


def run(jobs: int, every: float, workers: int) -> None:
    """Start a supervisor, enqueue `jobs` paced by `every`, print the latency table."""
    from reference.clock import SystemClock
    from reference.producer import Producer
    from reference.queue import configure, reset

    root = Path(tempfile.mkdtemp(prefix="pb-"))
    db, sockets, ledger, log = root / "q.db", root / "s", root / "ledger", root / "worker.log"
    argv = [
        sys.executable,
        "-m",
        "reference.worker",
        "--workers",
        str(workers),
        "--metrics",
        "off",
        "--import",
        "bench.pickup_bench",
        "--db",
        str(db),
        "--socket-dir",
        str(sockets),
        "--log-level",
        "WARNING",
    ]
    with log.open("wb") as err:
        sup = subprocess.Popen(argv, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(
            lambda: all((sockets / f"worker-{i}.sock").exists() for i in range(1, workers + 1)),
            "the workers' sockets",
        )
        locked = configure(db, str(sockets), workers, create=False)
        ledger_arg = str(ledger)
        costs = _paced_costs(
            lambda: PickupStamp.perform_async(ledger_arg, time.time()), jobs, every
        )

        def all_ran() -> bool:
            return ledger.exists() and len(ledger.read_text().splitlines()) >= jobs

        _wait_for(all_ran, f"{jobs} jobs to start")
        rows = [line.split() for line in ledger.read_text().splitlines()]
        latency = [(float(b) - float(a)) * 1e3 for a, b, _ in rows]
        per_worker: dict[str, int] = {}
        for *_, w in rows:
            per_worker[w] = per_worker.get(w, 0) + 1
        # The same enqueue into the same live database, idle workers, no wake-up (those
        # jobs wait for the poll; only the producer's cost is measured here).
        quiet = Producer(locked.producer.store, clock=SystemClock(), waker=None)
        unused = str(root / "unused")
        bare = _paced_costs(
            lambda: quiet.enqueue(PickupStamp, (unused, time.time()), options=None), jobs, every
        )
        reset()
    finally:
        os.killpg(sup.pid, signal.SIGTERM)
        try:
            sup.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:
            os.killpg(sup.pid, signal.SIGKILL)
            sup.wait()
        shutil.rmtree(root, ignore_errors=True)

    print(f"pickup latency, {jobs} jobs, one every {every * 1e3:.0f} ms, {workers} idle workers")
    print(
        f"  enqueue -> start   p50 {_quantile(latency, 0.5):7.3f} ms   "
        f"p99 {_quantile(latency, 0.99):7.3f} ms   max {max(latency):7.3f} ms"
    )
    for label, values in (("with wake-up", costs), ("without wake-up", bare)):
        us = [c * 1e6 for c in values]
        print(
            f"  enqueue {label:<16}  p50 {statistics.median(us):7.1f} µs   "
            f"p99 {_quantile(us, 0.99):7.1f} µs   mean {statistics.fmean(us):7.1f} µs"
        )
    print(f"  jobs per worker    {dict(sorted(per_worker.items()))}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pickup_bench", description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--every", type=float, default=0.02, help="seconds between enqueues")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    # Run from the importable module, not `__main__`: the workers know the job as
    # bench.pickup_bench.PickupStamp, and a class defined in `__main__` has another name.
    from bench import pickup_bench

    pickup_bench.run(args.jobs, args.every, args.workers)


if __name__ == "__main__":
    main()
