"""The limit: the store's own SQL in a bare `sqlite3` loop, two bare consumer processes.

Owns the baseline every other system is measured against. The SQL text and schema come from
`reference.sqlite_store` (never copied, so the baseline cannot drift from the store), with
the same pragmas; nothing else of `reference` runs. Wake-ups are one-byte datagrams sent
with a bare non-blocking `sendto`. Imports `reference.sqlite_store` and `bench.harness` only.

    python -m bench.limit produce single|bulk|prefill|pickup --root DIR --n N
    python -m bench.limit consume --root DIR --index I
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench import harness, stamp
from reference import sqlite_store
from reference.sqlite_store import SqliteStore

if TYPE_CHECKING:
    from collections.abc import Sequence

CONSUMERS = 2
LEASE = 60.0
POLL_INTERVAL = 5.0  # as the project's workers: a lost wake-up costs at most one poll
NOOP = "bench.jobs.Noop"
STAMP = "bench.jobs.Stamp"
DURABILITY = (
    "WAL, synchronous=NORMAL, busy_timeout=5000 (SQLite's busy handler: sleeps 1, 2, 5 ms...),"
    " mmap 256 MiB"
)


def db_path(root: str | Path) -> Path:
    return Path(root) / "limit.db"


def socket_path(root: str | Path, index: int) -> str:
    return str(Path(root) / f"limit-{index}.sock")


def connect(path: str | Path) -> sqlite3.Connection:
    """A bare autocommit connection with exactly the store's pragmas (mmap on)."""
    conn = sqlite3.connect(path, isolation_level=None, cached_statements=64)
    conn.execute(f"PRAGMA busy_timeout = {sqlite_store.DEFAULT_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA mmap_size = {sqlite_store.MMAP_SIZE}").fetchall()
    return conn


class LimitSystem:
    """The limit as the orchestrator drives it: bare producer, two bare consumers."""

    name = "limit"

    def durability(self) -> str:
        return DURABILITY

    def prepare(self, root: Path) -> None:
        SqliteStore.create_schema(db_path(root))

    def producer_argv(self, mode: str, root: Path, n: int, batch: int) -> list[str]:
        return harness.producer_argv("bench.limit", mode, root, n, batch)

    def sink_paths(self, root: Path) -> list[str]:
        return [socket_path(root, i) for i in range(1, CONSUMERS + 1)]

    def start(self, root: Path) -> list[harness.Service]:
        return [
            harness.start_service(
                f"limit consumer {i}",
                harness.module_argv(
                    "bench.limit", "consume", "--root", str(root), "--index", str(i)
                ),
                root / f"limit-{i}.log",
            )
            for i in range(1, CONSUMERS + 1)
        ]

    def ready(self, root: Path) -> bool:
        return all(os.path.exists(p) for p in self.sink_paths(root))

    def drained(self, root: Path, n: int) -> bool:
        return harness.db_drained(db_path(root), n)

    def drain_window(self, root: Path, n: int) -> tuple[float, float]:
        return harness.db_window(db_path(root), n)

    def __repr__(self) -> str:
        return "LimitSystem()"


# -- producer ------------------------------------------------------------------------------


class _Producer:
    """INSERT in autocommit (or one transaction per batch), then one `sendto`."""

    def __init__(self, root: str) -> None:
        self.conn = connect(db_path(root))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.targets = [socket_path(root, i) for i in range(1, CONSUMERS + 1)]
        self.sent = 0

    def wake(self) -> None:
        # Round robin: the cheapest fair choice; a full queue means "already woken".
        target = self.targets[self.sent % CONSUMERS]
        self.sent += 1
        with contextlib.suppress(BlockingIOError, FileNotFoundError, ConnectionRefusedError):
            self.sock.sendto(b"\x00", target)

    def insert(self, name: str, args: str) -> int | None:
        now = time.time()
        return self.conn.execute(sqlite_store._INSERT, (name, args, "{}", now, now)).lastrowid

    def insert_many(self, count: int) -> list[int | None]:
        now = time.time()
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        ids = [
            conn.execute(sqlite_store._INSERT, (NOOP, "[]", "{}", now, now)).lastrowid
            for _ in range(count)
        ]
        conn.execute("COMMIT")
        return ids

    def one(self, _i: int) -> None:
        self.insert(NOOP, "[]")
        self.wake()

    def bulk(self, _i: int, size: int) -> None:
        self.insert_many(size)
        self.wake()


def produce(argv: Sequence[str] | None = None) -> int:
    """The producer subprocess: time N enqueues (or prefill, or pace W3) and print JSON."""
    args = harness.parse_producer(argv, "python -m bench.limit produce")
    p = _Producer(args.root)
    if args.mode == "single":
        harness.emit(harness.timed_calls(p.one, args.n))
    elif args.mode == "bulk":
        calls = args.n // args.batch
        harness.emit(harness.timed_calls(lambda i: p.bulk(i, args.batch), calls))
    elif args.mode == "prefill":
        p.insert_many(args.n)
        harness.emit({})
    else:
        ledger = str(Path(args.root) / "ledger")

        def enqueue(enqueued_at: float) -> None:
            p.insert(STAMP, json.dumps([ledger, enqueued_at]))
            p.wake()

        harness.emit(harness.paced(enqueue, args.n, args.every, Path(ledger)))
    p.conn.close()
    return 0


# -- consumer ------------------------------------------------------------------------------


def consume(root: str, index: int) -> None:
    """Claim one job per transaction, run it, complete it; sleep on the socket when idle."""
    conn = connect(db_path(root))
    fetch = sqlite_store._CLAIM.format(fault="")
    complete = sqlite_store._COMPLETE
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = socket_path(root, index)
    owner = f"limit-{index}"
    sock.bind(path)  # the socket file appearing is the orchestrator's "ready"
    sock.settimeout(POLL_INTERVAL)
    try:
        while True:
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(fetch, (owner, now, now + LEASE, now, 1)).fetchall()
            conn.execute("COMMIT")
            if not rows:
                with contextlib.suppress(TimeoutError):
                    sock.recv(64)
                continue
            row = rows[0]
            if row[1] == STAMP:
                started = time.time()
                ledger, enqueued_at = json.loads(row[2])
                stamp.write_stamp(ledger, enqueued_at, started)
            conn.execute(complete, (time.time(), row[0], row[7], owner))
    finally:
        sock.close()
        os.unlink(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.limit")
    parser.add_argument("role", choices=("produce", "consume"))
    ns, rest = parser.parse_known_args(argv)
    if ns.role == "produce":
        return produce(rest)
    cp = argparse.ArgumentParser(prog="python -m bench.limit consume")
    cp.add_argument("--root", required=True)
    cp.add_argument("--index", type=int, required=True)
    ca = cp.parse_args(rest)
    consume(ca.root, ca.index)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
