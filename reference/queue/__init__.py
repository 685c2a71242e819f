"""`reference.queue.configure()`: the process-default producer behind `Job.perform_*`.

Layer 4 (composition root). Builds `SqliteStore` + `UnixTransport` + `Waker` into a
`Producer` and installs it in `job.py`'s one-slot hook; this is the one sanctioned global,
with `reset()` for tests. A package rather than `queue.py`, so that
`python -m reference.queue` cannot create a second copy of the configured state.
It imports `threading` for one lock: sync jobs run in threads and may enqueue, and one
SQLite connection must not interleave two threads' transactions.
"""

from __future__ import annotations

import os
import random
import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from reference.clock import SystemClock
from reference.config import process_environ, resolve_queue
from reference.errors import StoreError
from reference.job import install_enqueuer
from reference.producer import Producer
from reference.sqlite_store import SqliteStore
from reference.unix_transport import UnixTransport, check_address
from reference.waker import Waker

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from os import PathLike

    from reference.config import QueueSettings
    from reference.job import Job
    from reference.producer import Call

__all__ = ["LockedProducer", "configure", "enqueue_many", "install", "producer", "reset"]


class LockedProducer:
    """A `Producer` whose calls are serialised, so threads may share it."""

    __slots__ = ("_lock", "_producer", "_transport")

    def __init__(self, producer: Producer, transport: UnixTransport | None) -> None:
        self._producer = producer
        self._transport = transport
        self._lock = threading.Lock()

    def enqueue(
        self,
        cls: type[Job],
        args: tuple[object, ...],
        *,
        options: Mapping[str, object] | None,
        delay: float | None = None,
        run_at: float | None = None,
    ) -> int:
        with self._lock:
            return self._producer.enqueue(cls, args, options=options, delay=delay, run_at=run_at)

    def enqueue_many(self, calls: Sequence[Call], *, run_at: float | None = None) -> list[int]:
        with self._lock:
            return self._producer.enqueue_many(calls, run_at=run_at)

    @property
    def producer(self) -> Producer:
        return self._producer

    def close(self) -> None:
        with self._lock:
            self._producer.store.close()
            if self._transport is not None:
                self._transport.close()

    def __repr__(self) -> str:
        return f"LockedProducer({self._producer!r})"


_configured: list[LockedProducer] = []


def configure(
    db_path: str | PathLike[str] | None = None,
    socket_dir: str | None = None,
    total_workers: int | None = None,
    *,
    mmap: bool | None = None,
    create: bool = False,
    environ: Mapping[str, str] | None = None,
) -> LockedProducer:
    """Configure this process's producer; arguments fall back to the environment.

    `db_path` falls back to `QUEUE_DB_PATH`, `socket_dir` to `QUEUE_SOCKET_DIR`,
    `total_workers` to `BACKGROUND_FORKS`, then to the worker's defaults. Calling it again
    replaces the previous configuration.

    The database must exist (a worker's supervisor creates it) unless `create=True`: a
    deleted, moved or mistyped path would otherwise become a new empty queue whose jobs no
    worker ever sees.

    Raises:
        ConfigError: a setting is malformed.
        StoreError: the database does not exist (and `create` is False) or cannot be opened.
    """
    settings = resolve_queue(
        db=None if db_path is None else str(db_path),
        socket_dir=socket_dir,
        workers=total_workers,
        environ=process_environ() if environ is None else environ,
    )
    if mmap is not None:
        settings = replace(settings, mmap=mmap)
    return install(settings, create=create)


def install(settings: QueueSettings, *, create: bool = False) -> LockedProducer:
    """Install the process's producer from resolved settings (`configure` and workers).

    A worker process calls it at start, so the jobs it runs can enqueue jobs with no
    `configure()` of their own.

    Raises:
        StoreError: the database does not exist (and `create` is False) or cannot be opened.
        TransportError: a wake-up socket path is too long for AF_UNIX.
    """
    if not create and settings.db_path != ":memory:" and not os.path.exists(settings.db_path):
        raise StoreError(
            f"queue database {settings.db_path!r} does not exist "
            "(start a worker first, or pass create=True)"
        )
    addresses = settings.wake_addresses()  # isolated workers never listen: not woken
    for address in addresses.values():
        check_address(address)  # a socket dir too long for AF_UNIX: one error, here
    store = SqliteStore(
        settings.db_path, mmap=settings.mmap, check_same_thread=False, create=create
    )
    transport = UnixTransport()
    clock = SystemClock()
    producer = Producer(
        store, clock=clock, waker=Waker(transport, addresses, random.Random(), clock=clock)
    )
    locked = LockedProducer(producer, transport)
    reset()
    _configured.append(locked)
    install_enqueuer(locked)
    return locked


def producer() -> LockedProducer | None:
    """The configured producer, or None before `configure()`."""
    return _configured[0] if _configured else None


def enqueue_many(calls: Sequence[Call], *, run_at: float | None = None) -> list[int]:
    """Enqueue many jobs in one transaction with one wake-up; return their ids.

    Each call is `(JobClass, args, options_or_None)`.
    """
    from reference.job import current_enqueuer

    current_enqueuer()  # raises NotConfiguredError with the usual message
    return _configured[0].enqueue_many(calls, run_at=run_at)


def reset() -> None:
    """Forget the configured producer and close its store (tests, reconfiguration)."""
    install_enqueuer(None)
    while _configured:
        _configured.pop().close()
