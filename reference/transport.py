"""The wake-up transport boundary: `Transport`, `Listener` and `SendResult`.

No `socket` here. `unix_transport.UnixTransport` is the production implementation on
AF_UNIX datagram sockets; `sim.fabric.Fabric` is the in-memory one. The waker and doorbell
(`waker.py`) are the same code on both.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable


class SendResult(StrEnum):
    """What one non-blocking wake-up attempt found at an address."""

    DELIVERED = "delivered"  # the byte is queued at a live listener
    PENDING = "pending"  # the listener's queue is full: a wake-up is already waiting (EAGAIN)
    MISSING = "missing"  # no socket file (FileNotFoundError)
    REFUSED = "refused"  # a file whose listener died (ConnectionRefusedError)
    RESET = "reset"  # connection reset or broken pipe
    ERROR = "error"  # anything else; the transport logs it

    @property
    def woke(self) -> bool:
        """True if a live listener will see a wake-up after this attempt."""
        return self in (SendResult.DELIVERED, SendResult.PENDING)


class Listener(Protocol):
    """The receiving end of one wake-up address."""

    @property
    def address(self) -> str: ...

    async def receive(self) -> bytes:
        """Wait for the next wake-up datagram and return it."""
        ...

    def receive_nowait(self) -> bytes | None:
        """Return the next queued datagram, or None if none is queued; never waits."""
        ...

    def drain(self) -> int:
        """Discard every datagram already queued without waiting; return how many."""
        ...

    def watch(self, on_ready: Callable[[], None]) -> None:
        """Call `on_ready()` from the event loop whenever datagrams wait, until `close`.

        The push-style alternative to `receive()` (never both on one listener): the
        callback runs in the loop step the datagram arrives in, with no task switch in
        between, and must drain the queue with `receive_nowait()`.
        """
        ...

    def close(self) -> None:
        """Stop listening and remove the address; idempotent."""
        ...


class Transport(Protocol):
    """Delivers one-byte wake-ups between processes."""

    async def listen(self, address: str) -> Listener:
        """Listen on `address`; remove a stale endpoint, raise `SocketInUseError` if live."""
        ...

    def try_send(self, address: str, payload: bytes) -> SendResult:
        """Send one datagram without blocking; never raises."""
        ...
