"""`Supervisor` over fake child processes in virtual time: restarts, giving up, bounded stop.

The real-process counterparts are in tests/integration/test_supervision.py; here every
back-off and grace period passes in virtual time, so the policies are checked exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from reference.supervisor import FATAL_TRIES, HEALTHY_AFTER, Supervisor
from sim.clock import SimClock
from sim.loop import SimEventLoop

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class FakeProc:
    """A child that exits with `code` after `life` s, or on SIGTERM unless `deaf`."""

    def __init__(self, code: int | None, life: float, *, deaf: bool) -> None:
        self._done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.deaf = deaf
        self.signals: list[int] = []
        if code is not None:
            asyncio.get_running_loop().call_later(life, self._exit, code)

    def _exit(self, code: int) -> None:
        if not self._done.done():
            self._done.set_result(code)

    @property
    def returncode(self) -> int | None:
        return self._done.result() if self._done.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._done)

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)
        if not self.deaf:
            self._exit(0)

    def kill(self) -> None:
        self.signals.append(signal.SIGKILL)
        self._exit(-signal.SIGKILL)


class Spawner:
    """Hands out FakeProcs per worker index from a script of (exit code, lifetime)."""

    def __init__(
        self, scripts: dict[int, list[tuple[int | None, float]]], *, deaf: bool = False
    ) -> None:
        self.scripts = scripts
        self.deaf = deaf
        self.spawned: dict[int, list[float]] = {i: [] for i in scripts}  # virtual start times
        self.procs: list[FakeProc] = []

    async def __call__(self, argv: Sequence[str]) -> FakeProc:
        index = int(argv[-1])
        self.spawned[index].append(asyncio.get_running_loop().time())
        script = self.scripts[index]
        code, life = script.pop(0) if script else (None, 0.0)  # then: runs until stopped
        proc = FakeProc(code, life, deaf=self.deaf)
        self.procs.append(proc)
        return proc


def _run(main: Callable[[], Coroutine[None, None, int]]) -> int:
    with asyncio.Runner(loop_factory=SimEventLoop) as runner:
        return runner.run(main())


def _supervisor(spawner: Spawner, *, stop_grace: float = 300.0) -> Supervisor:
    return Supervisor(
        lambda i: ["worker", str(i)],
        sorted(spawner.scripts),
        clock=SimClock(asyncio.get_running_loop(), EPOCH),
        stop_grace=stop_grace,
        spawn=spawner,
    )


async def _stop_after(sup: Supervisor, seconds: float) -> int:
    async def later() -> None:
        await asyncio.sleep(seconds)
        sup.stop()

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(later())
        code = tasks.create_task(sup.run())
    return code.result()


def test_ordinary_crashes_are_restarted_with_doubling_back_off() -> None:
    spawner = Spawner({1: [(1, 0.0)] * 8})

    async def main() -> int:
        return await _stop_after(_supervisor(spawner), 500.0)

    assert _run(main) == 0
    starts = spawner.spawned[1]
    assert len(starts) == 9  # eight crashes, all restarted (more than FATAL_TRIES)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(starts)]
    assert gaps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


@pytest.mark.parametrize("code", [2, 3])
def test_fatal_exits_are_given_up_and_the_supervisor_exits_1(
    code: int, caplog: pytest.LogCaptureFixture
) -> None:
    spawner = Spawner({1: [(code, 0.1)] * 10, 2: [(code, 0.1)] * 10})

    async def main() -> int:
        return await _supervisor(spawner).run()  # no stop(): it ends on its own

    with caplog.at_level(logging.INFO, logger="reference.supervisor"):
        assert _run(main) == 1
    assert [len(s) for s in spawner.spawned.values()] == [FATAL_TRIES, FATAL_TRIES]
    gave_up = [r.getMessage() for r in caplog.records if "times in a row" in r.getMessage()]
    assert len(gave_up) == 2
    assert f"worker 1 exited with status {code} (" in gave_up[0]
    assert "not restarting it" in gave_up[0]
    assert "every worker was given up" in caplog.records[-1].getMessage()
    deaths = [r for r in caplog.records if "exited with status" in r.getMessage()]
    assert len(deaths) == 2 * FATAL_TRIES  # one line per death


def test_one_worker_given_up_leaves_the_others_running() -> None:
    spawner = Spawner({1: [(3, 0.1)] * 10, 2: []})

    async def main() -> int:
        return await _stop_after(_supervisor(spawner), 100.0)

    assert _run(main) == 0
    assert len(spawner.spawned[1]) == FATAL_TRIES
    assert len(spawner.spawned[2]) == 1


def test_an_ordinary_exit_or_a_healthy_run_breaks_a_fatal_streak() -> None:
    long = HEALTHY_AFTER + 1.0
    spawner = Spawner({1: [(3, 0.1), (3, 0.1), (1, 0.1), (3, 0.1), (3, 0.1), (3, long)]})

    async def main() -> int:
        return await _stop_after(_supervisor(spawner), 500.0)

    assert _run(main) == 0
    assert len(spawner.spawned[1]) == 7  # never three fatal exits in a row


def test_a_worker_that_ignores_sigterm_is_killed_after_the_stop_grace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spawner = Spawner({1: [], 2: []}, deaf=True)
    stopped_at: list[float] = []

    async def main() -> int:
        code = await _stop_after(_supervisor(spawner, stop_grace=7.0), 10.0)
        stopped_at.append(asyncio.get_running_loop().time())
        return code

    with caplog.at_level(logging.INFO, logger="reference.supervisor"):
        assert _run(main) == 1
    for proc in spawner.procs:
        assert proc.signals == [signal.SIGTERM, signal.SIGKILL]
    assert stopped_at[0] - spawner.spawned[1][0] == pytest.approx(17.0)
    killed = [r.getMessage() for r in caplog.records if "killing it" in r.getMessage()]
    assert killed == [
        f"worker {i} did not stop within 7 s; killing it (its running jobs are re-queued "
        f"when worker {i} starts again, or when their leases expire)"
        for i in (1, 2)
    ]


def test_a_worker_that_stops_in_time_is_not_killed() -> None:
    spawner = Spawner({1: []})

    async def main() -> int:
        return await _stop_after(_supervisor(spawner, stop_grace=7.0), 10.0)

    assert _run(main) == 0
    assert spawner.procs[0].signals == [signal.SIGTERM]
