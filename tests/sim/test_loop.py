"""Tests for `sim.loop.SimEventLoop`: exact virtual timelines, stall and livelock detection.

Every test drives the loop through `asyncio.Runner(loop_factory=...)`, as the simulator
does. These tests also pin the asyncio internals the loop relies on (see its essay).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import pathlib
import random
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from sim.loop import BusyLoopDetected, LoopStats, SimEventLoop, SimulationStalled

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

T = TypeVar("T")


def run(main: Callable[[], Coroutine[Any, Any, T]], **loop_options: Any) -> tuple[T, SimEventLoop]:
    """Run `main()` on a fresh SimEventLoop; return its result and the (closed) loop."""
    with asyncio.Runner(loop_factory=functools.partial(SimEventLoop, **loop_options)) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, SimEventLoop)
        return runner.run(main()), loop


def now() -> float:
    return asyncio.get_running_loop().time()


# --- virtual time basics ------------------------------------------------------------


def test_time_starts_at_zero_and_sleep_chain_is_exact() -> None:
    async def main() -> list[float]:
        times = [now()]
        for _ in range(1000):
            await asyncio.sleep(0.1)
            times.append(now())
        return times

    times, loop = run(main)
    # Integer-ns time: no float drift even after 1,000 additions of 0.1.
    assert times == [k / 10 for k in range(1001)]
    assert times[-1] == 100.0
    assert loop.stats.advances == 1000


def test_concurrent_sleepers_wake_in_deadline_order() -> None:
    order: list[tuple[float, str]] = []

    async def sleeper(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        order.append((now(), name))

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            for name, delay in [("c", 3.0), ("a", 0.5), ("b", 1.25), ("a2", 0.5)]:
                tg.create_task(sleeper(name, delay))

    run(main)
    assert order == [(0.5, "a"), (0.5, "a2"), (1.25, "b"), (3.0, "c")]


def test_call_later_and_call_at_fire_at_exact_instants() -> None:
    fired: list[tuple[str, float]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        loop.call_at(2.0, lambda: fired.append(("at", loop.time())))
        loop.call_later(0.75, lambda: fired.append(("later", loop.time())))
        loop.call_later(7.0, done.set)
        await done.wait()
        fired.append(("done", loop.time()))

    run(main)
    assert fired == [("later", 0.75), ("at", 2.0), ("done", 7.0)]


def test_timers_closer_than_a_nanosecond_do_not_stall() -> None:
    fired: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.call_at(0.3, lambda: fired.append(loop.time()))
        loop.call_at(0.3 + 1e-10, lambda: fired.append(loop.time()))
        await asyncio.sleep(1.0)

    _, loop = run(main)
    assert fired == [0.3, 0.3]
    # The clock resolution the loop relies on (a private asyncio attribute).
    assert loop._clock_resolution == 1e-9


def test_day_long_sleep_takes_milliseconds_of_wall_time() -> None:
    async def main() -> float:
        await asyncio.sleep(24 * 3600)
        return now()

    started = time.perf_counter()
    virtual, _ = run(main)
    elapsed = time.perf_counter() - started
    assert virtual == 86400.0
    assert elapsed < 0.5


def test_sleep_longer_than_asyncio_select_cap_is_exact() -> None:
    # asyncio caps one select() timeout at 24 h, so this sleep is two clock jumps.
    async def main() -> float:
        await asyncio.sleep(2 * 86400 + 0.001)
        return now()

    virtual, loop = run(main)
    assert virtual == 172800.001
    assert loop.stats.advances == 3


# --- timeouts, synchronisation primitives -------------------------------------------


def test_timeout_fires_at_exact_virtual_instant() -> None:
    async def main() -> float:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.5):
                await asyncio.sleep(10)
        return now()

    virtual, _ = run(main)
    assert virtual == 1.5


def test_wait_for_times_out_or_returns_exactly() -> None:
    async def value_after(delay: float) -> str:
        await asyncio.sleep(delay)
        return "ok"

    async def main() -> list[tuple[str, float]]:
        seen = [(await asyncio.wait_for(value_after(1.0), timeout=2.0), now())]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(value_after(10.0), timeout=2.0)
        seen.append(("timeout", now()))
        return seen

    seen, _ = run(main)
    assert seen == [("ok", 1.0), ("timeout", 3.0)]


async def _sleep_until_timeout(seconds: float, seen: list[tuple[str, float]], tag: str) -> None:
    """Sleep under `asyncio.timeout(seconds)`; record when it fires (re-raise TimeoutError)."""
    try:
        async with asyncio.timeout(seconds):
            await asyncio.sleep(100)
    except TimeoutError:
        seen.append((tag, now()))
        raise


def test_nested_timeouts_fire_innermost_first_then_outer() -> None:
    async def inner_then_outer(seen: list[tuple[str, float]]) -> None:
        async with asyncio.timeout(5.0):
            with contextlib.suppress(TimeoutError):
                await _sleep_until_timeout(2.0, seen, "inner")
            await asyncio.sleep(100)

    async def outer_first(seen: list[tuple[str, float]]) -> None:
        # An inner deadline later than the outer one: the outer one wins.
        async with asyncio.timeout(1.0):
            await _sleep_until_timeout(50.0, seen, "inner-late")

    async def main() -> list[tuple[str, float]]:
        seen: list[tuple[str, float]] = []
        with pytest.raises(TimeoutError):
            await inner_then_outer(seen)
        seen.append(("outer", now()))
        with pytest.raises(TimeoutError):
            await outer_first(seen)
        seen.append(("outer-first", now()))
        return seen

    seen, _ = run(main)
    # "inner-late" is absent: its own timeout never expired (the outer one cancelled it).
    assert seen == [("inner", 2.0), ("outer", 5.0), ("outer-first", 6.0)]


def test_event_set_from_call_later_wakes_waiter_at_that_instant() -> None:
    async def main() -> float:
        event = asyncio.Event()
        asyncio.get_running_loop().call_later(3.25, event.set)
        await event.wait()
        return now()

    virtual, _ = run(main)
    assert virtual == 3.25


def test_semaphore_is_fifo_fair_on_virtual_time() -> None:
    starts: list[tuple[str, float]] = []

    async def user(sem: asyncio.Semaphore, name: str) -> None:
        async with sem:
            starts.append((name, now()))
            await asyncio.sleep(1.0)

    async def main() -> float:
        sem = asyncio.Semaphore(2)
        async with asyncio.TaskGroup() as tg:
            for name in "abcde":
                tg.create_task(user(sem, name))
        return now()

    end, _ = run(main)
    assert starts == [("a", 0.0), ("b", 0.0), ("c", 1.0), ("d", 1.0), ("e", 2.0)]
    assert end == 3.0


def test_taskgroup_waits_for_children_and_cancels_siblings_on_error() -> None:
    cancelled_at: list[float] = []

    async def sleeper(delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            cancelled_at.append(now())
            raise

    async def failer(delay: float) -> None:
        await asyncio.sleep(delay)
        raise ValueError("boom")

    async def failing_group() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(sleeper(10.0))
            tg.create_task(failer(1.5))

    async def main() -> list[float]:
        async with asyncio.TaskGroup() as tg:
            for delay in (1.0, 2.0, 3.0):
                tg.create_task(sleeper(delay))
        ends = [now()]
        with pytest.raises(ExceptionGroup) as info:
            await failing_group()
        assert info.group_contains(ValueError)
        ends.append(now())
        return ends

    ends, _ = run(main)
    assert ends == [3.0, 4.5]
    assert cancelled_at == [4.5]


# --- stall and livelock detection ---------------------------------------------------


def test_waiting_forever_raises_simulation_stalled() -> None:
    async def main() -> None:
        await asyncio.sleep(5.0)
        await asyncio.Event().wait()

    with pytest.raises(SimulationStalled, match=r"stalled at virtual t=5\.0+s") as info:
        run(main)
    assert isinstance(info.value, RuntimeError)
    assert "1 pending task(s)" in str(info.value)


def test_busy_loop_on_sleep_zero_raises_busy_loop_detected() -> None:
    async def spin() -> None:
        await asyncio.sleep(2.0)
        while True:  # noqa: ASYNC110 - spinning without waiting is the bug under test
            await asyncio.sleep(0)

    loops: list[SimEventLoop] = []

    def factory() -> SimEventLoop:
        loops.append(SimEventLoop(max_steps_per_instant=1000))
        return loops[-1]

    with (
        pytest.raises(BusyLoopDetected, match=r"1001 loop iterations at virtual t=2\.0+s"),
        asyncio.Runner(loop_factory=factory) as runner,
    ):
        runner.run(spin())
    assert issubclass(BusyLoopDetected, RuntimeError)
    assert loops[0].stats.max_steps_at_one_instant == 1001
    assert loops[0].is_closed()  # Runner.close() could still cancel the spinning task


def test_default_budget_allows_bursts_and_none_disables_the_check() -> None:
    async def burst(steps: int) -> float:
        for _ in range(steps):
            await asyncio.sleep(0)
        await asyncio.sleep(1.0)
        return now()

    assert run(lambda: burst(5000))[0] == 1.0
    virtual, loop = run(lambda: burst(150_000), max_steps_per_instant=None)
    assert virtual == 1.0
    assert loop.stats.max_steps_at_one_instant > 150_000


def test_invalid_step_budget_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_steps_per_instant"):
        SimEventLoop(max_steps_per_instant=0)


# --- real I/O still works -----------------------------------------------------------


def test_socketpair_reader_fires_when_peer_writes_at_a_virtual_instant() -> None:
    async def main() -> tuple[bytes, float, bytes]:
        loop = asyncio.get_running_loop()
        left, right = socket.socketpair()
        with left, right:
            left.setblocking(False)
            right.setblocking(False)
            got: asyncio.Future[tuple[bytes, float]] = loop.create_future()

            def on_readable() -> None:
                loop.remove_reader(left.fileno())
                got.set_result((left.recv(100), loop.time()))

            loop.add_reader(left.fileno(), on_readable)
            loop.call_later(5.0, right.send, b"ping")
            data, when = await got
            # The coroutine socket API rides on the same selector.
            await loop.sock_sendall(left, b"pong")
            reply = await loop.sock_recv(right, 100)
        return data, when, reply

    (data, when, reply), _ = run(main)
    assert (data, when, reply) == (b"ping", 5.0, b"pong")


def test_os_pipe_read_via_add_reader() -> None:
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        try:
            os.set_blocking(read_fd, False)
            got: asyncio.Future[bytes] = loop.create_future()

            def on_readable() -> None:
                loop.remove_reader(read_fd)
                got.set_result(os.read(read_fd, 100))

            loop.add_reader(read_fd, on_readable)
            os.write(write_fd, b"data")
            return await asyncio.wait_for(got, timeout=60.0)
        finally:
            os.close(read_fd)
            os.close(write_fd)

    data, _ = run(main)
    assert data == b"data"


def test_unix_stream_server_round_trip_under_virtual_time() -> None:
    async def main() -> bytes:
        left, right = socket.socketpair()

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server_reader, server_writer = await asyncio.open_connection(sock=left)
        client_reader, client_writer = await asyncio.open_connection(sock=right)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(echo(server_reader, server_writer))
            client_writer.write(b"hello\n")
            reply = await client_reader.readline()
        client_writer.close()
        await client_writer.wait_closed()
        return reply

    reply, _ = run(main)
    assert reply == b"HELLO\n"


def test_waiting_on_an_fd_nobody_writes_is_a_stall() -> None:
    # Real I/O is polled, not awaited: with no timers left, nothing in the simulation can
    # make the fd readable, so the loop reports a stall instead of hanging.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        left, right = socket.socketpair()
        with left, right:
            left.setblocking(False)
            await loop.sock_recv(left, 10)

    with pytest.raises(SimulationStalled):
        run(main)


# --- executors ----------------------------------------------------------------------


def test_to_thread_runs_inline_by_default_without_moving_time() -> None:
    def work(x: int) -> tuple[int, int]:
        return x * 2, threading.get_ident()

    def fail() -> None:
        raise KeyError("nope")

    async def main() -> tuple[int, int, float]:
        await asyncio.sleep(1.0)
        value, ident = await asyncio.to_thread(work, 21)
        with pytest.raises(KeyError):
            await asyncio.get_running_loop().run_in_executor(None, fail)
        return value, ident, now()

    (value, ident, virtual), _ = run(main)
    assert (value, ident, virtual) == (42, threading.get_ident(), 1.0)


def test_real_threads_freeze_virtual_time_until_they_finish() -> None:
    order: list[tuple[str, float]] = []

    def work() -> int:
        # Real work long enough that an unfrozen clock would jump to the 1.0 s timer first.
        return sum(range(3_000_000))

    async def timer() -> None:
        await asyncio.sleep(1.0)
        order.append(("timer", now()))

    async def threaded() -> None:
        result = await asyncio.to_thread(work)
        order.append((f"thread:{result}", now()))

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(timer())
            tg.create_task(threaded())

    run(main, inline_executor=False)
    assert order == [(f"thread:{sum(range(3_000_000))}", 0.0), ("timer", 1.0)]


# --- stats, repr, determinism -------------------------------------------------------


def test_stats_and_repr() -> None:
    async def main() -> None:
        await asyncio.sleep(1.0)
        await asyncio.sleep(2.0)

    _, loop = run(main)
    stats = loop.stats
    assert isinstance(stats, LoopStats)
    assert stats.advances == 2
    assert stats.iterations >= 4
    assert 1 <= stats.max_steps_at_one_instant < 10
    assert repr(loop).startswith("<SimEventLoop t=3.000000000s running=False closed=True")


def test_run_until_complete_without_runner() -> None:
    loop = SimEventLoop()
    try:
        loop.run_until_complete(asyncio.sleep(4.0))
        assert loop.time() == 4.0
    finally:
        loop.close()


def _recorded_timeline(seed: int) -> list[tuple[float, str]]:
    """Run a small racy program (sleeps, events, a semaphore, timeouts); return its trace."""
    trace: list[tuple[float, str]] = []

    async def actor(
        name: str, rng: random.Random, sem: asyncio.Semaphore, ev: asyncio.Event
    ) -> None:
        for step in range(20):
            await asyncio.sleep(rng.choice([0.0, 0.001, 0.5, rng.uniform(0, 3)]))
            async with sem:
                trace.append((now(), f"{name}:{step}"))
                if rng.random() < 0.1:
                    ev.set()
                    ev.clear()
            try:
                async with asyncio.timeout(rng.uniform(0.1, 2.0)):
                    await ev.wait()
                trace.append((now(), f"{name}:woken"))
            except TimeoutError:
                trace.append((now(), f"{name}:timeout"))

    async def main() -> None:
        rng = random.Random(seed)
        sem = asyncio.Semaphore(3)
        ev = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            for i in range(12):
                tg.create_task(actor(f"t{i}", random.Random(rng.random()), sem, ev))

    run(main)
    return trace


def test_same_program_twice_gives_the_same_timeline() -> None:
    first = _recorded_timeline(7)
    assert len(first) > 200
    assert first == _recorded_timeline(7)
    assert first != _recorded_timeline(8)


def test_timeline_is_identical_in_a_fresh_process_with_another_hash_seed() -> None:
    # Set iteration order can differ between processes (SIMULATION.md), so compare there.
    code = "from tests.sim.test_loop import _recorded_timeline; print(repr(_recorded_timeline(7)))"
    root = pathlib.Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == repr(_recorded_timeline(7))
