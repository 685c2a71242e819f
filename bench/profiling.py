"""Where the project's time goes on the benchmark's hot paths, with cProfile (no py-spy here).

Owns three profiles, each printed as the top functions by own time: the producer's
`perform_async` loop (W1), its `enqueue_many` loop (W1 bulk), and one real worker process
draining a pre-filled queue (W2; `python -m cProfile -m reference.worker --worker-index 1`,
stopped with SIGTERM so it exits through its graceful path and cProfile writes the file).

    python -m bench.profiling producer|bulk|worker [--n 5000] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import tempfile
from pathlib import Path

from bench import harness
from bench.project import ProjectSystem, db_path, socket_dir


def _print(stats: pstats.Stats, top: int) -> None:
    stats.sort_stats("tottime").print_stats(top)


def producer(n: int, top: int, *, bulk: bool) -> None:
    """Profile n enqueues through the public API, wake-ups landing on sink sockets."""
    import reference.queue
    from bench.jobs import Noop

    root = Path(tempfile.mkdtemp(prefix="bp-"))
    system = ProjectSystem(2, 2)
    system.prepare(root)
    sink = harness.SocketSink(system.sink_paths(root))
    try:
        reference.queue.configure(db_path(root), str(socket_dir(root)), 2)
        profile = cProfile.Profile()
        if bulk:
            calls = [(Noop, (), None)] * 100
            profile.enable()
            for _ in range(n // 100):
                reference.queue.enqueue_many(calls)
            profile.disable()
        else:
            profile.enable()
            for _ in range(n):
                Noop.perform_async()
            profile.disable()
        reference.queue.reset()
        _print(pstats.Stats(profile, stream=sys.stdout), top)
    finally:
        sink.close()
        shutil.rmtree(root, ignore_errors=True)


def worker(n: int, top: int, concurrency: int) -> None:
    """Profile one worker process draining n pre-enqueued no-op jobs."""
    root = Path(tempfile.mkdtemp(prefix="bp-"))
    system = ProjectSystem(1, concurrency)
    system.prepare(root)
    out = root / "worker.prof"
    try:
        harness.run_producer(system.producer_argv("prefill", root, n, n), root / "producer.log")
        argv = [
            *harness.module_argv("cProfile", "-o", str(out), "-m", "reference.worker"),
            *system.worker_args(root),
            "--worker-index",
            "1",
        ]
        service = harness.start_service("profiled worker", argv, root / "worker.log")
        try:
            harness.wait_until(lambda: system.drained(root, n), f"{n} jobs")
            first, last = system.drain_window(root, n)
        finally:
            service.stop()
        print(f"one worker, concurrency {concurrency}: {n / (last - first):,.0f} jobs/s profiled")
        _print(pstats.Stats(str(out), stream=sys.stdout), top)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profiling", description=__doc__)
    parser.add_argument("what", choices=("producer", "bulk", "worker"))
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args(argv)
    if args.what == "worker":
        worker(args.n, args.top, args.concurrency)
    else:
        producer(args.n, args.top, bulk=args.what == "bulk")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
