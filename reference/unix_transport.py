"""`UnixTransport`: wake-ups as one-byte AF_UNIX datagrams (the production `Transport`).

Owns the socket dir (0700, ours, refused if others can write it), the 0600 socket file,
stale-versus-live detection and the non-blocking send. The only importer of `socket` in
`reference/`; imports nothing above layer 1 and never `sim`. `OSError` never leaves this
module: listen raises `TransportError`, send returns a `SendResult`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import posixpath
import socket
import stat
from typing import TYPE_CHECKING

from reference.errors import SocketInUseError, TransportError
from reference.process import socket_holders
from reference.records import LogEvent
from reference.transport import SendResult

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)

# sun_path is 108 bytes on Linux (104 on the BSDs) including the terminating NUL; refuse
# anything longer up front instead of letting bind() fail with a vague "path too long".
MAX_ADDRESS_BYTES = 107
SOCKET_MODE = 0o600
SOCKET_DIR_MODE = 0o700
# A wake-up is one byte; anything larger is truncated, which is fine for a hint.
_RECV_SIZE = 64
_MAX_REPORTED = 64  # distinct send errors remembered, so each is logged once


def check_address(address: str) -> bytes:
    """Return `address` as bytes, or raise `TransportError` if it cannot name a socket.

    Producers call this once at configuration time, so a socket dir too long for AF_UNIX
    is one clear error up front rather than a failed wake-up on every enqueue.
    """
    if not address or "\0" in address:
        raise TransportError(f"invalid wake-up socket path {address[:200]!r}")
    raw = os.fsencode(address)
    if len(raw) > MAX_ADDRESS_BYTES:
        shown = address if len(address) <= 200 else address[:200] + "..."
        raise TransportError(
            f"wake-up socket path is {len(raw)} bytes, over the AF_UNIX limit of "
            f"{MAX_ADDRESS_BYTES}: {shown!r}; use a shorter socket dir"
        )
    return raw


def _check_socket_dir(path: str) -> None:
    """Refuse a socket dir that another user could write to or that is not ours.

    Anyone who can write to the dir can replace a worker's socket with their own and
    receive its wake-ups (or be the "live worker" that stops ours starting).
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise TransportError(f"cannot use socket dir {path!r}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise TransportError(f"socket dir {path!r} is not a directory")
    uid = os.geteuid()
    if st.st_uid != uid:
        raise TransportError(
            f"socket dir {path!r} is owned by uid {st.st_uid}, not this process's uid {uid}:"
            " another user could replace the workers' sockets; use a dir of your own"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise TransportError(
            f"socket dir {path!r} is writable by group or others (mode {mode:04o}): another"
            f" user could replace the workers' sockets; run chmod 700 {path}"
        )


def _file_kind(mode: int) -> str:
    """'a symlink', 'a regular file', ... for an lstat() mode, in error messages."""
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a FIFO or device"


class UnixListener:
    """A bound, non-blocking datagram socket; `UnixTransport.listen` makes these."""

    __slots__ = ("_address", "_identity", "_sock", "_waiter", "_watcher")

    def __init__(self, address: str, sock: socket.socket, identity: tuple[int, int]) -> None:
        self._address = address
        self._sock: socket.socket | None = sock
        # (st_dev, st_ino) of the file bind() created: close() unlinks only that file, never
        # a successor's socket that replaced it after we were declared stale.
        self._identity = identity
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        self._watcher: asyncio.AbstractEventLoop | None = None  # set by watch()

    @property
    def address(self) -> str:
        return self._address

    @property
    def closed(self) -> bool:
        return self._sock is None

    async def receive(self) -> bytes:
        """Wait for the next wake-up datagram and return it.

        Raises:
            TransportError: the listener is closed (also if closed while waiting).
            RuntimeError: another task is already waiting in `receive()`.
        """
        while True:
            data = self.receive_nowait()
            if data is not None:
                return data
            sock = self._sock
            assert sock is not None  # receive_nowait raised otherwise
            if self._waiter is not None or self._watcher is not None:
                raise RuntimeError(f"receive() already waiting on {self._address!r}")
            # add_reader rather than loop.sock_recv: the future is ours, so close() can
            # unregister the fd and fail the waiter instead of leaving a reader on a dead fd.
            # Any selector loop works, including the simulator's loop that polls real I/O.
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            fd = sock.fileno()
            loop.add_reader(fd, _wake, fut)
            self._waiter = (loop, fut)
            try:
                await fut
            finally:
                if self._waiter is not None and self._waiter[1] is fut:
                    self._waiter = None
                    loop.remove_reader(fd)

    def watch(self, on_ready: Callable[[], None]) -> None:
        """Call `on_ready()` whenever datagrams wait, from the loop's reader callback.

        One reader stays registered until `close`, so a wake-up costs no epoll_ctl and
        no task switch: `on_ready` runs in the step the datagram arrives in. It must
        drain the socket (the reader is level-triggered).
        """
        sock = self._sock
        if sock is None:
            raise TransportError(f"listener on {self._address!r} is closed")
        if self._waiter is not None or self._watcher is not None:
            raise RuntimeError(f"{self._address!r} is already being received from")
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), on_ready)
        self._watcher = loop

    def receive_nowait(self) -> bytes | None:
        """Return the next queued datagram, or None if none is queued; never waits."""
        sock = self._sock
        if sock is None:
            raise TransportError(f"listener on {self._address!r} is closed")
        try:
            return sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise TransportError(f"receive on {self._address!r} failed: {exc}") from exc

    def drain(self) -> int:
        """Discard every datagram already queued without waiting; return how many."""
        if self._sock is None:
            return 0
        count = 0
        while self.receive_nowait() is not None:
            count += 1
        return count

    def close(self) -> None:
        """Close the socket and unlink the file if it is still ours; idempotent."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._waiter is not None:
            loop, fut = self._waiter
            self._waiter = None
            loop.remove_reader(sock.fileno())
            if not fut.done():
                fut.set_exception(TransportError(f"listener on {self._address!r} closed"))
        if self._watcher is not None:
            self._watcher.remove_reader(sock.fileno())
            self._watcher = None
        sock.close()
        try:
            st = os.stat(self._address)
        except OSError:
            return  # already gone (or unreadable): nothing of ours to remove
        if (st.st_dev, st.st_ino) == self._identity:
            try:
                os.unlink(self._address)
            except FileNotFoundError:
                pass
            except OSError:
                logger.warning(
                    "could not remove wake-up socket %s",
                    self._address,
                    exc_info=True,
                    extra={"event": LogEvent.WAKE_ERROR, "address": self._address},
                )

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else "open"
        waiting = " waiting" if self._waiter is not None else ""
        return f"UnixListener({self._address!r}, {state}{waiting})"


def _held_by(address: str) -> str:
    """ " (pid 123)" naming who holds the socket at `address`, or "" where unknown."""
    pids = socket_holders(address)
    if not pids:
        return ""
    return f" (pid {', '.join(map(str, pids))})"


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class UnixTransport:
    """Wake-ups over AF_UNIX datagram sockets: listen on a path, `try_send` to a path."""

    __slots__ = ("_reported", "_sender")

    def __init__(self) -> None:
        # One unbound non-blocking socket serves every send: no per-wake socket() call.
        self._sender: socket.socket | None = None
        self._reported: set[tuple[str, str]] = set()  # send errors already logged

    async def listen(self, address: str) -> UnixListener:
        """Listen on `address`; remove a stale socket file, raise if a live one answers.

        Raises:
            SocketInUseError: another live process listens on `address`.
            TransportError: the path is too long or the socket cannot be set up.
        """
        # Every step is a local, non-blocking metadata syscall (the probe is a datagram
        # connect), so it runs inline; async only to fit the protocol.
        return self.listen_now(address)

    def listen_now(self, address: str) -> UnixListener:
        """Do `listen` synchronously; for callers without a running loop (tools, benches)."""
        check_address(address)
        parent = posixpath.dirname(address) or "."
        try:
            os.makedirs(parent, mode=SOCKET_DIR_MODE, exist_ok=True)
        except OSError as exc:
            raise TransportError(f"cannot create socket dir {parent!r}: {exc}") from exc
        _check_socket_dir(parent)
        self._clear_stale(address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            self._bind_private(sock, address)
            st = os.stat(address)
        except Exception:
            sock.close()
            raise
        logger.debug("listening on %s", address)
        return UnixListener(address, sock, (st.st_dev, st.st_ino))

    @staticmethod
    def _clear_stale(address: str) -> None:
        """Raise if a live listener holds `address`; unlink it only if it is a dead socket.

        Only a real socket (lstat, so a symlink is never followed) whose connect is refused
        is stale. A symlink, regular file or directory there is not ours to delete, and
        probing through a symlink would misreport its target as "another worker".
        """
        try:
            before = os.lstat(address)
        except FileNotFoundError:
            return  # nothing in the way
        except OSError as exc:
            raise TransportError(f"cannot inspect wake-up socket {address!r}: {exc}") from exc
        if not stat.S_ISSOCK(before.st_mode):
            raise TransportError(
                f"wake-up socket path {address!r} is {_file_kind(before.st_mode)}, not a"
                " socket; remove it or use another socket dir"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            # connect() on a datagram socket asks the kernel whether a bound socket sits
            # behind the path without queueing a byte, so the live owner gets no spurious
            # wake-up. A dead socket's file answers ECONNREFUSED.
            probe.connect(address)
        except ConnectionRefusedError:
            pass  # stale: fall through to unlink
        except FileNotFoundError:
            return  # vanished since lstat(): nothing to clear
        except OSError as exc:
            raise TransportError(f"cannot probe wake-up socket {address!r}: {exc}") from exc
        else:
            raise SocketInUseError(f"another worker is listening on {address}{_held_by(address)}")
        finally:
            probe.close()
        try:
            after = os.lstat(address)
            if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
                # Replaced since we probed: let bind() decide (EADDRINUSE is in-use).
                return
            os.unlink(address)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise TransportError(f"cannot remove stale socket {address!r}: {exc}") from exc
        logger.warning(
            "removed stale wake-up socket %s (no listener answered)",
            address,
            extra={"event": LogEvent.STALE_SOCKET_REMOVED, "address": address},
        )

    @staticmethod
    def _bind_private(sock: socket.socket, address: str) -> None:
        """Bind `sock` to `address` so the file is 0600 from the moment it exists."""
        # On Linux the file bind() creates takes its mode from the socket inode (minus the
        # umask), so fchmod before bind leaves no window in which another user could connect.
        # Where fchmod on a socket is refused, narrow the umask around bind instead: the
        # umask is process-wide, but a racing thread only gets *stricter* file modes.
        try:
            os.fchmod(sock.fileno(), SOCKET_MODE)
            pre_chmod = True
        except OSError:
            pre_chmod = False
        try:
            if pre_chmod:
                sock.bind(address)
            else:
                old_umask = os.umask(0o777 & ~SOCKET_MODE)
                try:
                    sock.bind(address)
                finally:
                    os.umask(old_umask)
            # Belt and braces: a platform that ignores both still ends at 0600 at once.
            os.chmod(address, SOCKET_MODE)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                # Another process bound the path between our probe/unlink and bind().
                raise SocketInUseError(f"another worker is listening on {address}") from exc
            raise TransportError(f"cannot bind wake-up socket {address!r}: {exc}") from exc

    def try_send(self, address: str, payload: bytes) -> SendResult:
        """Send one datagram to `address` without blocking; never raises."""
        try:
            sender = self._sender
            if sender is None:
                sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sender.setblocking(False)
                self._sender = sender
            sender.sendto(payload, address)
        except BlockingIOError:
            # The receiver's queue is full: it has unread wake-ups, so it counts as woken.
            return SendResult.PENDING
        except FileNotFoundError:
            return SendResult.MISSING
        except ConnectionRefusedError:
            return SendResult.REFUSED
        except (ConnectionResetError, BrokenPipeError):
            return SendResult.RESET
        except (OSError, ValueError) as exc:  # ValueError: an embedded NUL in the path
            # One line, once per address and error: a misconfigured producer (a socket dir
            # too long for AF_UNIX, another user's 0600 socket) would otherwise print a
            # traceback on every enqueue.
            problem = (address, f"{type(exc).__name__}: {exc}")
            if problem not in self._reported:
                if len(self._reported) < _MAX_REPORTED:
                    self._reported.add(problem)
                logger.warning(
                    "wake-up send to %s failed: %s",
                    address[:200],
                    problem[1],
                    extra={"event": LogEvent.WAKE_ERROR, "address": address},
                )
            return SendResult.ERROR
        return SendResult.DELIVERED

    def close(self) -> None:
        """Close the cached send socket; a later `try_send` opens a new one."""
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.close()

    def __repr__(self) -> str:
        state = "idle" if self._sender is None else "sender open"
        return f"UnixTransport({state})"
