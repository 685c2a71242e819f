"""`World`: all state of one simulated run, and the one seeded RNG it is drawn from.

Owns the virtual loop, the `SimClock`, the in-memory socket fabric, a private temp dir
for real SQLite files, the trace, and the hosts (simulated worker processes, kept in
insertion order). A run is a pure function of its seed: every random choice comes from
`rng` or a named child of it (`child_rng`), derived with sha256, never `hash()`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sim.clock import SimClock, SkewProgram
from sim.fabric import Fabric
from sim.loop import SimEventLoop
from sim.trace import Trace

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from reference.observe import Field
    from reference.records import WorkerRow
    from sim.host import Host

# A fixed, ordinary epoch: a Monday in UTC, far from DST changes unless a scenario asks.
DEFAULT_EPOCH = datetime(2026, 3, 2, 0, 0, 0, tzinfo=UTC)
# Far more than any legitimate burst at one instant (1,000 entries due together fire in
# one pass), far less than a livelock runs before anyone notices.
MAX_STEPS_PER_INSTANT = 20_000


def child_rng(seed: int, name: str) -> random.Random:
    """The RNG named `name` of seed `seed`: sha256-derived, never `hash()`-seeded."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class World:
    """One simulated run: loop, clock, fabric, database dir, trace and hosts."""

    def __init__(
        self,
        seed: int,
        *,
        epoch: datetime = DEFAULT_EPOCH,
        skew: SkewProgram | None = None,
        max_steps_per_instant: int | None = MAX_STEPS_PER_INSTANT,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.loop = SimEventLoop(max_steps_per_instant=max_steps_per_instant)
        self.clock = SimClock(self.loop, epoch, skew)
        self.trace = Trace(lambda: self.loop.now_ns)
        self.fabric = Fabric(self.child_rng("fabric"))
        self.hosts: list[Host] = []
        self._tmp: str | None = None
        # "module:function" of every real clock or global-random read made by runtime code
        # during the run; a simulated run must have none (checked for every scenario).
        self.real_reads: list[str] = []

    def child_rng(self, name: str) -> random.Random:
        """An independent RNG for `name`, derived from the seed (stable across processes)."""
        return child_rng(self.seed, name)

    @property
    def tmpdir(self) -> str:
        """A private directory for this run's real SQLite files; removed by `close()`."""
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="sim-")
        return self._tmp

    def emit(self, event: str, **fields: Field) -> None:
        """Record a world-level event (host 0): faults, crashes, scenario steps."""
        self.trace.emit(0, event, fields)

    def owner_gone(self, row: WorkerRow, machine: str) -> bool:
        """The `liveness` probe of a host on `machine`: is `row`'s process certainly dead?

        A host sees the processes of its own machine, as `os.kill(pid, 0)` sees those of a
        real one: an owner of that machine no running host incarnation has is gone. Owners
        of other machines are left to their heartbeats.
        """
        if row.host != machine:
            return False
        return not any(
            host.machine == machine and host.alive and host.owner == row.owner
            for host in self.hosts
        )

    def now(self) -> float:
        """Virtual seconds since the start of the run."""
        return self.loop.time()

    def run(self, main: Callable[[World], Awaitable[None]]) -> None:
        """Run `main(self)` on the virtual loop to completion."""
        with _quiet_runtime_logs(), _guard_real_sources(self.real_reads):
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(main(self))
            finally:
                try:
                    _cancel_leftovers(self.loop)
                finally:
                    asyncio.set_event_loop(None)

    def close(self) -> None:
        for host in self.hosts:
            host.close()
        if not self.loop.is_closed():
            self.loop.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __repr__(self) -> str:
        return f"World(seed={self.seed}, t={self.now():.3f}, hosts={len(self.hosts)})"


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


_GUARDED_TIME = ("time", "monotonic", "time_ns", "monotonic_ns", "sleep")
_GUARDED_RANDOM = (
    "random",
    "randrange",
    "randint",
    "choice",
    "choices",
    "uniform",
    "shuffle",
    "sample",
    "expovariate",
    "gauss",
    "getrandbits",
)


@contextmanager
def _guard_real_sources(reads: list[str]) -> Iterator[None]:
    """Record runtime (`reference.*`) calls of the real clock or the global random.

    The static layering test catches such calls in the source; this catches them at run
    time, including through helpers, while a simulation is running.
    """
    saved: list[tuple[object, str, object]] = []

    def wrap(owner: object, name: str) -> None:
        original = getattr(owner, name)

        def guarded(*args: object, **kwargs: object) -> object:
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller == "reference" or caller.startswith("reference."):
                reads.append(f"{caller}:{owner.__name__}.{name}")  # type: ignore[attr-defined]
            return original(*args, **kwargs)

        saved.append((owner, name, original))
        setattr(owner, name, guarded)

    for name in _GUARDED_TIME:
        wrap(time, name)
    for name in _GUARDED_RANDOM:
        wrap(random, name)
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


@contextmanager
def _quiet_runtime_logs() -> Iterator[None]:
    """Keep the runtime's log lines (people's channel) off the terminal during a run."""
    logs = [logging.getLogger(name) for name in ("reference", "sim")]
    saved = [(log.level, log.propagate) for log in logs]
    for log in logs:
        log.setLevel(logging.CRITICAL + 1)
        log.propagate = False
    try:
        yield
    finally:
        for log, (level, propagate) in zip(logs, saved, strict=True):
            log.setLevel(level)
            log.propagate = propagate
