"""The socket dir and the socket path are trusted only when nobody else could have made them.

Issue 12, found by a hostile tester: a pre-existing 0777 (or another user's) socket dir was
used as is, so another user could replace a worker's socket and steal its wake-ups; a
dangling symlink at a socket path read as "another worker is listening"; a regular file
there was deleted as a "stale socket". Each is now one clear `TransportError` naming the
path, and nothing in the way is removed. Real AF_UNIX sockets in a short mkdtemp dir.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from typing import TYPE_CHECKING

import pytest

from reference.errors import SocketInUseError, TransportError
from reference.records import LogEvent
from reference.transport import SendResult
from reference.unix_transport import MAX_ADDRESS_BYTES, UnixTransport, check_address

if TYPE_CHECKING:
    from tests.integration.conftest import Workspace

FOREIGN_UID = 65534  # "nobody"


def _dir(sockdir: str, mode: int) -> str:
    path = os.path.join(sockdir, "s")
    os.mkdir(path)
    os.chmod(path, mode)  # chmod, not mkdir's mode: the umask would narrow it
    return path


def test_new_socket_dir_is_0700_even_under_umask_0(sockdir: str, transport: UnixTransport) -> None:
    old = os.umask(0)
    try:
        listener = transport.listen_now(f"{sockdir}/new/w1.sock")
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(f"{sockdir}/new").st_mode) == 0o700
    finally:
        listener.close()


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777, 0o722], ids=oct)
def test_socket_dir_others_can_write_is_refused(
    sockdir: str, transport: UnixTransport, mode: int
) -> None:
    sockets = _dir(sockdir, mode)
    with pytest.raises(TransportError) as info:
        transport.listen_now(f"{sockets}/w1.sock")
    message = str(info.value)
    assert f"socket dir {sockets!r} is writable by group or others" in message
    assert f"chmod 700 {sockets}" in message
    assert "\n" not in message
    assert os.listdir(sockets) == []  # nothing was bound in it
    assert stat.S_IMODE(os.stat(sockets).st_mode) == mode  # and it was not "fixed" behind us


def test_socket_dir_of_our_own_without_group_write_is_used(
    sockdir: str, transport: UnixTransport
) -> None:
    sockets = _dir(sockdir, 0o755)  # what os.makedirs leaves under the usual umask 022
    listener = transport.listen_now(f"{sockets}/w1.sock")
    try:
        assert transport.try_send(f"{sockets}/w1.sock", b"\x00") is SendResult.DELIVERED
    finally:
        listener.close()


def test_socket_dir_owned_by_another_user_is_refused(
    sockdir: str, transport: UnixTransport
) -> None:
    sockets = _dir(sockdir, 0o700)
    try:
        os.chown(sockets, FOREIGN_UID, -1)
    except PermissionError:
        pytest.skip("chown to another uid needs root")
    with pytest.raises(TransportError, match=f"is owned by uid {FOREIGN_UID}, not this"):
        transport.listen_now(f"{sockets}/w1.sock")
    assert os.listdir(sockets) == []


def test_socket_dir_that_is_a_symlink_to_a_foreign_dir_is_refused(
    sockdir: str, transport: UnixTransport
) -> None:
    # The check follows the link: what matters is who can write where the socket lands.
    target = _dir(sockdir, 0o777)
    link = os.path.join(sockdir, "link")
    os.symlink(target, link)
    with pytest.raises(TransportError, match="writable by group or others"):
        transport.listen_now(f"{link}/w1.sock")
    assert os.listdir(target) == []


def test_dangling_symlink_at_the_socket_path_is_an_error_and_kept(
    sockdir: str, transport: UnixTransport
) -> None:
    sockets = _dir(sockdir, 0o700)
    address = f"{sockets}/w1.sock"
    os.symlink(f"{sockdir}/nowhere.sock", address)
    with pytest.raises(TransportError, match="is a symlink, not a socket") as info:
        transport.listen_now(address)
    assert not isinstance(info.value, SocketInUseError)  # not "another worker is listening"
    assert address in str(info.value)
    assert os.readlink(address) == f"{sockdir}/nowhere.sock"


def test_symlink_to_a_live_socket_is_an_error_and_the_socket_gets_nothing(
    sockdir: str, transport: UnixTransport
) -> None:
    live = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    live.setblocking(False)
    live_path = f"{sockdir}/live.sock"
    live.bind(live_path)
    try:
        sockets = _dir(sockdir, 0o700)
        address = f"{sockets}/w1.sock"
        os.symlink(live_path, address)
        with pytest.raises(TransportError, match="is a symlink, not a socket") as info:
            transport.listen_now(address)
        assert not isinstance(info.value, SocketInUseError)
        assert os.path.islink(address)
        with pytest.raises(BlockingIOError):
            live.recv(16)  # the probe never went through the link
    finally:
        live.close()


def test_directory_at_the_socket_path_is_an_error_and_kept(
    sockdir: str, transport: UnixTransport
) -> None:
    sockets = _dir(sockdir, 0o700)
    address = f"{sockets}/w1.sock"
    os.mkdir(address)
    with pytest.raises(TransportError, match="is a directory, not a socket"):
        transport.listen_now(address)
    assert os.path.isdir(address)


def test_fifo_at_the_socket_path_is_an_error_and_kept(
    sockdir: str, transport: UnixTransport
) -> None:
    sockets = _dir(sockdir, 0o700)
    address = f"{sockets}/w1.sock"
    os.mkfifo(address)
    with pytest.raises(TransportError, match="not a socket"):
        transport.listen_now(address)
    assert stat.S_ISFIFO(os.lstat(address).st_mode)


def test_dead_real_socket_is_still_removed_as_stale(
    sockdir: str, transport: UnixTransport, caplog: pytest.LogCaptureFixture
) -> None:
    sockets = _dir(sockdir, 0o700)
    address = f"{sockets}/w1.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(address)
    dead.close()
    with caplog.at_level(logging.WARNING, logger="reference.unix_transport"):
        listener = transport.listen_now(address)
    try:
        assert [getattr(r, "event", None) for r in caplog.records] == [
            LogEvent.STALE_SOCKET_REMOVED
        ]
    finally:
        listener.close()


def test_check_address_names_the_length_and_the_limit() -> None:
    address = "/tmp/" + "d" * 120 + "/worker-1.sock"
    with pytest.raises(TransportError) as info:
        check_address(address)
    assert f"{len(address)} bytes" in str(info.value)
    assert f"limit of {MAX_ADDRESS_BYTES}" in str(info.value)
    assert check_address("/tmp/w.sock") == b"/tmp/w.sock"


def test_send_to_a_too_long_path_logs_one_line_once(
    transport: UnixTransport, caplog: pytest.LogCaptureFixture
) -> None:
    address = "/tmp/" + "y" * 200
    with caplog.at_level(logging.WARNING, logger="reference.unix_transport"):
        for _ in range(3):
            assert transport.try_send(address, b"\x00") is SendResult.ERROR
    (record,) = caplog.records  # once, not once per enqueue
    assert record.exc_info is None  # no traceback in the producer's stderr
    assert "path too long" in record.getMessage()


@pytest.mark.slow
def test_supervisor_refuses_a_world_writable_socket_dir(ws: Workspace) -> None:
    os.mkdir(ws.sockets)
    os.chmod(ws.sockets, 0o777)
    proc = ws.worker("--workers", "1")
    code = proc.wait()
    err = proc.stderr
    assert code != 0
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error: " in line]
    assert len(errors) == 1, err
    assert "writable by group or others" in errors[0]
    assert "chmod 700" in errors[0]
    assert os.listdir(ws.sockets) == []
