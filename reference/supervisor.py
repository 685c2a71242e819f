"""The supervisor: starts worker processes 1..N, restarts any that die, stops them on a signal.

Layer 4; the only importer of `signal` and `subprocess`. Each worker is a fresh
`python -m reference.worker ... --worker-index I` process (spawned, never forked), so no
SQLite connection, socket or thread of the supervisor survives into a child. On
SIGTERM/SIGINT the supervisor forwards SIGTERM to every child, waits for each to finish its
running jobs (each finishes or hits its timeout, so a child always exits), and exits 0.
A second signal while stopping kills the children at once (exit 1: not graceful); their
running jobs are re-queued by lease expiry or by the next start of the same index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reference.records import LogEvent

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from reference.clock import Clock

logger = logging.getLogger(__name__)

RESTART_BACKOFF_MIN = 0.5
RESTART_BACKOFF_MAX = 30.0
# A child that stays up this long is healthy again: its back-off resets.
HEALTHY_AFTER = 30.0


def install_stop_handlers(loop: asyncio.AbstractEventLoop, on_stop: Callable[[], None]) -> None:
    """Call `on_stop` on SIGTERM and SIGINT (the loop's signal handling, not a raw handler)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop)


def ignore_stop_signals() -> None:
    """Ignore SIGTERM/SIGINT from now on: this process is already on its way out.

    A terminal's Ctrl-C reaches the whole process group, so a worker gets the signal both
    directly and forwarded by its supervisor; the second copy must not kill it mid-exit.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


@dataclass(slots=True)
class _Child:
    index: int
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    backoff: float = RESTART_BACKOFF_MIN
    restarts: int = 0
    history: list[int] = field(default_factory=list)  # exit codes


class Supervisor:
    """Keeps one process per worker index running until told to stop."""

    def __init__(
        self,
        worker_argv: Callable[[int], Sequence[str]],
        indexes: Sequence[int],
        *,
        clock: Clock,
    ) -> None:
        self._argv = worker_argv
        self._clock = clock
        self._children = {i: _Child(i) for i in indexes}
        self._stopping = asyncio.Event()
        self._killed = False

    def stop(self) -> None:
        """Stop gracefully; called again while stopping, kill every child at once."""
        if self._stopping.is_set():
            self._kill_all()
            return
        logger.info(
            "supervisor stopping %d workers",
            len(self._children),
            extra={"event": LogEvent.WORKER_STOPPING},
        )
        self._stopping.set()

    def _kill_all(self) -> None:
        if self._killed:
            return
        self._killed = True
        logger.warning(
            "second stop signal: killing %d workers; their running jobs are re-queued when "
            "the same workers start again (or when their leases expire)",
            len(self._children),
            extra={"event": LogEvent.WORKER_STOPPING},
        )
        for child in self._children.values():
            proc = child.proc
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):  # exited, not yet reaped
                    proc.kill()

    async def run(self) -> int:
        """Run every child until `stop()`; return 0 once all have exited (1 if killed)."""
        async with asyncio.TaskGroup() as tasks:
            for child in self._children.values():
                tasks.create_task(self._keep(child), name=f"child:{child.index}")
        return 1 if self._killed else 0

    async def _spawn(self, child: _Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(
            *self._argv(child.index), stdin=subprocess.DEVNULL
        )
        child.started_at = self._clock.monotonic()
        logger.info("started worker %d", child.index, extra={"event": LogEvent.WORKER_STARTED})

    async def _keep(self, child: _Child) -> None:
        while not self._stopping.is_set():
            await self._spawn(child)
            proc = child.proc
            assert proc is not None
            waiter = asyncio.ensure_future(proc.wait())
            stopper = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
            if self._stopping.is_set():
                await self._stop_child(child, waiter)
                return
            code = waiter.result()
            child.history.append(code)
            uptime = self._clock.monotonic() - child.started_at
            if uptime >= HEALTHY_AFTER:
                child.backoff = RESTART_BACKOFF_MIN
            logger.warning(
                "worker %d exited with status %d after %.1f s; restarting in %.1f s",
                child.index,
                code,
                uptime,
                child.backoff,
                extra={"event": LogEvent.CHILD_RESTARTING, "child": child.index},
            )
            try:
                async with asyncio.timeout(child.backoff):
                    await self._stopping.wait()
                return
            except TimeoutError:
                pass
            child.backoff = min(child.backoff * 2, RESTART_BACKOFF_MAX)
            child.restarts += 1

    async def _stop_child(self, child: _Child, waiter: asyncio.Future[int]) -> None:
        proc = child.proc
        assert proc is not None
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await waiter
        logger.info(
            "worker %d exited with status %d",
            child.index,
            code,
            extra={"event": LogEvent.CHILD_EXITED, "child": child.index},
        )

    def __repr__(self) -> str:
        return f"Supervisor(workers={sorted(self._children)}, stopping={self._stopping.is_set()})"


def python_argv(module: str, args: Sequence[str]) -> list[str]:
    """The command line that runs `python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *args]
