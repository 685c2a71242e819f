"""The supervisor: starts worker processes 1..N, restarts any that die, stops them on a signal.

Layer 4; the only importer of `signal` and `subprocess`. Each worker is a fresh
`python -m reference.worker ... --worker-index I --supervisor-pid P` process (spawned, never
forked), so no SQLite connection, socket or thread of the supervisor survives into a child.
A worker dies with its supervisor: it asks for SIGTERM on its parent's death (Linux) and
checks every second that its parent is still P, so even `kill -9` of the supervisor leaves
no orphan serving the queue. On SIGTERM/SIGINT the supervisor forwards SIGTERM to every
child and waits for each to finish its running jobs, at most `stop_grace` seconds
(`WORKER_STOP_GRACE`); a child still running then is killed, and the exit status is 1.
A second signal while stopping kills the children at once (exit 1: not graceful); their
running jobs are re-queued by lease expiry or by the next start of the same index.

A worker's exit status tells the supervisor whether a restart can help:

    0, 1, killed by a signal   ordinary: restarted with back-off (0.5 s doubling to 30 s)
    2  EXIT_CONFIG             bad configuration (e.g. the schedule file became invalid)
    3  EXIT_UNUSABLE           the queue database is missing, corrupt or not ours

After `FATAL_TRIES` consecutive exits with 2 or 3 the supervisor stops restarting that
worker (one ERROR line); once every worker is in that state it exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from reference.process import set_parent_death_signal
from reference.records import LogEvent

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from reference.clock import Clock

logger = logging.getLogger(__name__)

RESTART_BACKOFF_MIN = 0.5
RESTART_BACKOFF_MAX = 30.0
# A child that stays up this long is healthy again: its back-off resets.
HEALTHY_AFTER = 30.0
# How long a stop waits for a worker's running jobs. The supervisor cannot know every job's
# timeout (call sites set their own), so this is a generous fixed bound: longer than the
# default timeout (30 s) plus the runner's grace for a job that ignores its cancellation.
DEFAULT_STOP_GRACE = 300.0

EXIT_CONFIG: Final = 2  # SPEC: bad usage or configuration
EXIT_UNUSABLE: Final = 3  # the queue database is missing, corrupt or not ours
FATAL_EXITS: Final = frozenset({EXIT_CONFIG, EXIT_UNUSABLE})
FATAL_TRIES: Final = 3  # consecutive fatal exits before a worker is given up
_MEANING = {
    EXIT_CONFIG: "configuration unusable",
    EXIT_UNUSABLE: "queue database unusable",
}


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


def stop_when_parent_dies() -> bool:
    """Have the kernel send this process SIGTERM (a graceful stop) when its parent dies.

    False where unsupported (not Linux): the worker's periodic parent check remains.
    Before `install_stop_handlers` runs, SIGTERM's default action simply ends the process.
    """
    return set_parent_death_signal(signal.SIGTERM)


class ChildProcess(Protocol):
    """What the supervisor needs of a worker process (`asyncio.subprocess.Process` has it)."""

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


async def spawn_process(argv: Sequence[str]) -> ChildProcess:
    """Start `argv` as a child process with stdin closed (the supervisor's default spawner)."""
    return await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL)


@dataclass(slots=True)
class _Child:
    index: int
    proc: ChildProcess | None = None
    started_at: float = 0.0
    backoff: float = RESTART_BACKOFF_MIN
    restarts: int = 0
    fatal_streak: int = 0  # consecutive exits with a FATAL_EXITS status
    given_up: bool = False
    history: list[int] = field(default_factory=list)  # exit codes


class Supervisor:
    """Keeps one process per worker index running until told to stop.

    Args:
        worker_argv: the command line of worker `index`.
        indexes: the worker indexes to keep running.
        clock: uptimes (back-off reset) are measured on it.
        stop_grace: seconds a stopping worker may take before it is killed.
        spawn: starts one process from its argv (tests pass a fake).
    """

    def __init__(
        self,
        worker_argv: Callable[[int], Sequence[str]],
        indexes: Sequence[int],
        *,
        clock: Clock,
        stop_grace: float = DEFAULT_STOP_GRACE,
        spawn: Callable[[Sequence[str]], Awaitable[ChildProcess]] = spawn_process,
    ) -> None:
        self._argv = worker_argv
        self._clock = clock
        self._stop_grace = stop_grace
        self._spawn_process = spawn
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
        """Run every child until `stop()`; return 0 once all have exited.

        Returns 1 if a child had to be killed, or if every child was given up.
        """
        async with asyncio.TaskGroup() as tasks:
            for child in self._children.values():
                tasks.create_task(self._keep(child), name=f"child:{child.index}")
        if self._children and all(c.given_up for c in self._children.values()):
            logger.error(
                "supervisor exiting: every worker was given up (see the lines above)",
                extra={"event": LogEvent.CHILD_EXITED},
            )
            return 1
        return 1 if self._killed else 0

    async def _spawn(self, child: _Child) -> None:
        child.proc = await self._spawn_process(self._argv(child.index))
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
            if not self._after_exit(child, code):
                return
            try:
                async with asyncio.timeout(child.backoff):
                    await self._stopping.wait()
                return
            except TimeoutError:
                pass
            child.backoff = min(child.backoff * 2, RESTART_BACKOFF_MAX)
            child.restarts += 1

    def _after_exit(self, child: _Child, code: int) -> bool:
        """Record and log one unbidden exit; True if the child is to be restarted."""
        child.history.append(code)
        uptime = self._clock.monotonic() - child.started_at
        if uptime >= HEALTHY_AFTER:
            child.backoff = RESTART_BACKOFF_MIN
            child.fatal_streak = 0
        meaning = _MEANING.get(code)
        child.fatal_streak = child.fatal_streak + 1 if meaning else 0
        if meaning and child.fatal_streak >= FATAL_TRIES:
            child.given_up = True
            logger.error(
                "worker %d exited with status %d (%s) %d times in a row; not restarting it",
                child.index,
                code,
                meaning,
                child.fatal_streak,
                extra={"event": LogEvent.CHILD_EXITED, "child": child.index},
            )
            return False
        logger.warning(
            "worker %d exited with status %d%s after %.1f s; restarting in %.1f s",
            child.index,
            code,
            f" ({meaning}, try {child.fatal_streak} of {FATAL_TRIES})" if meaning else "",
            uptime,
            child.backoff,
            extra={"event": LogEvent.CHILD_RESTARTING, "child": child.index},
        )
        return True

    async def _stop_child(self, child: _Child, waiter: asyncio.Future[int]) -> None:
        proc = child.proc
        assert proc is not None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # exited, not yet reaped
                proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self._stop_grace):
                code = await asyncio.shield(waiter)
        except TimeoutError:
            self._killed = True
            logger.warning(
                "worker %d did not stop within %g s; killing it (its running jobs are "
                "re-queued when worker %d starts again, or when their leases expire)",
                child.index,
                self._stop_grace,
                child.index,
                extra={"event": LogEvent.WORKER_STOPPING, "child": child.index},
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            code = await waiter
        logger.info(
            "worker %d exited with status %d",
            child.index,
            code,
            extra={"event": LogEvent.CHILD_EXITED, "child": child.index},
        )

    def __repr__(self) -> str:
        given_up = sorted(c.index for c in self._children.values() if c.given_up)
        return (
            f"Supervisor(workers={sorted(self._children)}, stopping={self._stopping.is_set()}, "
            f"given_up={given_up})"
        )


def python_argv(module: str, args: Sequence[str]) -> list[str]:
    """The command line that runs `python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *args]
