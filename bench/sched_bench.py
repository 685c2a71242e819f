"""Scheduler micro-benchmark: CPU time per due entry at 10, 1,000 and 100,000 entries.

Owns two measurements. (1) The real `reference.scheduler.Scheduler` (with the real
`Runner` and `Slots`) on `sim.loop.SimEventLoop`, so only CPU is measured, never waiting:
after one warm-up cycle it times a fixed number of fires with `time.process_time()`. The
heap should make the cost grow like log N. (2) The simulator's time compression on
`python -m sim run schedule_1000 --seed 1` (1,000 entries, 24 virtual hours).

    python -m bench.sched_bench [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import re
import subprocess
import sys
import time
from datetime import UTC, datetime

from reference import Job
from reference.counters import NullCounters
from reference.observe import NULL_OBSERVER
from reference.runner import Runner, Slots
from reference.schedule import ScheduleEntry
from reference.scheduler import Scheduler
from sim.clock import SimClock
from sim.loop import SimEventLoop
from sim.offload import InlineOffload

SIZES = (10, 1_000, 100_000)
EVERY = 60.0  # seconds; startup jitter spreads the entries over [0, 5) s of each cycle
FIRES = 100_000
QUICK_FIRES = 30_000
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class Tick(Job):
    """Returns at once: the benchmark measures the scheduler, not the job."""

    async def perform(self) -> None:
        return None


async def _measure(entries: int, fires: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    clock = SimClock(loop, EPOCH)
    runner = Runner(
        clock=clock,
        offload=InlineOffload(),
        counters=NullCounters(),
        observer=NULL_OBSERVER,
        worker=1,
    )
    scheduler = Scheduler(
        [
            ScheduleEntry(name=f"e{i}", job_class=Tick, every=EVERY, timeout=30, worker=1)
            for i in range(entries)
        ],
        clock=clock,
        rng=random.Random(1),
        runner=runner,
        slots=Slots(2),
        counters=NullCounters(),
        observer=NULL_OBSERVER,
    )
    cycles = max(1, round(fires / entries))
    stopping = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(scheduler.run(stopping, tasks))
        # Warm up: build the heap and fire every entry once (startup jitter < 5 s).
        await asyncio.sleep(EVERY + 5.5)
        runs0 = sum(s.runs for s in scheduler.states)  # counted outside the timed window
        cpu0 = time.process_time()
        await asyncio.sleep(cycles * EVERY)
        cpu1 = time.process_time()
        runs1 = sum(s.runs for s in scheduler.states)
        stopping.set()
    fired = runs1 - runs0
    return {"entries": entries, "fires": fired, "us_per_fire": (cpu1 - cpu0) / fired * 1e6}


def measure(entries: int, fires: int) -> dict[str, float]:
    """CPU µs per due entry for a schedule of `entries` interval entries."""
    loop = SimEventLoop(max_steps_per_instant=None)
    try:
        return loop.run_until_complete(_measure(entries, fires))
    finally:
        loop.close()


def compression() -> dict[str, float]:
    """Run `python -m sim run schedule_1000 --seed 1` and read its ratio and wall time."""
    done = subprocess.run(
        [sys.executable, "-m", "sim", "run", "schedule_1000", "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    text = done.stdout + done.stderr
    found = re.search(r"in ([\d.]+) s wall, ratio ([\d,]+)x", text)
    if done.returncode != 0 or found is None:
        return {"error": float(done.returncode)}
    return {"wall_s": float(found[1]), "ratio": float(found[2].replace(",", ""))}


def run(*, quick: bool = False) -> dict[str, object]:
    """Both measurements, as a JSON-ready dict."""
    fires = QUICK_FIRES if quick else FIRES
    rows = [measure(n, fires) for n in SIZES]
    result: dict[str, object] = {"per_fire": rows}
    if not quick:
        result["schedule_1000"] = compression()
    return result


def report(result: dict[str, object]) -> list[str]:
    """The scheduler section of the report, with the log N check."""
    rows = result["per_fire"]
    assert isinstance(rows, list)
    lines = ["Scheduler: CPU per due entry (real Scheduler + Runner on SimEventLoop)"]
    for r in rows:
        lines.append(
            f"  {r['entries']:>7,} entries  {r['us_per_fire']:6.2f} µs per fire"
            f"  ({r['fires']:,.0f} fires timed)"
        )
    lo, mid, hi = rows[0], rows[1], rows[-1]
    # Fit cost = a + b*log2(N) through the ends, then see how well it predicts the middle.
    span = math.log2(hi["entries"]) - math.log2(lo["entries"])
    b = (hi["us_per_fire"] - lo["us_per_fire"]) / span
    a = lo["us_per_fire"] - b * math.log2(lo["entries"])
    predicted = a + b * math.log2(mid["entries"])
    lines.append(
        f"  log N fit through the ends: {a:.2f} + {b:.3f}*log2(N) µs; predicts"
        f" {predicted:.2f} µs at {mid['entries']:,} (measured {mid['us_per_fire']:.2f});"
        f" 10,000x the entries costs {hi['us_per_fire'] / lo['us_per_fire']:.2f}x per fire"
    )
    comp = result.get("schedule_1000")
    if isinstance(comp, dict):
        if "ratio" in comp:
            lines.append(
                f"Simulator: schedule_1000 --seed 1 (1,000 entries, 24 h virtual) in"
                f" {comp['wall_s']:.2f} s wall: compression {comp['ratio']:,.0f}x"
            )
        else:
            lines.append("Simulator: schedule_1000 did not run cleanly")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sched_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for line in report(run(quick=args.quick)):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
