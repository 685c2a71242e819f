"""Wake-ups as engine code: `Waker` (producer side) and `Doorbell` (consumer side).

Owns the choice of whom to wake, the ring fallback, the hop budget and the one-byte payload.
Works over the `Transport` protocol only: it must not import `socket`, any adapter, the
clock or `sim`, so the simulator runs exactly this code against `sim.fabric.Fabric`.
"""

# How a wake-up finds a worker that can take the job
# ====================================================
#
# The store is the truth; a wake-up is only a hint that shortens the wait. Every worker
# waits on its doorbell *or* a 5 s poll, so a wake-up that is lost, late or sent to the wrong
# worker delays a job by at most one poll and never loses it. That fixes the budget for this
# module: an enqueue must stay a few syscalls, never block the loop and never raise.
#
# Whom to wake. Waking every worker would make N workers race for one row, N-1 of them for
# nothing. Waking a fixed worker piles every job on it. So the producer picks a random start
# (from the injected rng, so the simulator replays it) and sends one datagram. Only if that
# worker is *unavailable* -- no socket file, a file with no listener, a reset, any other
# error -- does it try the next index around the ring, so the happy path is one attempt and
# the worst case N. Ring order is sorted worker index, never dict or set order, because the
# sequence of attempts reaches the simulator's trace.
#
# PENDING is success. When a worker's receive queue is full the kernel refuses the datagram
# with EAGAIN; that worker already has unread wake-ups, will wake, and will fetch. Falling
# back past it would wake a second worker for the same job.
#
# Busy workers pass the hint on. A worker woken while its concurrency slots are all taken
# cannot fetch, yet the producer believes the job is handled. The fix (issue: "wake a worker
# that can take the job") keeps the producer dumb and lets the woken worker decide: it calls
# `pass_on`, which wakes the next live worker after itself. To stop a hint circulating forever
# around a ring of busy workers, each datagram's one byte is a hop budget: the producer
# sends N-1, each hand-off sends one less, and a worker holding 0 keeps the hint and relies
# on its own next fetch (or the poll). A chain thus touches each worker at most once when
# all are alive, and is bounded by N-1 hand-offs in every case.
#
# Coalescing. Several wake-ups queued at one doorbell mean "there is work"; the consumer
# wakes once, drains the rest, and keeps the largest hop budget among them, so a busy
# worker hands on the most generous hint it was given.

from __future__ import annotations

import asyncio
import logging
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from reference.records import LogEvent

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Collection, Mapping

    from reference.clock import Clock
    from reference.transport import Listener, SendResult, Transport

logger = logging.getLogger(__name__)

_MAX_HOPS = 255  # the hop budget travels in one byte


# Workers poll the store this often whatever the wake-ups do: a lost wake-up delays a job by
# at most this much (SPEC). Here because the waker's warnings are paced by it too.
POLL_INTERVAL = 5.0


def socket_address(socket_dir: str, index: int) -> str:
    """Return the wake-up socket path of worker `index` in `socket_dir`."""
    return posixpath.join(socket_dir, f"worker-{index}.sock")


def wake_addresses(socket_dir: str, workers: int, isolated: Collection[int] = ()) -> dict[int, str]:
    """The wake-up address of every queue-consuming worker index (1..`workers`, less the
    `isolated` ones, which never listen): the one map producers, workers and the simulator use.
    """
    return {i: socket_address(socket_dir, i) for i in range(1, workers + 1) if i not in isolated}


def encode_hops(hops: int) -> bytes:
    """Return the one-byte payload carrying a hop budget (clamped to 0..255)."""
    return bytes((max(0, min(hops, _MAX_HOPS)),))


def decode_hops(payload: bytes) -> int:
    """Return the hop budget in a wake-up payload; an empty datagram carries 0."""
    return payload[0] if payload else 0


@dataclass(frozen=True, slots=True)
class WakeReport:
    """What one wake-up did: every (worker index, result) tried, and who was woken."""

    attempts: tuple[tuple[int, SendResult], ...]
    woken: int | None


class Waker:
    """Wake one worker: a random start, then the ring while workers are unavailable.

    With a `clock`, "no worker could be woken" is logged at most once per `warn_every`
    seconds, counting the wake-ups it covers: with no worker listening, every enqueue
    warned (5,000 lines for 5,000 enqueues, about 30% of enqueue throughput).
    """

    __slots__ = (
        "_addresses",
        "_clock",
        "_ring",
        "_rng",
        "_transport",
        "_unwoken",
        "_warn_every",
        "_warned_at",
    )

    def __init__(
        self,
        transport: Transport,
        addresses: Mapping[int, str],
        rng: random.Random,
        *,
        clock: Clock | None = None,
        warn_every: float = POLL_INTERVAL,
    ) -> None:
        self._transport = transport
        self._rng = rng
        self._clock = clock
        self._warn_every = warn_every
        self._warned_at: float | None = None
        self._unwoken = 0  # wake-ups that found no worker since the last warning
        self._ring: tuple[int, ...] = tuple(sorted(addresses))
        self._addresses: dict[int, str] = {i: addresses[i] for i in self._ring}

    @property
    def indices(self) -> tuple[int, ...]:
        """The worker indices in ring order."""
        return self._ring

    def wake_one(self) -> WakeReport:
        """Wake one worker from a random start; never raises."""
        n = len(self._ring)
        if n == 0:
            logger.warning("no queue workers to wake", extra={"event": LogEvent.WAKE_UNAVAILABLE})
            return WakeReport((), None)
        start = self._rng.randrange(n)
        order = self._ring[start:] + self._ring[:start]
        return self._try_in_order(order, encode_hops(n - 1))

    def pass_on(self, from_index: int, hops_left: int) -> WakeReport:
        """Hand a wake-up on to the next worker after `from_index`, spending one hop."""
        if hops_left <= 0:
            return WakeReport((), None)
        after = tuple(i for i in self._ring if i > from_index)
        before = tuple(i for i in self._ring if i < from_index)
        order = after + before
        if not order:
            return WakeReport((), None)
        return self._try_in_order(order, encode_hops(hops_left - 1))

    def _try_in_order(self, order: tuple[int, ...], payload: bytes) -> WakeReport:
        attempts: list[tuple[int, SendResult]] = []
        for index in order:
            result = self._transport.try_send(self._addresses[index], payload)
            attempts.append((index, result))
            if result.woke:
                return WakeReport(tuple(attempts), index)
        self._unwoken += 1
        now = None if self._clock is None else self._clock.monotonic()
        if now is None or self._warned_at is None or now - self._warned_at >= self._warn_every:
            logger.warning(
                "no worker could be woken (%s; %d wake-up(s) since the last warning);"
                " jobs wait for the next poll",
                ", ".join(f"{i}:{r}" for i, r in attempts),
                self._unwoken,
                extra={"event": LogEvent.WAKE_UNAVAILABLE, "attempts": len(attempts)},
            )
            self._warned_at, self._unwoken = now, 0
        return WakeReport(tuple(attempts), None)

    def __repr__(self) -> str:
        return f"Waker(workers={list(self._ring)!r}, transport={self._transport!r})"


class Doorbell:
    """The consumer's end: wait for a wake-up or a timeout, coalescing queued ones."""

    __slots__ = ("_hops_left", "_listener", "_rings")

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._hops_left = 0
        self._rings = 0

    @classmethod
    async def open(cls, transport: Transport, address: str) -> Self:
        """Listen on `address` (clearing a stale socket) and return the doorbell.

        Raises:
            SocketInUseError: another live worker listens on `address`.
            TransportError: the address cannot be listened on.
        """
        return cls(await transport.listen(address))

    @property
    def address(self) -> str:
        return self._listener.address

    @property
    def hops_left(self) -> int:
        """The largest hop budget among the wake-ups the last `wait_rung` consumed."""
        return self._hops_left

    @property
    def rings(self) -> int:
        """How many wake-ups the last `wait_rung` consumed (0 on timeout)."""
        return self._rings

    # The timeout is part of the contract (SPEC: wait on the doorbell *or* the poll), and it
    # is applied with asyncio.timeout inside, so it stays virtual in the simulator.
    async def wait_rung(self, timeout: float | None) -> bool:  # noqa: ASYNC109
        """Wait up to `timeout` seconds for a wake-up, drain the rest; True if rung."""
        self._hops_left = 0
        self._rings = 0
        # A wake-up already queued answers at once, so timeout=0 is a pure poll.
        first = self._listener.receive_nowait()
        if first is None:
            try:
                async with asyncio.timeout(timeout):
                    first = await self._listener.receive()
            except TimeoutError:
                return False
        hops = decode_hops(first)
        rings = 1
        while (more := self._listener.receive_nowait()) is not None:
            hops = max(hops, decode_hops(more))
            rings += 1
        self._hops_left = hops
        self._rings = rings
        return True

    def watch(self, on_ring: Callable[[int], None]) -> None:
        """Call `on_ring(hops_left)` in the loop step wake-ups arrive in, until `close`.

        The push-style alternative to `wait_rung` (never both): the wake-ups queued at
        that step are drained and coalesced as `wait_rung` does, and `on_ring` gets the
        largest hop budget among them. It runs as a loop callback, not in a task.
        """

        def ready() -> None:
            hops = -1
            rings = 0
            while (data := self._listener.receive_nowait()) is not None:
                hops = max(hops, decode_hops(data))
                rings += 1
            if rings:
                self._hops_left, self._rings = hops, rings
                on_ring(hops)

        self._listener.watch(ready)

    def close(self) -> None:
        """Stop listening and remove the address; idempotent."""
        self._listener.close()

    def __repr__(self) -> str:
        return (
            f"Doorbell({self._listener!r}, last_rings={self._rings}, hops_left={self._hops_left})"
        )
