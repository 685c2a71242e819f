"""This process's ties to others: dying with the parent, who holds a Unix socket path, and
the host's name as worker rows record it.

Layer 3 (adapter). Imports nothing from the package; with `allocator.py`, the only importer
of `ctypes` (for `prctl`). Both features are Linux's (`prctl(PR_SET_PDEATHSIG)`, `/proc`);
elsewhere they degrade to "unknown" (False, None, []) and callers keep their fallbacks: the
worker's parent-pid check, a refusal message without pids.
"""

from __future__ import annotations

import ctypes
import os
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>
PR_GET_PDEATHSIG: Final = 2


def this_host() -> str:
    """This host's name as its workers record it in the `workers` table (and probes look for)."""
    return os.uname().nodename


def _prctl() -> Callable[..., int] | None:
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # the process's own libc
    except (AttributeError, OSError):  # no prctl: not Linux
        return None
    prctl.restype = ctypes.c_int
    return prctl


def set_parent_death_signal(signum: int) -> bool:
    """Have the kernel send `signum` to this process when its parent dies; False if unsupported.

    Linux sends it when the *thread* that forked this process ends, not the whole parent
    process: the supervisor forks from its event-loop (main) thread, which lives as long as
    the supervisor does. The setting survives `execve` and is cleared in forked children.
    """
    prctl = _prctl()
    if prctl is None:
        return False
    return prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signum), 0, 0, 0) == 0


def parent_death_signal() -> int | None:
    """The signal this process gets when its parent dies (0: none); None if unknown."""
    prctl = _prctl()
    if prctl is None:
        return None
    value = ctypes.c_int(0)
    if prctl(PR_GET_PDEATHSIG, ctypes.byref(value), 0, 0, 0) != 0:
        return None
    return value.value


def socket_holders(address: str, *, proc_root: str = "/proc") -> list[int]:
    """Pids of the processes holding a Unix socket bound to `address`; [] where unknown.

    Matches `/proc/net/unix` (socket inode and bound path) against the `socket:[inode]`
    links in every readable `/proc/PID/fd`, so it names any holder, worker or not; other
    users' processes are not readable and are left out. Plain file reads, no sockets.
    """
    target = os.path.realpath(address)
    base = os.path.basename(address)
    try:
        with open(os.path.join(proc_root, "net", "unix"), encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()[1:]  # after the header
    except OSError:
        return []
    bound: dict[str, str] = {}  # socket inode -> the path as its binder passed it
    for line in lines:
        # Num RefCount Protocol Flags Type St Inode Path (the path may contain spaces)
        fields = line.split(None, 7)
        if len(fields) == 8 and os.path.basename(fields[7]) == base:
            bound[fields[6]] = fields[7]
    if not bound:
        return []
    holders: set[int] = set()
    try:
        pids = [p for p in os.listdir(proc_root) if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        fd_dir = os.path.join(proc_root, pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                link = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            path = bound.get(link[8:-1]) if link.startswith("socket:[") else None
            if path is not None and _resolves_to(path, target, os.path.join(proc_root, pid)):
                holders.add(int(pid))
    holders.discard(os.getpid())
    return sorted(holders)


def _resolves_to(path: str, target: str, proc_dir: str) -> bool:
    """Whether a socket bound at `path` by the process at `proc_dir` is the file `target`."""
    if not os.path.isabs(path):  # bound relative to the binder's working directory
        try:
            path = os.path.join(os.readlink(os.path.join(proc_dir, "cwd")), path)
        except OSError:
            return False
    return os.path.realpath(path) == target


def pid_exists(pid: int) -> bool:
    """True if a process with `pid` exists in this pid namespace (it may be another one
    that reused the pid: callers treat True as "cannot tell", never as "alive")."""
    if pid <= 0:
        return True  # not a real pid: claim nothing about it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
