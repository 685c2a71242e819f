"""The `Transport` contract, run against `UnixTransport` (real sockets) and `sim.fabric.Fabric`.

Each arm supplies a fresh transport plus the one thing the protocol cannot express: how to
leave a stale endpoint behind (a listener that died without unlinking its file).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from reference.errors import SocketInUseError, TransportError
from reference.transport import Listener, SendResult, Transport
from reference.unix_transport import UnixTransport
from sim.fabric import Fabric

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator

T = TypeVar("T")


@dataclass
class Arm:
    """One transport implementation under test."""

    transport: Transport
    base: str
    make_stale: Callable[[str], None]

    def address(self, name: str) -> str:
        return f"{self.base}/{name}.sock"


def run(coro: Coroutine[Any, Any, T]) -> T:
    # The standard loop: the simulator's loop is tested with the simulator.
    with asyncio.Runner() as runner:
        return runner.run(coro)


def _unix_stale(address: str) -> None:
    # A listener that died: bound, then closed without unlinking its file.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.close()


@pytest.fixture(params=["unix", "fabric"])
def arm(request: pytest.FixtureRequest) -> Iterator[Arm]:
    if request.param == "unix":
        base = tempfile.mkdtemp(prefix="tr-")
        transport = UnixTransport()
        try:
            yield Arm(transport, base, _unix_stale)
        finally:
            transport.close()
            shutil.rmtree(base, ignore_errors=True)
    else:
        fabric = Fabric()
        yield Arm(fabric, "/sim/sock", fabric.plant_stale)


def test_send_to_absent_address_is_missing(arm: Arm) -> None:
    assert arm.transport.try_send(arm.address("nobody"), b"\x00") is SendResult.MISSING


def test_send_to_stale_file_is_refused(arm: Arm) -> None:
    address = arm.address("stale")
    arm.make_stale(address)
    assert arm.transport.try_send(address, b"\x00") is SendResult.REFUSED


def test_send_to_live_listener_is_delivered_and_received(arm: Arm) -> None:
    async def body() -> None:
        listener = await arm.transport.listen(arm.address("w0"))
        try:
            assert arm.transport.try_send(listener.address, b"\x03") is SendResult.DELIVERED
            assert await asyncio.wait_for(listener.receive(), 5.0) == b"\x03"
            assert listener.receive_nowait() is None
        finally:
            listener.close()

    run(body())


def test_receive_waits_until_a_send_arrives(arm: Arm) -> None:
    async def body() -> None:
        listener = await arm.transport.listen(arm.address("w0"))
        try:
            waiting = asyncio.create_task(listener.receive())
            await asyncio.sleep(0)
            assert not waiting.done()
            assert arm.transport.try_send(listener.address, b"\x01") is SendResult.DELIVERED
            assert await asyncio.wait_for(waiting, 5.0) == b"\x01"
        finally:
            listener.close()

    run(body())


def test_watch_calls_back_in_a_later_step_and_again_for_each_arrival(arm: Arm) -> None:
    async def body() -> None:
        listener = await arm.transport.listen(arm.address("w0"))
        got: list[list[bytes]] = []
        arrived = asyncio.Event()

        def ready() -> None:
            batch = []
            while (data := listener.receive_nowait()) is not None:
                batch.append(data)
            got.append(batch)
            arrived.set()

        try:
            listener.watch(ready)
            assert arm.transport.try_send(listener.address, b"\x01") is SendResult.DELIVERED
            assert arm.transport.try_send(listener.address, b"\x02") is SendResult.DELIVERED
            assert got == []  # never inside the sender's call
            await asyncio.wait_for(arrived.wait(), 5.0)
            assert got == [[b"\x01", b"\x02"]]  # both, drained in one callback
            arrived.clear()
            assert arm.transport.try_send(listener.address, b"\x03") is SendResult.DELIVERED
            await asyncio.wait_for(arrived.wait(), 5.0)
            assert got[1:] == [[b"\x03"]]
            with pytest.raises(RuntimeError):
                await listener.receive()  # watched: one way of receiving at a time
        finally:
            listener.close()
        assert arm.transport.try_send(arm.address("w0"), b"\x04") is SendResult.MISSING

    run(body())


def test_full_queue_reports_pending_and_drain_empties_it(arm: Arm) -> None:
    async def body() -> None:
        listener = await arm.transport.listen(arm.address("w0"))
        try:
            results = [arm.transport.try_send(listener.address, b"\x00") for _ in range(200)]
            first_pending = results.index(SendResult.PENDING)
            assert first_pending >= 1
            assert set(results[:first_pending]) == {SendResult.DELIVERED}
            assert set(results[first_pending:]) == {SendResult.PENDING}
            assert listener.drain() == first_pending
            assert listener.drain() == 0
            assert arm.transport.try_send(listener.address, b"\x00") is SendResult.DELIVERED
        finally:
            listener.close()

    run(body())


def test_listen_on_live_address_raises_socket_in_use(arm: Arm) -> None:
    async def body() -> None:
        listener = await arm.transport.listen(arm.address("w0"))
        try:
            with pytest.raises(SocketInUseError, match="another worker is listening"):
                await arm.transport.listen(listener.address)
            # The failed attempt must not have disturbed the live listener.
            assert arm.transport.try_send(listener.address, b"\x00") is SendResult.DELIVERED
        finally:
            listener.close()

    run(body())


def test_listen_on_stale_address_replaces_it(arm: Arm) -> None:
    async def body() -> None:
        address = arm.address("w0")
        arm.make_stale(address)
        listener = await arm.transport.listen(address)
        try:
            assert arm.transport.try_send(address, b"\x02") is SendResult.DELIVERED
            assert await asyncio.wait_for(listener.receive(), 5.0) == b"\x02"
        finally:
            listener.close()

    run(body())


def test_close_removes_the_address_and_is_idempotent(arm: Arm) -> None:
    async def body() -> None:
        listener = await arm.transport.listen(arm.address("w0"))
        listener.close()
        listener.close()
        assert arm.transport.try_send(listener.address, b"\x00") is SendResult.MISSING
        # The address is free again.
        again = await arm.transport.listen(listener.address)
        again.close()

    run(body())


def test_close_fails_a_pending_receive(arm: Arm) -> None:
    async def body() -> None:
        listener: Listener = await arm.transport.listen(arm.address("w0"))
        waiting = asyncio.create_task(listener.receive())
        await asyncio.sleep(0)
        listener.close()
        with pytest.raises(TransportError, match="closed"):
            await asyncio.wait_for(waiting, 5.0)

    run(body())


def test_listen_creates_missing_parent_dir(arm: Arm) -> None:
    async def body() -> None:
        listener = await arm.transport.listen(f"{arm.base}/sub/w0.sock")
        try:
            assert arm.transport.try_send(listener.address, b"\x00") is SendResult.DELIVERED
        finally:
            listener.close()

    run(body())
