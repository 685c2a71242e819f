"""`Fabric`: the simulator's in-memory `Transport`, with the error semantics of AF_UNIX datagrams.

Owns a path table (absent / stale / live with a bounded queue), world faults (crash, remove,
drop, reset, seeded per-send faults) and the record of every send attempt that the
invariants read. Imports only `reference` vocabulary; no `socket`, no real time, no set or
`id()` ordering, so a seed replays byte for byte.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from reference.errors import SocketInUseError, TransportError
from reference.records import LogEvent
from reference.transport import SendResult

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

logger = logging.getLogger(__name__)

# What this machine's kernel queued before EAGAIN (net.unix.max_dgram_qlen=10 admits 11).
DEFAULT_CAPACITY = 11


class PathState(StrEnum):
    """What sits at a fabric address."""

    ABSENT = "absent"  # no file: sends are MISSING
    STALE = "stale"  # a file with no listener: sends are REFUSED
    LIVE = "live"  # a listener with a bounded queue


class _Fault(StrEnum):
    RESET = "reset"
    ERROR = "error"
    DROP = "drop"


# A fixed tuple, not a set: the rng's choice must not depend on hash order.
_SEEDED_FAULTS = (_Fault.RESET, _Fault.ERROR, _Fault.DROP)


@dataclass(frozen=True, slots=True)
class SendRecord:
    """One `try_send` attempt as the fabric saw it."""

    address: str
    result: SendResult
    payload: bytes


class FabricListener:
    """The live end of one fabric address; `Fabric.listen` makes these."""

    __slots__ = (
        "_address",
        "_capacity",
        "_closed",
        "_fabric",
        "_notify_due",
        "_on_ready",
        "_queue",
        "_waiter",
    )

    def __init__(self, fabric: Fabric, address: str, capacity: int) -> None:
        self._fabric = fabric
        self._address = address
        self._capacity = capacity
        self._queue: deque[bytes] = deque()
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._on_ready: Callable[[], None] | None = None  # set by watch()
        self._notify_due = False  # an _notify is scheduled on the loop

    @property
    def address(self) -> str:
        return self._address

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        """How many datagrams wait unread."""
        return len(self._queue)

    async def receive(self) -> bytes:
        """Wait for the next wake-up datagram and return it.

        Raises:
            TransportError: the listener is closed or crashed (also while waiting).
            RuntimeError: another task is already waiting in `receive()`.
        """
        while True:
            data = self.receive_nowait()
            if data is not None:
                return data
            if self._waiter is not None or self._on_ready is not None:
                raise RuntimeError(f"receive() already waiting on {self._address!r}")
            # A plain loop future: it resolves on the virtual loop without any timer.
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiter = fut
            try:
                await fut
            finally:
                if self._waiter is fut:
                    self._waiter = None

    def watch(self, on_ready: Callable[[], None]) -> None:
        """Call `on_ready()` at the loop step after datagrams arrive, until closed.

        As a real socket's reader callback: never inside the sender's `try_send`, once
        per step however many arrived, and again while the queue is left undrained.
        """
        if self._closed:
            raise TransportError(f"listener on {self._address!r} is closed")
        if self._waiter is not None or self._on_ready is not None:
            raise RuntimeError(f"{self._address!r} is already being received from")
        self._on_ready = on_ready
        if self._queue:
            self._schedule_notify()

    def _schedule_notify(self) -> None:
        if not self._notify_due:
            self._notify_due = True
            asyncio.get_running_loop().call_soon(self._notify)

    def _notify(self) -> None:
        self._notify_due = False
        if self._on_ready is None or self._closed or not self._queue:
            return
        self._on_ready()
        if self._queue and not self._closed:
            self._schedule_notify()  # level-triggered, as epoll is

    def receive_nowait(self) -> bytes | None:
        """Return the next queued datagram, or None if none is queued; never waits."""
        if self._closed:
            raise TransportError(f"listener on {self._address!r} is closed")
        return self._queue.popleft() if self._queue else None

    def drain(self) -> int:
        """Discard every datagram already queued without waiting; return how many."""
        count = len(self._queue)
        self._queue.clear()
        return count

    def close(self) -> None:
        """Stop listening and remove the address (a clean stop); idempotent."""
        if self._closed:
            return
        self._shut(f"listener on {self._address!r} closed")
        self._fabric._release(self)

    # -- called by the fabric ------------------------------------------------------------

    def _offer(self, payload: bytes) -> SendResult:
        if len(self._queue) >= self._capacity:
            return SendResult.PENDING
        self._queue.append(payload)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if self._on_ready is not None:
            self._schedule_notify()
        return SendResult.DELIVERED

    def _shut(self, why: str) -> None:
        self._closed = True
        self._on_ready = None
        self._queue.clear()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(TransportError(why))

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"queued={len(self._queue)}/{self._capacity}"
        waiting = " waiting" if self._waiter is not None else ""
        return f"FabricListener({self._address!r}, {state}{waiting})"


class Fabric:
    """An in-memory `Transport`: the same results as `UnixTransport`, plus world faults.

    Args:
        rng: draws the seeded per-send faults; required when `fault_rate` > 0.
        fault_rate: chance that a send to an existing file hits a reset, an error or a drop.
        capacity: datagrams a listener queues before sends report PENDING.
    """

    def __init__(
        self,
        rng: random.Random | None = None,
        *,
        fault_rate: float = 0.0,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if fault_rate > 0.0 and rng is None:
            raise ValueError("fault_rate > 0 needs an rng")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._rng = rng
        self._fault_rate = fault_rate
        self._capacity = capacity
        # address -> listener, or None for a stale file; absent addresses are not keys.
        # Dicts keep insertion order, so nothing here depends on hashing.
        self._paths: dict[str, FabricListener | None] = {}
        self._drop: dict[str, bool] = {}
        self._reset: dict[str, bool] = {}
        self.sends: list[SendRecord] = []

    # -- Transport -------------------------------------------------------------------------

    async def listen(self, address: str) -> FabricListener:
        """Listen on `address`; replace a stale file, raise `SocketInUseError` if live."""
        return self.listen_now(address)

    def listen_now(self, address: str) -> FabricListener:
        """Do `listen` synchronously (world setup outside a running loop)."""
        if not address:
            raise TransportError("invalid wake-up socket path ''")
        state = self.state(address)
        if state is PathState.LIVE:
            raise SocketInUseError(f"another worker is listening on {address}")
        if state is PathState.STALE:
            del self._paths[address]
            logger.warning(
                "removed stale wake-up socket %s (no listener answered)",
                address,
                extra={"event": LogEvent.STALE_SOCKET_REMOVED, "address": address},
            )
        listener = FabricListener(self, address, self._capacity)
        self._paths[address] = listener
        return listener

    def try_send(self, address: str, payload: bytes) -> SendResult:
        """Send one datagram without blocking; record the attempt; never raises."""
        result = self._send(address, payload)
        self.sends.append(SendRecord(address, result, payload))
        if result is SendResult.ERROR:
            logger.warning(
                "wake-up send to %s failed (injected fault)",
                address,
                extra={"event": LogEvent.WAKE_ERROR, "address": address},
            )
        return result

    def _send(self, address: str, payload: bytes) -> SendResult:
        if address not in self._paths:
            return SendResult.MISSING
        if self._reset.get(address, False):
            return SendResult.RESET
        listener = self._paths[address]
        if listener is None:
            return SendResult.REFUSED
        # Drawn only when faults are on, so a fault-free world consumes no randomness.
        rng = self._rng
        if self._fault_rate > 0.0 and rng is not None and rng.random() < self._fault_rate:
            fault = rng.choice(_SEEDED_FAULTS)
            if fault is _Fault.RESET:
                return SendResult.RESET
            if fault is _Fault.ERROR:
                return SendResult.ERROR
            return SendResult.DELIVERED  # DROP: the sender cannot tell
        if self._drop.get(address, False):
            return SendResult.DELIVERED  # a lost wake-up: reported sent, never arrives
        return listener._offer(payload)

    # -- world faults and inspection -------------------------------------------------------

    def state(self, address: str) -> PathState:
        """Return whether `address` is absent, a stale file, or live."""
        if address not in self._paths:
            return PathState.ABSENT
        return PathState.STALE if self._paths[address] is None else PathState.LIVE

    def listener(self, address: str) -> FabricListener | None:
        """Return the live listener at `address`, if any."""
        return self._paths.get(address)

    def addresses(self) -> list[str]:
        """Every address with a file (stale or live), in creation order."""
        return list(self._paths)

    def crash(self, address: str) -> None:
        """Kill the listener at `address` but leave its file: later sends are REFUSED."""
        listener = self._paths.get(address)
        if listener is None:
            raise KeyError(f"no live listener at {address!r}")
        listener._shut(f"listener on {address!r} crashed")
        self._paths[address] = None

    def plant_stale(self, address: str) -> None:
        """Leave a socket file with no listener at `address` (a previous run's leftover)."""
        if self.state(address) is PathState.LIVE:
            raise ValueError(f"{address!r} is live; crash() it instead")
        self._paths[address] = None

    def remove(self, address: str) -> None:
        """Delete the file at `address` (any listener is orphaned): sends are MISSING."""
        # Like unlinking a live socket's file: the process keeps waiting on a socket that
        # nobody can reach any more, which is exactly what the poll fallback must survive.
        self._paths.pop(address, None)

    def set_drop(self, address: str, drop: bool) -> None:
        """Silently lose every datagram to `address` while `drop` is set."""
        self._drop[address] = drop

    def set_reset(self, address: str, reset: bool) -> None:
        """Make every send to an existing file at `address` report RESET while set."""
        self._reset[address] = reset

    def _release(self, listener: FabricListener) -> None:
        # Only the listener that owns the entry may clear it: a successor that replaced it
        # keeps its address (the real transport compares inodes for this).
        if self._paths.get(listener.address) is listener:
            del self._paths[listener.address]

    def __repr__(self) -> str:
        live = sum(1 for v in self._paths.values() if v is not None)
        stale = len(self._paths) - live
        return (
            f"Fabric(live={live}, stale={stale}, sends={len(self.sends)}, "
            f"fault_rate={self._fault_rate})"
        )
