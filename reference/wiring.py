"""Build the real queue adapters for a worker process: SQLite store and Unix-socket doorbell.

Layer 4 (composition root). The simulator builds the same `QueueWiring` from its own
adapters (`sim/host.py`); this module is the production counterpart, and the only place
that constructs `SqliteStore` and `UnixTransport` for a worker.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from reference.consumer import QueueWiring
from reference.errors import SocketInUseError
from reference.process import pid_exists, socket_holders, this_host
from reference.sqlite_store import SqliteStore
from reference.unix_transport import UnixTransport
from reference.waker import socket_address

if TYPE_CHECKING:
    from contextlib import ExitStack

    from reference.config import WorkerSettings
    from reference.liveness import Probe
    from reference.records import WorkerRow


def prepare_store(settings: WorkerSettings) -> None:
    """Create the database directory and schema once, before any worker starts."""
    directory = os.path.dirname(os.path.abspath(settings.queue.db_path))
    os.makedirs(directory, exist_ok=True)
    SqliteStore.create_schema(settings.queue.db_path)


def check_sockets_free(settings: WorkerSettings) -> None:
    """Refuse to supervise workers whose wake-up socket a live process already holds.

    Without this a second supervisor on the same socket dir restarts its workers forever,
    each one dying on the live socket. Probing by listening (then closing, which unlinks
    our own file) also clears stale files, exactly as each worker would at start.

    Raises:
        SocketInUseError: other processes listen on workers' sockets; names each socket and,
            where /proc tells, the pids holding it (e.g. orphans of a killed supervisor).
        TransportError: a socket path cannot be listened on (too long, unwritable dir).
    """
    transport = UnixTransport()
    in_use: list[str] = []
    try:
        for address in settings.queue.wake_addresses().values():
            try:
                transport.listen_now(address).close()
            except SocketInUseError:
                pids = socket_holders(address)
                held = f" (pid {', '.join(map(str, pids))})" if pids else ""
                in_use.append(f"{address}{held}")
    finally:
        transport.close()
    if in_use:
        raise SocketInUseError(f"another worker is listening on {', '.join(in_use)}; stop it first")


def open_queue_wiring(settings: WorkerSettings, index: int, stack: ExitStack) -> QueueWiring:
    """Open this worker's store and transport; `stack` closes them when the worker ends."""
    os.makedirs(os.path.dirname(os.path.abspath(settings.queue.db_path)), exist_ok=True)
    store = SqliteStore(settings.queue.db_path, mmap=settings.queue.mmap)
    stack.callback(store.close)
    transport = UnixTransport()
    stack.callback(transport.close)
    peers = settings.queue.wake_addresses()
    return QueueWiring(
        store=store,
        transport=transport,
        address=socket_address(settings.queue.socket_dir, index),
        peers=peers,
        poll_interval=settings.poll_interval,
        lease=settings.lease,
        owner=owner_id(),
        host=this_host(),
        pid=os.getpid(),
        gone=local_process_gone(this_host()),
    )


def local_process_gone(host: str) -> Probe:
    """The production `liveness` probe: a peer on this host whose pid no longer exists is
    gone for sure (a restarted worker recovers its predecessor's jobs at once). Peers on
    other hosts, and live pids (perhaps reused), are left to their heartbeats. Workers
    sharing one database from different pid namespaces (containers) must have different
    host names, as Docker and Kubernetes give them by default."""

    def gone(row: WorkerRow) -> bool:
        return row.host == host and not pid_exists(row.pid)

    return gone


def open_schedule_store(settings: WorkerSettings, stack: ExitStack) -> SqliteStore:
    """Open this worker's connection for the schedule rows; `stack` closes it.

    Its own connection, not the consumer's: the scheduler's CAS writes then never wait on
    (or sit inside) a claim transaction of the queue.
    """
    os.makedirs(os.path.dirname(os.path.abspath(settings.queue.db_path)), exist_ok=True)
    store = SqliteStore(settings.queue.db_path, mmap=settings.queue.mmap)
    stack.callback(store.close)
    return store


def owner_id() -> str:
    """A worker process's unique owner id: host, pid and a random token (a reused pid, or
    the same index under a second supervisor, still gets a new one)."""
    return f"{this_host()}:{os.getpid()}:{os.urandom(4).hex()}"
