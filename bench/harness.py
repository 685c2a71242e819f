"""Shared plumbing of `python -m bench`: processes, waits, ledgers, socket sinks, statistics.

Owns what every system module needs and nothing system-specific: it must not import
`reference`, `huey` or another bench module, so each system module can be run as a
subprocess (`python -m bench.<system> produce|consume ...`) without dragging the others in.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
    from pathlib import Path

BOUND = 60.0  # seconds: the most any wait in a benchmark may take before it is a failure
POLL = 0.005  # seconds between completion checks (they read a ledger or the database)
PICKUP_EVERY = 0.02  # W3: one job every 20 ms
PICKUP_JOBS = 200


class BenchError(RuntimeError):
    """A benchmark could not run (a process died, a wait timed out)."""


class System(Protocol):
    """One queue system under test, as the orchestrator drives it; `root` is a fresh dir."""

    name: str

    def durability(self) -> str: ...  # the durability settings, printed with the table

    def prepare(self, root: Path) -> None: ...  # create the empty queue

    def producer_argv(self, mode: str, root: Path, n: int, batch: int) -> list[str]: ...

    def sink_paths(self, root: Path) -> list[str]: ...  # wake-up sockets W1 must provide

    def start(self, root: Path) -> list[Service]: ...  # the consumers, idle or draining

    def ready(self, root: Path) -> bool: ...  # consumers can take a job now

    def drained(self, root: Path, n: int) -> bool: ...  # W2: all n jobs done

    def drain_window(self, root: Path, n: int) -> tuple[float, float]: ...  # first start, last done


def wait_until(
    predicate: Callable[[], bool], what: str, *, timeout: float = BOUND, poll: float = POLL
) -> None:
    """Poll `predicate` every `poll` seconds until true; raise BenchError after `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def quantile(values: Sequence[float], q: float) -> float:
    """The `q` quantile by nearest rank (no interpolation: p99 of 200 is a real sample)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def median(values: Sequence[float]) -> float:
    """The median of `values`."""
    return statistics.median(values)


# -- ledgers: one line per job start, written by the job with `bench.stamp.write_stamp` ------


def read_ledger(ledger: Path) -> list[tuple[float, float]]:
    """Every complete (enqueued_at, started_at) line of `ledger`; none if it is missing."""
    try:
        text = ledger.read_text()
    except FileNotFoundError:
        return []
    rows = []
    for line in text.splitlines():
        a, _, b = line.partition(" ")
        if b:
            rows.append((float(a), float(b)))
    return rows


def ledger_lines(ledger: Path) -> int:
    """How many complete lines `ledger` holds (0 if it does not exist yet)."""
    try:
        return ledger.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


class JobsTable:
    """A reader of a `jobs` table (the store's schema): W2's completion and window."""

    def __init__(self, db: Path) -> None:
        self._conn = sqlite3.connect(db, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout = 5000")

    def open_work(self) -> int:
        """Jobs still pending or running (each count uses its partial index)."""
        (pending,) = self._conn.execute(
            "SELECT count(*) FROM jobs WHERE status = 'pending'"
        ).fetchone()
        (running,) = self._conn.execute(
            "SELECT count(*) FROM jobs WHERE status = 'running'"
        ).fetchone()
        return int(pending) + int(running)

    def window(self, n: int) -> tuple[float, float]:
        """(first claim, last completion) over the done jobs; all n must be done."""
        done, first, last = self._conn.execute(
            "SELECT count(*), min(locked_at), max(finished_at) FROM jobs WHERE status = 'done'"
        ).fetchone()
        if done != n:
            raise BenchError(f"{done} of {n} jobs are done")
        return float(first), float(last)

    def close(self) -> None:
        self._conn.close()


def db_drained(db: Path, n: int) -> bool:
    """True once no job in `db` is pending or running (W2's completion check)."""
    table = JobsTable(db)
    try:
        return table.open_work() == 0
    finally:
        table.close()


def db_window(db: Path, n: int) -> tuple[float, float]:
    """(first claim, last completion) of the n done jobs in `db`."""
    table = JobsTable(db)
    try:
        return table.window(n)
    finally:
        table.close()


# -- processes --------------------------------------------------------------------------------


@dataclass
class Service:
    """A long-running process group (workers, consumer) started by a benchmark."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        """Raise BenchError with the log's tail if the process has exited."""
        if self.proc.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")

    def tail(self, lines: int = 8) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM the whole group, then SIGKILL it if it does not exit within BOUND/4."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=BOUND / 4)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Children of a supervisor that was killed may linger in the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def __repr__(self) -> str:
        return f"Service({self.name!r}, pid={self.proc.pid}, rc={self.proc.poll()})"


def start_service(
    name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> Service:
    """Start `argv` in its own session (so stop() can signal its children too)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=None if env is None else {**os.environ, **env},
        )
    return Service(name, proc, log)


def start_workers(name: str, argv: Sequence[str], root: Path, count: int) -> list[Service]:
    """Start `count` identical worker processes, each logging to `root/<name>-<i>.log`."""
    return [
        start_service(f"{name} {i}", argv, root / f"{name.replace(' ', '-')}-{i}.log")
        for i in range(count)
    ]


@contextlib.contextmanager
def running(service: Service) -> Iterator[Service]:
    """Stop `service` however the block ends."""
    try:
        yield service
    finally:
        service.stop()


def module_argv(module: str, *args: str) -> list[str]:
    """`python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def producer_argv(module: str, mode: str, root: Path, n: int, batch: int, *extra: str) -> list[str]:
    """The command line of a system's producer process (`python -m MODULE produce MODE ...`)."""
    return module_argv(
        module, "produce", mode, "--root", str(root), "--n", str(n), "--batch", str(batch), *extra
    )


def run_producer(
    argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> dict[str, object]:
    """Run a producer subprocess to completion and return the JSON it printed."""
    with log.open("ab") as err:
        done = subprocess.run(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            timeout=BOUND * 3,
            check=False,
            env=None if env is None else {**os.environ, **env},
        )
    if done.returncode != 0:
        tail = " | ".join(log.read_text(errors="replace").splitlines()[-8:])
        raise BenchError(f"producer {argv[2]} exited with {done.returncode}: {tail}")
    result: dict[str, object] = json.loads(done.stdout)
    return result


# -- the producer side of every system: one CLI shape --------------------------------------


@dataclass(frozen=True)
class ProducerArgs:
    """What a producer subprocess was asked to do."""

    mode: str  # single | bulk | prefill | pickup
    root: str  # the run's directory (database, sockets, ledger)
    n: int
    batch: int
    every: float


def parse_producer(argv: Sequence[str] | None, prog: str) -> ProducerArgs:
    """Parse `produce MODE --root DIR --n N [--batch B] [--every S]`."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("mode", choices=("single", "bulk", "prefill", "pickup"))
    parser.add_argument("--root", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--every", type=float, default=PICKUP_EVERY)
    ns = parser.parse_args(argv)
    return ProducerArgs(ns.mode, ns.root, ns.n, ns.batch, ns.every)


# Each producer's first call is a warm-up, not timed: it pays for lazy imports and the
# first connection, which no steady-state enqueue does. Every system gets the same.
WARM_UP = -1  # the index the warm-up call gets


def timed_calls(call: Callable[[int], object], count: int) -> dict[str, object]:
    """Time `call(i)` for i in range(count), after one untimed warm-up call."""
    call(WARM_UP)
    costs = [0.0] * count
    clock = time.perf_counter
    start = clock()
    for i in range(count):
        t0 = clock()
        call(i)
        costs[i] = clock() - t0
    return {"elapsed": clock() - start, "calls": costs}


async def timed_calls_async(
    call: Callable[[int], Awaitable[object]], count: int
) -> dict[str, object]:
    """`timed_calls` for an asyncio producer: time `await call(i)` on the running loop."""
    await call(WARM_UP)
    costs = [0.0] * count
    clock = time.perf_counter
    start = clock()
    for i in range(count):
        t0 = clock()
        await call(i)
        costs[i] = clock() - t0
    return {"elapsed": clock() - start, "calls": costs}


def paced(
    enqueue: Callable[[float], object], count: int, every: float, ledger: Path
) -> dict[str, object]:
    """Warm up with one job, then call `enqueue(time.time())` `count` times on a grid.

    The warm-up job carries enqueued_at 0.0 (excluded from the figures) and must have
    started before pacing begins, so every measured job finds an idle, warm worker.
    """
    enqueue(0.0)
    wait_until(lambda: ledger_lines(ledger) >= 1, "the warm-up job")
    start = time.monotonic()
    for i in range(count):
        enqueue(time.time())
        # Sleep to the next grid point, not `every` after this call: no drift.
        delay = start + (i + 1) * every - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return {"elapsed": time.monotonic() - start}


def producer_main(produce: Callable[[Sequence[str]], int], module: str) -> int:
    """The `__main__` of a system module: `python -m MODULE produce MODE --root DIR --n N`."""
    if sys.argv[1:2] != ["produce"]:
        raise SystemExit(f"usage: python -m {module} produce MODE --root DIR --n N")
    return produce(sys.argv[2:])


def emit(result: Mapping[str, object]) -> None:
    """Print a producer's result as JSON on stdout (the orchestrator reads it)."""
    json.dump(result, sys.stdout)
    sys.stdout.flush()


# -- wake-up sinks: W1 measures producers whose wake-ups must land somewhere real ----------


class SocketSink:
    """Bound Unix datagram sockets drained by one thread; stands in for idle consumers."""

    def __init__(self, paths: Sequence[str]) -> None:
        self._socks = []
        for path in paths:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
            sock.setblocking(False)
            self._socks.append(sock)
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="socket-sink", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        import selectors

        with selectors.DefaultSelector() as sel:
            for sock in self._socks:
                sel.register(sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in sel.select(0.05):
                    ready = key.fileobj
                    assert isinstance(ready, socket.socket)
                    with contextlib.suppress(BlockingIOError):
                        while True:
                            ready.recv(64)
                            self.received += 1

    def close(self) -> None:
        """Stop draining, close and unlink the sockets."""
        self._stop.set()
        self._thread.join()
        for sock in self._socks:
            path = sock.getsockname()
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def __repr__(self) -> str:
        return f"SocketSink(sockets={len(self._socks)}, received={self.received})"
