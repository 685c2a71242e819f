"""`Waker` and `Doorbell` over the in-memory `Fabric`: ring fallback, hop budget, coalescing."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from reference.records import LogEvent
from reference.transport import SendResult
from reference.waker import Doorbell, Waker, WakeReport, decode_hops, encode_hops, socket_address
from sim.clock import SimClock
from sim.fabric import Fabric
from sim.loop import SimEventLoop

if TYPE_CHECKING:
    from collections.abc import Coroutine

    import pytest

T = TypeVar("T")
DIR = "/run/bg"


def run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner() as runner:
        return runner.run(coro)


def addresses(n: int) -> dict[int, str]:
    return {i: socket_address(DIR, i) for i in range(n)}


def live_fabric(n: int, *, dead: dict[int, str] | None = None) -> Fabric:
    """A fabric with workers 0..n-1 live, except those in `dead` (index -> how it died)."""
    fabric = Fabric()
    dead = dead or {}
    for i, address in addresses(n).items():
        how = dead.get(i)
        if how == "missing":
            continue
        if how == "stale":
            fabric.plant_stale(address)
            continue
        fabric.listen_now(address)
        if how == "reset":
            fabric.set_reset(address, True)
    return fabric


def first_choice(seed: int, n: int) -> int:
    # The waker draws exactly one randrange(n) per wake_one.
    return random.Random(seed).randrange(n)


def test_socket_address() -> None:
    assert socket_address("/tmp/s", 3) == "/tmp/s/worker-3.sock"
    assert socket_address("/tmp/s/", 0) == "/tmp/s/worker-0.sock"


def test_hops_encoding_round_trips_and_clamps() -> None:
    assert decode_hops(encode_hops(0)) == 0
    assert decode_hops(encode_hops(7)) == 7
    assert encode_hops(-1) == b"\x00"
    assert encode_hops(1000) == b"\xff"
    assert decode_hops(b"") == 0


def test_one_attempt_when_first_choice_is_live() -> None:
    fabric = live_fabric(4)
    report = Waker(fabric, addresses(4), random.Random(7)).wake_one()
    start = first_choice(7, 4)
    assert report == WakeReport(((start, SendResult.DELIVERED),), start)
    assert len(fabric.sends) == 1
    # The producer grants N-1 hand-offs.
    assert fabric.sends[0].payload == b"\x03"


def test_random_start_spreads_over_workers() -> None:
    fabric = live_fabric(4)
    waker = Waker(fabric, addresses(4), random.Random(1))
    woken = [waker.wake_one().woken for _ in range(40)]
    assert set(woken) == {0, 1, 2, 3}


def test_ring_fallback_order_from_seeded_start() -> None:
    n = 5
    seed = next(s for s in range(100) if first_choice(s, n) == 3)
    # 3 and 4 unavailable in different ways, 0 missing: the first live one after 3 is 1.
    fabric = live_fabric(n, dead={3: "stale", 4: "reset", 0: "missing"})
    report = Waker(fabric, addresses(n), random.Random(seed)).wake_one()
    assert report.attempts == (
        (3, SendResult.REFUSED),
        (4, SendResult.RESET),
        (0, SendResult.MISSING),
        (1, SendResult.DELIVERED),
    )
    assert report.woken == 1


def test_ring_order_is_sorted_index_not_mapping_order() -> None:
    shuffled = dict(reversed(list(addresses(3).items())))
    waker = Waker(live_fabric(3), shuffled, random.Random(0))
    assert waker.indices == (0, 1, 2)


def test_all_unavailable_reports_none_after_n_attempts(caplog: pytest.LogCaptureFixture) -> None:
    n = 4
    fabric = live_fabric(n, dead={0: "missing", 1: "stale", 2: "reset", 3: "missing"})
    with caplog.at_level(logging.WARNING, logger="reference.waker"):
        report = Waker(fabric, addresses(n), random.Random(3)).wake_one()
    assert report.woken is None
    assert len(report.attempts) == n
    assert sorted(i for i, _ in report.attempts) == [0, 1, 2, 3]
    assert [getattr(r, "event", None) for r in caplog.records] == [LogEvent.WAKE_UNAVAILABLE]


def test_no_workers_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="reference.waker"):
        report = Waker(Fabric(), {}, random.Random(0)).wake_one()
    assert report == WakeReport((), None)
    assert len(caplog.records) == 1


def test_pending_counts_as_woken() -> None:
    n = 3
    fabric = live_fabric(n)
    seed = 11
    start = first_choice(seed, n)
    target = socket_address(DIR, start)
    while fabric.try_send(target, b"\x00") is SendResult.DELIVERED:
        pass
    before = len(fabric.sends)
    report = Waker(fabric, addresses(n), random.Random(seed)).wake_one()
    assert report == WakeReport(((start, SendResult.PENDING),), start)
    assert len(fabric.sends) == before + 1


def test_injected_error_falls_back() -> None:
    fabric = Fabric(random.Random(5), fault_rate=1.0)
    for address in addresses(3).values():
        fabric.listen_now(address)
    report = Waker(fabric, addresses(3), random.Random(0)).wake_one()
    # Every send hits a seeded fault; drops look DELIVERED, the rest fall back.
    assert 1 <= len(report.attempts) <= 3
    assert all(r in {SendResult.RESET, SendResult.ERROR} for _, r in report.attempts[:-1])


def test_pass_on_skips_the_sender_and_spends_a_hop() -> None:
    fabric = live_fabric(4)
    waker = Waker(fabric, addresses(4), random.Random(0))
    report = waker.pass_on(2, hops_left=3)
    assert report == WakeReport(((3, SendResult.DELIVERED),), 3)
    assert fabric.sends[-1].payload == b"\x02"
    # Wraps around the ring after the highest index.
    report = waker.pass_on(3, hops_left=1)
    assert report.woken == 0
    assert fabric.sends[-1].payload == b"\x00"


def test_pass_on_falls_back_but_never_to_the_sender() -> None:
    fabric = live_fabric(4, dead={2: "stale", 3: "missing", 0: "reset"})
    report = Waker(fabric, addresses(4), random.Random(0)).pass_on(1, hops_left=3)
    assert report.attempts == (
        (2, SendResult.REFUSED),
        (3, SendResult.MISSING),
        (0, SendResult.RESET),
    )
    assert report.woken is None
    assert all(r.address != socket_address(DIR, 1) for r in fabric.sends)


def test_pass_on_with_no_budget_or_no_peers_sends_nothing() -> None:
    fabric = live_fabric(3)
    waker = Waker(fabric, addresses(3), random.Random(0))
    assert waker.pass_on(0, hops_left=0) == WakeReport((), None)
    solo = Waker(fabric, {0: socket_address(DIR, 0)}, random.Random(0))
    assert solo.pass_on(0, hops_left=5) == WakeReport((), None)
    assert fabric.sends == []


def test_hand_off_chain_of_busy_workers_is_bounded() -> None:
    # Every worker is busy: each woken one passes on with the budget it received.
    n = 5
    fabric = live_fabric(n)
    waker = Waker(fabric, addresses(n), random.Random(2))
    report = waker.wake_one()
    assert report.woken is not None
    visited = [report.woken]
    hops = decode_hops(fabric.sends[-1].payload)
    while report.woken is not None and hops > 0:
        report = waker.pass_on(report.woken, hops)
        if report.woken is not None:
            visited.append(report.woken)
            hops = decode_hops(fabric.sends[-1].payload)
    assert len(visited) == n
    assert sorted(visited) == list(range(n))  # each worker exactly once


def test_doorbell_rung_and_timeout() -> None:
    async def body() -> None:
        fabric = Fabric()
        bell = await Doorbell.open(fabric, socket_address(DIR, 0))
        try:
            assert await bell.wait_rung(0.01) is False
            assert (bell.hops_left, bell.rings) == (0, 0)
            fabric.try_send(bell.address, encode_hops(2))
            assert await bell.wait_rung(0.01) is True
            assert (bell.hops_left, bell.rings) == (2, 1)
            assert await bell.wait_rung(0) is False
            assert bell.hops_left == 0
        finally:
            bell.close()
        assert fabric.try_send(bell.address, b"\x00") is SendResult.MISSING

    run(body())


def test_doorbell_wakes_a_waiting_consumer() -> None:
    async def body() -> None:
        fabric = Fabric()
        bell = await Doorbell.open(fabric, socket_address(DIR, 0))
        waiting = asyncio.create_task(bell.wait_rung(30.0))
        await asyncio.sleep(0)
        assert not waiting.done()
        Waker(fabric, {0: bell.address}, random.Random(0)).wake_one()
        assert await asyncio.wait_for(waiting, 5.0) is True
        bell.close()

    run(body())


def test_doorbell_coalesces_and_keeps_the_largest_budget() -> None:
    async def body() -> None:
        fabric = Fabric()
        bell = await Doorbell.open(fabric, socket_address(DIR, 0))
        for hops in (1, 4, 0, 2):
            fabric.try_send(bell.address, encode_hops(hops))
        assert await bell.wait_rung(1.0) is True
        assert (bell.hops_left, bell.rings) == (4, 4)
        assert await bell.wait_rung(0) is False
        bell.close()

    run(body())


def test_reprs_are_informative() -> None:
    fabric = live_fabric(2)
    waker = Waker(fabric, addresses(2), random.Random(0))
    assert "workers=[0, 1]" in repr(waker)
    assert "live=2" in repr(fabric)
    bell = Doorbell(fabric.listen_now(socket_address(DIR, 9)))
    assert "worker-9.sock" in repr(bell)
    bell.close()
    assert "closed" in repr(bell)


def test_no_worker_could_be_woken_is_warned_once_per_poll_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """5,000 enqueues with no worker listening printed 5,000 warnings; now one per poll
    interval, saying how many wake-ups it covers."""
    loop = SimEventLoop()
    try:
        clock = SimClock(loop, datetime(2026, 1, 1, tzinfo=UTC))
        waker = Waker(Fabric(), addresses(3), random.Random(0), clock=clock, warn_every=5.0)
        with caplog.at_level(logging.WARNING, logger="reference.waker"):
            for _ in range(1000):
                assert waker.wake_one().woken is None
            loop.run_until_complete(asyncio.sleep(5.0))
            for _ in range(10):
                waker.wake_one()
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records if "could be woken" in r.getMessage()]
    assert len(lines) == 2
    assert "1 wake-up(s) since the last warning" in lines[0]
    assert "1000 wake-up(s) since the last warning" in lines[1]  # 999 silent + this one
