"""`UnixTransport` on real AF_UNIX sockets: file modes, stale files, other processes, limits."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import stat
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from reference.errors import SocketInUseError, TransportError
from reference.records import LogEvent
from reference.transport import SendResult
from reference.unix_transport import MAX_ADDRESS_BYTES, UnixTransport
from reference.waker import Doorbell, Waker, decode_hops, socket_address

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

T = TypeVar("T")

# A child process that binds a datagram socket at argv[1] and holds it until stdin closes.
HOLDER = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
"""


def run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner() as runner:
        return runner.run(coro)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.01)


def test_socket_file_is_0600_and_new_dir_is_0700(sockdir: str, transport: UnixTransport) -> None:
    address = f"{sockdir}/run/w0.sock"
    listener = run(transport.listen(address))
    try:
        st = os.stat(address)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert stat.S_IMODE(os.stat(f"{sockdir}/run").st_mode) == 0o700
    finally:
        listener.close()
    assert not os.path.exists(address)


def test_stale_socket_file_is_removed_with_a_warning(
    sockdir: str, transport: UnixTransport, caplog: pytest.LogCaptureFixture
) -> None:
    address = f"{sockdir}/w0.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(address)
    dead.close()  # a crashed worker: the file stays
    with caplog.at_level(logging.WARNING, logger="reference.unix_transport"):
        listener = run(transport.listen(address))
    try:
        events = [getattr(r, "event", None) for r in caplog.records]
        assert events == [LogEvent.STALE_SOCKET_REMOVED]
        assert transport.try_send(address, b"\x01") is SendResult.DELIVERED
    finally:
        listener.close()


def test_regular_file_in_the_way_is_refused_and_kept(
    sockdir: str, transport: UnixTransport
) -> None:
    # Issue 12: a regular file at the socket path is not a stale socket; deleting it could
    # destroy someone's data, so it is a clear error naming the path, and the file stays.
    address = f"{sockdir}/w0.sock"
    with open(address, "w") as f:
        f.write("leftover")
    assert transport.try_send(address, b"\x00") is SendResult.REFUSED
    with pytest.raises(TransportError, match=f"{address}' is a regular file, not a socket"):
        run(transport.listen(address))
    with open(address) as f:
        assert f.read() == "leftover"


def test_live_socket_in_another_process_is_in_use(sockdir: str, transport: UnixTransport) -> None:
    address = f"{sockdir}/w0.sock"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(SocketInUseError, match=f"another worker is listening on {address}"):
            run(transport.listen(address))
        # The probe left the other process's file in place and sent it nothing.
        assert stat.S_ISSOCK(os.stat(address).st_mode)
        assert transport.try_send(address, b"\x00") is SendResult.DELIVERED
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    # The holder exited without unlinking: now it is stale and can be taken over.
    assert transport.try_send(address, b"\x00") is SendResult.REFUSED
    run(transport.listen(address)).close()


def test_path_too_long_is_a_transport_error(transport: UnixTransport) -> None:
    address = "/tmp/" + "x" * (MAX_ADDRESS_BYTES - len("/tmp/") + 1)
    with pytest.raises(TransportError, match="AF_UNIX limit"):
        run(transport.listen(address))
    assert not os.path.exists(address)


def test_send_with_too_long_path_is_an_error_not_an_exception(
    transport: UnixTransport, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="reference.unix_transport"):
        assert transport.try_send("/tmp/" + "y" * 200, b"\x00") is SendResult.ERROR
    assert [getattr(r, "event", None) for r in caplog.records] == [LogEvent.WAKE_ERROR]


def test_close_leaves_a_successors_socket_alone(sockdir: str, transport: UnixTransport) -> None:
    address = f"{sockdir}/w0.sock"
    first = run(transport.listen(address))
    # Someone declared us dead and replaced the file (e.g. an operator's cleanup + restart).
    os.unlink(address)
    second = run(transport.listen(address))
    first.close()
    assert os.path.exists(address)
    assert transport.try_send(address, b"\x00") is SendResult.DELIVERED
    second.close()
    assert not os.path.exists(address)


def test_waker_and_doorbell_end_to_end(sockdir: str, transport: UnixTransport) -> None:
    async def body() -> None:
        bells = [await Doorbell.open(transport, socket_address(sockdir, i)) for i in range(3)]
        try:
            # Worker 0 crashed with its file left behind.
            bells[0].close()
            _unix_stale(socket_address(sockdir, 0))
            waker = Waker(transport, {i: b.address for i, b in enumerate(bells)}, random.Random(4))
            waits = [asyncio.create_task(b.wait_rung(30.0)) for b in bells[1:]]
            await asyncio.sleep(0)
            report = waker.wake_one()
            assert report.woken in (1, 2)
            rung = bells[report.woken]
            assert await asyncio.wait_for(waits[report.woken - 1], 5.0) is True
            assert rung.hops_left == 2 == decode_hops(b"\x02")
            other = waits[2 - report.woken]
            assert not other.done()
            other.cancel()
        finally:
            for b in bells:
                b.close()

    run(body())


def _unix_stale(address: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.close()


def test_cancelled_receive_unregisters_and_can_wait_again(
    sockdir: str, transport: UnixTransport
) -> None:
    async def body() -> None:
        listener = await transport.listen(f"{sockdir}/w0.sock")
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.01):
                    await listener.receive()
            assert transport.try_send(listener.address, b"\x05") is SendResult.DELIVERED
            assert await asyncio.wait_for(listener.receive(), 5.0) == b"\x05"
        finally:
            listener.close()
        assert "closed" in repr(listener)

    run(body())


def test_bind_race_with_a_live_socket_is_in_use(
    sockdir: str, transport: UnixTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = f"{sockdir}/w0.sock"
    other = run(transport.listen(address))
    try:
        # Simulate losing the race: the file appears only after our existence check.
        monkeypatch.setattr(os.path, "lexists", lambda _path: False)
        with pytest.raises(SocketInUseError):
            run(transport.listen(address))
        monkeypatch.undo()
        assert transport.try_send(address, b"\x00") is SendResult.DELIVERED
    finally:
        other.close()


@pytest.mark.parametrize("fchmod_works", [True, False], ids=["fchmod", "umask-fallback"])
def test_socket_is_0600_from_the_moment_bind_creates_it(
    sockdir: str, transport: UnixTransport, monkeypatch: pytest.MonkeyPatch, fchmod_works: bool
) -> None:
    def refuse(_fd: int, _mode: int) -> None:
        raise OSError(22, "fchmod not supported on sockets here")

    if not fchmod_works:
        monkeypatch.setattr(os, "fchmod", refuse)
    chmods: list[str] = []
    real_chmod = os.chmod

    def spy(path: str, mode: int) -> None:
        chmods.append(oct(stat.S_IMODE(os.stat(path).st_mode)))
        real_chmod(path, mode)

    monkeypatch.setattr(os, "chmod", spy)
    old_umask = os.umask(0o022)
    try:
        listener = run(transport.listen(f"{sockdir}/w0.sock"))
    finally:
        os.umask(old_umask)
    try:
        # Already 0600 when bind() created it, before the belt-and-braces chmod ran.
        assert chmods == ["0o600"]
        assert stat.S_IMODE(os.stat(listener.address).st_mode) == 0o600
        assert os.umask(old_umask) == old_umask  # the umask was restored
    finally:
        listener.close()
