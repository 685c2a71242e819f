"""`python -m bench` (`make bench`): W1/W2/W3 for the limit, huey and the project, one table.

Owns the orchestration: each repetition runs every workload for every system, the limit
first, in fresh directories and fresh processes; each figure is also a ratio to the limit of
the same repetition; the table shows medians of both. Then, once each, the depth case
(claim+complete at 1,000 vs 1,000,000 pending), the WAL figure (the largest -wal file while
two consumers drain --wal-n jobs) and the scheduler micro-benchmark.
Writes bench/results.json (gitignored). Imports the bench modules, never `reference` directly.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench import (
    arq_system,
    depth_bench,
    harness,
    huey_system,
    procrastinate_system,
    rq_system,
    sched_bench,
    wal_bench,
)
from bench.harness import BenchError, median, quantile
from bench.limit import LimitSystem
from bench.project import ProjectSystem

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.harness import System

RESULTS = Path(__file__).with_name("results.json")
DRAIN_POLL = 0.05  # seconds between W2's completion checks


@dataclass(frozen=True)
class Metric:
    """One row of the table: a workload's figure, and which way is better."""

    workload: str
    name: str
    unit: str
    higher_is_better: bool
    target: str = ""  # the project's target, as printed


METRICS = (
    Metric("W1 enqueue, one at a time", "jobs/s", "/s", True, "ratio >= 0.7"),
    Metric("W1 enqueue, one at a time", "p50 per call", "µs", False),
    Metric("W1 enqueue, one at a time", "p99 per call", "µs", False),
    Metric("W1 enqueue, bulk", "jobs/s", "/s", True, "ratio >= 0.7"),
    Metric("W1 enqueue, bulk", "p50 per call", "µs", False),
    Metric("W1 enqueue, bulk", "p99 per call", "µs", False),
    Metric("W2 drain", "jobs/s", "/s", True, "ratio >= 0.6"),
    Metric("W3 pickup", "p50", "ms", False, "< 1 ms"),
    Metric("W3 pickup", "p99", "ms", False, "< 5 ms"),
    Metric("W3 pickup", "max", "ms", False),
)


@dataclass
class Run:
    """Every figure of every repetition: rep -> metric key -> system -> value."""

    reps: list[dict[str, dict[str, float]]] = field(default_factory=list)

    def put(self, rep: int, key: str, system: str, value: float) -> None:
        while len(self.reps) <= rep:
            self.reps.append({})
        self.reps[rep].setdefault(key, {})[system] = value

    def medians(self, key: str, system: str) -> tuple[float, float] | None:
        """(median value, median ratio to the limit of the same rep), or None if absent."""
        values, ratios = [], []
        for rep in self.reps:
            row = rep.get(key, {})
            if system in row:
                values.append(row[system])
                if row.get("limit"):
                    ratios.append(row[system] / row["limit"])
        if not values:
            return None
        return median(values), (median(ratios) if ratios else float("nan"))


def key_of(m: Metric) -> str:
    return f"{m.workload} | {m.name}"


# -- the workloads ---------------------------------------------------------------------------


def fresh_root(base: Path, label: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=label[:6].replace(" ", "") + "-", dir=base))
    return root


def w1(system: System, root: Path, mode: str, n: int, batch: int) -> dict[str, float]:
    """One producer process enqueues n jobs; wake-ups land on sink sockets (idle consumers)."""
    system.prepare(root)
    sink = harness.SocketSink(system.sink_paths(root)) if system.sink_paths(root) else None
    try:
        out = harness.run_producer(
            system.producer_argv(mode, root, n, batch), root / "producer.log"
        )
    finally:
        if sink is not None:
            sink.close()
    calls = [float(c) for c in out["calls"]]  # type: ignore[attr-defined]
    jobs = n if mode == "single" else len(calls) * batch
    return {
        "jobs/s": jobs / float(out["elapsed"]),  # type: ignore[arg-type]
        "p50 per call": quantile(calls, 0.5) * 1e6,
        "p99 per call": quantile(calls, 0.99) * 1e6,
    }


def w2(system: System, root: Path, n: int) -> dict[str, float]:
    """Pre-enqueue n jobs, start the consumers, measure first start -> all done."""
    system.prepare(root)
    harness.run_producer(system.producer_argv("prefill", root, n, n), root / "producer.log")
    services = system.start(root)
    try:

        def done() -> bool:
            for s in services:
                s.check_alive()
            return system.drained(root, n)

        # Slow peers drain ~100 jobs/s (rq forks per job): allow 20 ms a job, at least
        # BOUND. A dead worker still fails at once (done() checks every process). The
        # window comes from each system's own records, not from when this poll notices,
        # so poll gently: every check is a query competing with the workers measured.
        harness.wait_until(
            done,
            f"{system.name} to drain {n} jobs",
            timeout=max(harness.BOUND, n * 0.02),
            poll=DRAIN_POLL,
        )
        first, last = system.drain_window(root, n)
    finally:
        for s in services:
            s.stop()
    return {"jobs/s": n / (last - first)}


def w3(system: System, root: Path, jobs: int) -> dict[str, float]:
    """Idle consumers; one job every 20 ms; latency = job start - enqueue time."""
    system.prepare(root)
    services = system.start(root)
    ledger = root / "ledger"
    try:

        def ready() -> bool:
            for s in services:
                s.check_alive()
            return system.ready(root)

        harness.wait_until(ready, f"{system.name} to start")
        harness.run_producer(system.producer_argv("pickup", root, jobs, 1), root / "producer.log")
        harness.wait_until(
            lambda: harness.ledger_lines(ledger) >= jobs + 1, f"{system.name}: {jobs} jobs"
        )
    finally:
        for s in services:
            s.stop()
    latency = [(b - a) * 1e3 for a, b in harness.read_ledger(ledger) if a != 0.0]
    return {"p50": quantile(latency, 0.5), "p99": quantile(latency, 0.99), "max": max(latency)}


# -- reporting -------------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if unit == "/s":
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:,.0f} µs" if value >= 100 else f"{value:.1f} µs"


def table(run: Run, systems: list[str]) -> list[str]:
    """One block per workload: a row per system, a column per figure, with its ratio."""
    width = 20
    lines = []
    workloads = list(dict.fromkeys(m.workload for m in METRICS))
    for workload in workloads:
        metrics = [m for m in METRICS if m.workload == workload]
        head = f"{workload:<27}" + "".join(f"{m.name:>{width}}" for m in metrics)
        targets = "; ".join(f"{m.name} {m.target}" for m in metrics if m.target)
        lines.append(head + (f"   project target: {targets}" if targets else ""))
        for system in systems:
            cells = []
            for m in metrics:
                got = run.medians(key_of(m), system)
                shown = "-" if got is None else f"{fmt(got[0], m.unit)} ({got[1]:.2f}x)"
                cells.append(f"{shown:>{width}}")
            if any(c.strip() != "-" for c in cells):
                lines.append(f"  {system:<25}" + "".join(cells))
        lines.append("")
    return lines[:-1]


def verdicts(run: Run, projects: list[str]) -> list[str]:
    """Whether each project configuration meets each target (median figures)."""
    out = []
    for m in METRICS:
        if not m.target:
            continue
        for p in projects:
            got = run.medians(key_of(m), p)
            if got is None:
                continue
            value, ratio = got
            if m.target.startswith("ratio"):
                goal = float(m.target.split(">=")[1])
                ok, shown = ratio >= goal, f"{ratio:.2f}x"
            else:
                goal = float(m.target.strip("< ms"))
                ok, shown = value < goal, f"{value:.2f} ms"
            out.append(
                f"  {'met   ' if ok else 'MISSED'} {p:<12} {m.workload}, {m.name}: {shown}"
                f" (target {m.target})"
            )
    return out


def precompile() -> None:
    """Byte-compile the project's and the benchmark's sources, as pip did for the peers.

    With PYTHONDONTWRITEBYTECODE set (as on this machine kind) no process caches what it
    compiles, and the editable project would be compiled again by every worker inside the
    measured window while the installed peers load their bytecode.
    """
    root = Path(__file__).resolve().parent.parent
    for package in ("reference", "bench"):
        compileall.compile_dir(root / package, quiet=1, workers=1)


def machine() -> dict[str, object]:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
    }


# The other queues, in table order: (name, why it cannot run here or None, constructor).
PEERS: tuple[tuple[str, Callable[[], str | None], Callable[[], System]], ...] = (
    ("huey", huey_system.available, huey_system.HueySystem),
    ("arq", arq_system.available, arq_system.ArqSystem),
    ("rq", rq_system.available, rq_system.RqSystem),
    ("procrastinate", procrastinate_system.available, procrastinate_system.ProcrastinateSystem),
)


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--n", type=int, default=5000, help="jobs in W1 and W2 (default 5000)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions, >= 3 for the medians")
    parser.add_argument("--batch", type=int, default=100, help="jobs per bulk call (W1 bulk)")
    parser.add_argument(
        "--quick", action="store_true", help="W3 with 50 jobs, smaller scheduler bench, no sim run"
    )
    parser.add_argument(
        "--workloads", default="W1,W2,W3,depth,wal", help="comma list (default all)"
    )
    parser.add_argument(
        "--depth-pending",
        type=int,
        default=depth_bench.DEEP,
        help=f"depth: pending jobs in the deep queue (default {depth_bench.DEEP:,})",
    )
    parser.add_argument(
        "--depth-done",
        type=int,
        default=depth_bench.DEEP_DONE,
        help=f"depth: done rows in the deep queue (default {depth_bench.DEEP_DONE:,})",
    )
    parser.add_argument(
        "--wal-n",
        type=int,
        default=wal_bench.N,
        help=f"wal: jobs drained while the -wal file is sampled (default {wal_bench.N:,})",
    )
    parser.add_argument(
        "--systems",
        default="limit,project," + ",".join(name for name, _, _ in PEERS),
        help="comma list of systems (default all; the limit always runs, as the baseline)",
    )
    parser.add_argument("--no-sched", action="store_true", help="skip the scheduler bench")
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file")
    args = parser.parse_args(argv)
    workloads = {w.strip().upper() for w in args.workloads.split(",")}
    unknown_workloads = workloads - {"W1", "W2", "W3", "DEPTH", "WAL"}
    if unknown_workloads:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown_workloads))}")
    per_rep = bool(workloads & {"W1", "W2", "W3"})  # depth and wal run once, after the reps
    pickup_jobs = 50 if args.quick else harness.PICKUP_JOBS

    chosen = {w.strip().lower() for w in args.systems.split(",")}
    unknown = chosen - {"limit", "project", *(name for name, _, _ in PEERS)}
    if unknown:
        parser.error(f"unknown system(s): {', '.join(sorted(unknown))}")
    systems: list[System] = [LimitSystem()]  # the baseline, always, and first
    projects = [ProjectSystem(2, 2), ProjectSystem(1, 2)] if "project" in chosen else []
    systems.extend(projects)
    skipped: dict[str, str] = {}
    for name, available, make in PEERS:
        if name not in chosen:
            continue
        why_not = available()
        if why_not is None:
            systems.append(make())
        else:
            skipped[name] = why_not
    names = [s.name for s in systems]
    # W1 does not depend on the number of workers: one project producer row is enough.
    w1_systems = [s for s in systems if not projects or s is not projects[1]]

    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so every `finally` stops the
    # worker processes it started instead of leaving them running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    precompile()
    info = machine()
    print(
        f"bench: N={args.n}, {args.reps} reps, bulk batch {args.batch}, W3 {pickup_jobs} jobs"
        f" every {harness.PICKUP_EVERY * 1e3:.0f} ms; {info['cpus']} CPUs ({info['cpu']}),"
        f" Python {info['python']}, SQLite {info['sqlite']}",
        flush=True,
    )
    run = Run()
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="bench-"))  # short: AF_UNIX paths are capped ~107 bytes
    try:
        for rep in range(args.reps if per_rep else 0):
            t_rep = time.monotonic()
            for mode, label in (
                ("single", "W1 enqueue, one at a time"),
                ("bulk", "W1 enqueue, bulk"),
            ):
                if "W1" not in workloads:
                    break
                for system in w1_systems:
                    figures = w1(system, fresh_root(base, system.name), mode, args.n, args.batch)
                    for k, v in figures.items():
                        run.put(rep, f"{label} | {k}", system.name, v)
            if "W2" in workloads:
                for system in systems:
                    for k, v in w2(system, fresh_root(base, system.name), args.n).items():
                        run.put(rep, f"W2 drain | {k}", system.name, v)
            if "W3" in workloads:
                for system in systems:
                    for k, v in w3(system, fresh_root(base, system.name), pickup_jobs).items():
                        run.put(rep, f"W3 pickup | {k}", system.name, v)
            print(f"  rep {rep + 1}/{args.reps}: {time.monotonic() - t_rep:.1f} s", flush=True)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(base, ignore_errors=True)

    if per_rep:
        print()
        print(
            f"Medians of {args.reps} repetitions; (x) = median of the ratios to the limit taken"
            " in each repetition (rates: higher is better; latencies: lower is better)."
        )
        for line in table(run, names):
            print(line)
    print()
    print("Durability and settings:")
    durability = {s.name: s.durability() for s in systems}
    for name, text in durability.items():
        print(f"  {name:<14} {text}")
    print("Skipped:" + ("" if skipped else " none"))
    for name, why in skipped.items():
        print(f"  {name:<14} {why}")
    print("Targets (project, medians):")
    for line in verdicts(run, [p.name for p in projects]):
        print(line)

    depth: dict[str, object] = {}
    if "DEPTH" in workloads:
        print()
        depth = depth_bench.run(quick=args.quick, pending=args.depth_pending, done=args.depth_done)
        for line in depth_bench.report(depth):
            print(line)

    wal: dict[str, dict[str, float]] = {}
    if "WAL" in workloads:
        print()
        wal_systems = {"limit"} | ({"project"} if projects else set())
        base = Path(tempfile.mkdtemp(prefix="bench-"))
        try:
            wal = wal_bench.run(args.wal_n, wal_systems, base)
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            shutil.rmtree(base, ignore_errors=True)
        for line in wal_bench.report(wal):
            print(line)

    sched: dict[str, object] = {}
    if not args.no_sched:
        print()
        sched = sched_bench.run(quick=args.quick)
        for line in sched_bench.report(sched):
            print(line)

    results = {
        "machine": info,
        "args": {
            "n": args.n,
            "reps": args.reps,
            "batch": args.batch,
            "quick": args.quick,
            "pickup_jobs": pickup_jobs,
            "workloads": sorted(workloads),
            "depth_pending": args.depth_pending,
            "depth_done": args.depth_done,
            "wal_n": args.wal_n,
        },
        "durability": durability,
        "skipped": skipped,
        "medians": {
            key_of(m): {
                s: dict(zip(("value", "ratio"), got, strict=True))
                for s in names
                if (got := run.medians(key_of(m), s)) is not None
            }
            for m in METRICS
        },
        "reps": run.reps,
        "depth": depth,
        "wal": wal,
        "scheduler": sched,
        "seconds": time.monotonic() - started,
    }
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.json} ({time.monotonic() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
