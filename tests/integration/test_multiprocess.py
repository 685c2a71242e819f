"""Several real worker processes on one SQLite queue and real Unix-socket wake-ups (issue 4).

Ported in spirit from the gem's CI scenarios: a mixed load runs each job exactly once and
spreads over every worker; a SIGKILLed worker is restarted and its in-flight jobs complete;
a separate producer process is not slowed by wake-ups and the queue drains long before
polling alone would allow; stale and live socket files are handled as SPEC says.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from tests.integration.conftest import (
    BOUND,
    JOBS,
    ROOT,
    clean_env,
    ledger_lines,
    status_counts,
    wait_until,
)

if TYPE_CHECKING:
    from tests.integration.conftest import WorkerProc, Workspace

pytestmark = pytest.mark.slow

# A producer process: configure() from argv, then enqueue the calls given as JSON on stdin,
# one perform_async each (one wake-up each), timing every call. Prints per-call costs.
# An argument "@now" becomes time.time() just before the call (pickup latency).
PRODUCER = """
import json, sys, time
from reference.queue import configure
from reference.registry import default_registry
import tests.integration.jobs_for_tests  # registers the jobs
db, sockets, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
configure(db, sockets, workers, create=False)
calls = json.load(sys.stdin)
costs = []
for name, args, options in calls:
    cls = default_registry.resolve(name)
    args = [time.time() if a == "@now" else a for a in args]
    t0 = time.perf_counter()
    cls.perform_async(*args, options=options)
    costs.append(time.perf_counter() - t0)
print(json.dumps(costs))
"""


def _produce(
    ws: Workspace, calls: list[tuple[str, list[object], dict[str, object] | None]], workers: int
) -> list[float]:
    """Run PRODUCER in its own process; return the cost of each perform_async in seconds."""
    result = subprocess.run(
        [sys.executable, "-c", PRODUCER, str(ws.db), str(ws.sockets), str(workers)],
        input=json.dumps(calls),
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=BOUND * 3,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    costs: list[float] = json.loads(result.stdout)
    return costs


def _start_supervisor(ws: Workspace, workers: int, *extra: str) -> WorkerProc:
    sup = ws.worker("--workers", str(workers), *extra, name="supervisor")
    for i in range(1, workers + 1):
        sup.wait_log(f"worker {i} started")
    return sup


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_three_workers_run_a_mixed_load_exactly_once(ws: Workspace) -> None:
    metrics = ws.root / "metrics.bin"  # (a later --metrics wins over the fixture's "off")
    sup = _start_supervisor(ws, 3, "--metrics", str(metrics))
    ledger = str(ws.ledger)
    calls: list[tuple[str, list[object], dict[str, object] | None]] = []
    kinds: dict[str, str] = {}
    for i in range(200):
        tag = f"j{i:03d}"
        if i % 10 == 0:  # 10% failing, no retries
            calls.append((f"{JOBS}.Failing", [ledger, tag], {"retry": 0}))
            kinds[tag] = "failing"
        elif i % 10 in (1, 2):  # 20% slow
            calls.append((f"{JOBS}.SlowRecord", [ledger, tag, 0.2], None))
            kinds[tag] = "slow"
        else:  # 70% fast
            calls.append((f"{JOBS}.Record", [ledger, tag], None))
            kinds[tag] = "fast"
    _produce(ws, calls, 3)

    def settled() -> bool:
        counts = status_counts(ws.db)
        return counts.get("done", 0) + counts.get("failed", 0) == 200

    wait_until(settled, what="all 200 jobs to settle")
    assert status_counts(ws.db) == {"done": 180, "failed": 20}

    lines = ledger_lines(ws.ledger)
    runs = Counter(f[0] for f in lines if len(f) == 3 or f[3] == "start")
    assert set(runs) == set(kinds), "every job ran"
    assert all(n == 1 for n in runs.values()), {t: n for t, n in runs.items() if n != 1}
    ends = Counter(f[0] for f in lines if len(f) == 4 and f[3] == "end")
    assert set(ends) == {t for t, k in kinds.items() if k == "slow"}
    workers = Counter(f[1] for f in lines)
    assert set(workers) == {"1", "2", "3"}, workers  # every worker did work
    pids = {int(f[2]) for f in lines}
    assert len(pids) == 3
    assert sup.pid not in pids

    # The shared metrics file agrees with the ledger, read from yet another process.
    reader = ["-m", "reference.metrics", "--json", "--workers", "3", "--metrics", str(metrics)]
    read = subprocess.run(
        [sys.executable, *reader],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=True,
    )
    snapshot = {str(w["worker"]): w for w in json.loads(read.stdout)}
    runs_per_worker = Counter(f[1] for f in lines if len(f) == 3 or f[3] == "start")
    assert {w: snapshot[w]["total_runs"] for w in snapshot} == dict(runs_per_worker)
    assert sum(w["total_failures"] for w in snapshot.values()) == 20
    assert sum(w["total_successes"] for w in snapshot.values()) == 180

    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0, sup.stderr
    wait_until(lambda: not any(_alive(p) for p in pids), what="every worker to exit")
    log = sup.stderr
    for i in (1, 2, 3):
        assert f"worker {i} exited with status 0" in log
    assert "Traceback" not in log
    print(f"\nmixed load: jobs per worker {dict(sorted(workers.items()))}")


def test_sigkilled_worker_is_restarted_and_its_jobs_complete(ws: Workspace) -> None:
    sup = _start_supervisor(ws, 2)
    ledger = str(ws.ledger)
    tags = [f"long{i}" for i in range(6)]
    _produce(ws, [(f"{JOBS}.SlowRecord", [ledger, t, 1.5], None) for t in tags], 2)

    def started_on_2() -> set[str]:
        return {f[0] for f in ledger_lines(ws.ledger) if f[1] == "2" and f[3] == "start"}

    wait_until(started_on_2, what="worker 2 to start a long job")
    victim = {int(f[2]) for f in ledger_lines(ws.ledger) if f[1] == "2"}
    assert len(victim) == 1
    (pid,) = victim
    os.kill(pid, signal.SIGKILL)
    in_flight = started_on_2() - {
        f[0] for f in ledger_lines(ws.ledger) if f[1] == "2" and f[3] == "end"
    }
    assert in_flight, "worker 2 was killed with jobs in flight"

    sup.wait_log("worker 2 exited with status -9")
    sup.wait_log("re-queued")  # the restarted index recovers what it left running
    wait_until(lambda: status_counts(ws.db) == {"done": 6}, what="all 6 jobs done")

    lines = ledger_lines(ws.ledger)
    ended = Counter(f[0] for f in lines if f[3] == "end")
    assert set(ended) == set(tags), "nothing lost"
    starts = Counter(f[0] for f in lines if f[3] == "start")
    for tag in in_flight:  # killed mid-run, then run again to the end
        assert starts[tag] == 2, (tag, starts)
        assert ended[tag] == 1
    assert all(starts[t] == 1 for t in set(tags) - in_flight)
    new_pids = {int(f[2]) for f in lines if f[1] == "2"} - {pid}
    assert new_pids, "a restarted worker 2 ran the re-queued jobs"
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0, sup.stderr


def test_separate_producer_drains_fast_with_wakeups(ws: Workspace) -> None:
    """1,000 jobs from another process while 2 workers run: wake-ups, not polls, drive it."""
    sup = _start_supervisor(ws, 2)
    ledger = str(ws.ledger)
    n = 1000
    calls: list[tuple[str, list[object], dict[str, object] | None]] = [
        (f"{JOBS}.Stamp", [ledger, "@now"], None) for _ in range(n)
    ]
    t0 = time.monotonic()
    costs = _produce(ws, calls, 2)
    produced = time.monotonic() - t0
    wait_until(lambda: status_counts(ws.db) == {"done": n}, what="the queue to drain")
    drained = time.monotonic() - t0
    lines = ledger_lines(ws.ledger)
    assert len(lines) == n  # each job ran once (the store says done; the ledger agrees)
    latency = [float(f[1]) - float(f[0]) for f in lines]
    by_worker = Counter(f[2] for f in lines)
    p50, p99 = _percentile(costs, 0.5), _percentile(costs, 0.99)
    print(
        f"\nproducer: {n} perform_async in {produced:.2f} s (incl. start-up); per enqueue "
        f"p50 {p50 * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms, mean {sum(costs) / n * 1e3:.3f} ms; "
        f"drained {drained:.2f} s after the producer started; enqueue->start p50 "
        f"{_percentile(latency, 0.5) * 1e3:.1f} ms, max {max(latency) * 1e3:.1f} ms; "
        f"per worker {dict(by_worker)}"
    )
    # Polling alone, a job enqueued while the workers sleep waits up to a 5 s poll; 1,000
    # of them arriving in bursts would need several polls. Every job starting within half
    # a poll of its enqueue, and the whole queue draining within one, means wake-ups did it.
    assert max(latency) < 2.5
    assert drained < 5.0
    assert p50 < 0.005  # the wake-up is one non-blocking datagram, not a round trip
    assert set(by_worker) == {"1", "2"}
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0, sup.stderr


def _bind_and_close(path: str) -> None:
    """Leave a stale socket file: bind, then close without unlinking."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.close()


@pytest.mark.parametrize("mode", ["supervisor", "single"])
def test_stale_socket_file_is_removed_at_start(ws: Workspace, mode: str) -> None:
    ws.sockets.mkdir()
    path = ws.sockets / "worker-1.sock"
    _bind_and_close(str(path))
    assert path.exists()
    if mode == "single":
        proc = ws.worker("--workers", "1", "--worker-index", "1")
    else:
        proc = ws.worker("--workers", "1")
    proc.wait_log("removed stale wake-up socket")
    proc.wait_log("worker 1 started")
    # The fresh socket works: a pushed job runs well before the first 5 s poll.
    pushed = ws.queue_cli("push", f"{JOBS}.Record", json.dumps([str(ws.ledger), "after"]))
    assert pushed.returncode == 0, pushed.stderr
    wait_until(lambda: ledger_lines(ws.ledger), timeout=3.0, what="the job after a wake-up")
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.stderr


LISTENER = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(sys.argv[1])
print("listening", flush=True)
sys.stdin.read()  # hold the socket until the test closes our stdin
"""


@pytest.mark.parametrize("mode", ["supervisor", "single"])
def test_socket_in_use_is_refused_with_one_line(ws: Workspace, mode: str) -> None:
    ws.sockets.mkdir()
    path = ws.sockets / "worker-2.sock"
    holder = subprocess.Popen(
        [sys.executable, "-c", LISTENER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "listening"
        extra = ["--worker-index", "2"] if mode == "single" else []
        proc = ws.worker("--workers", "2", *extra)
        # A supervisor must refuse up front, not restart the worker forever.
        code = proc.wait(timeout=10)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert code != 0, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        assert len(errors) == 1, proc.stderr
        assert "another worker is listening on" in errors[0]
        assert str(path) in errors[0]
        assert f"(pid {holder.pid})" in errors[0]  # who to stop: named, in both modes
        assert path.exists()  # the live owner's socket is left alone
        assert holder.poll() is None
        if mode == "supervisor":
            assert "started worker" not in proc.stderr
        assert "worker 2 started" not in proc.stderr  # refused: it never looked started
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=BOUND)
        if holder.stdout is not None:
            holder.stdout.close()


def test_delayed_retried_and_isolated_work_across_processes(ws: Workspace) -> None:
    """Env-only configuration, ISOLATION_FORKS=1, a delayed push, a retried failure."""
    env = {
        "QUEUE_DB_PATH": str(ws.db),
        "QUEUE_SOCKET_DIR": str(ws.sockets),
        "BACKGROUND_FORKS": "2",
        "ISOLATION_FORKS": "1",
    }
    sup = ws.worker(env=env, queue=False, name="supervisor")
    sup.wait_log("worker 1 started: 0 schedule entries, concurrency 2, queue off")
    sup.wait_log("worker 2 started: 0 schedule entries, concurrency 2, queue on")
    ledger = str(ws.ledger)
    # Delayed by 1 s: it must start about then, not at the next 5 s poll.
    t0 = time.time()
    delayed = ws.queue_cli(
        "--workers", "2", "push", f"{JOBS}.Stamp", json.dumps([ledger, t0]), "--in", "1"
    )
    assert delayed.returncode == 0, delayed.stderr
    failing = ws.queue_cli(
        "--workers",
        "2",
        "push",
        f"{JOBS}.Failing",
        json.dumps([ledger, "flaky"]),
        "--options",
        '{"retry": 1, "retry_delay": 0.2}',
    )
    assert failing.returncode == 0, failing.stderr
    fail_id = int(failing.stdout)
    wait_until(lambda: status_counts(ws.db) == {"done": 1, "failed": 1}, what="both jobs to settle")
    lines = ledger_lines(ws.ledger)
    stamp = [f for f in lines if len(f) == 3 and f[0] != "flaky"]
    assert len(stamp) == 1
    started = float(stamp[0][1])
    assert 0.9 <= started - t0 < 2.5, started - t0  # on time, not at a poll
    flaky = [f for f in lines if f[0] == "flaky"]
    assert len(flaky) == 2  # the first run and one retry
    # Worker 1 is isolated from the queue: everything ran on worker 2.
    assert stamp[0][2] == "2"
    assert {f[1] for f in flaky} == {"2"}
    listed = ws.queue_cli("list", "--status", "failed")
    (row,) = listed.stdout.splitlines()[1:]
    assert row.split()[:3] == [str(fail_id), "failed", "2"]
    assert "RuntimeError: failing on purpose: flaky" in row
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0, sup.stderr


@pytest.mark.parametrize(("job", "prefix"), [("FanOut", "child"), ("SyncFanOut", "sync-child")])
def test_a_job_enqueues_children_inside_its_worker_and_each_runs_once(
    ws: Workspace, job: str, prefix: str
) -> None:
    """README promised it; it raised NotConfiguredError. Fan-out from async and sync jobs."""
    sup = ws.worker("--workers", "2", name="sup")
    sup.wait_log("worker 2 started")
    pushed = ws.queue_cli("push", f"{JOBS}.{job}", f'["{ws.ledger}", 5]')
    assert pushed.returncode == 0, pushed.stderr
    wanted = {f"{prefix}{i}" for i in range(5)}
    wait_until(
        lambda: wanted <= {f[0] for f in ledger_lines(ws.ledger)}, what="the children to run"
    )
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0, sup.stderr
    tags = [f[0] for f in ledger_lines(ws.ledger)]
    assert sorted(t for t in tags if t.startswith(prefix)) == sorted(wanted)  # once each
    assert "NotConfiguredError" not in sup.stderr
