"""`Producer` and `encode_args`: JSON-only payloads, options first, then store, then one wake-up."""

from __future__ import annotations

import asyncio
import json
import math
import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from reference.errors import InvalidOptionError, OptionTypeError, PayloadError
from reference.job import Job
from reference.payload import MAX_ARGS_BYTES, MAX_ARGS_DEPTH, MAX_INT_BITS, encode_args
from reference.producer import Producer
from reference.records import JobStatus
from reference.sqlite_store import SqliteStore
from reference.transport import SendResult
from reference.waker import Waker, socket_address
from sim.clock import SimClock
from sim.fabric import Fabric
from sim.loop import SimEventLoop
from tests.unit.engine_jobs import Flaky, Noop, Sleepy

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
DIR = "/sim/sockets"


class World:
    """A stopped virtual loop, its clock, a real SQLite file and a fabric of live workers."""

    def __init__(self, tmp_path: Path, workers: int = 3) -> None:
        self.loop = SimEventLoop()
        self.clock = SimClock(self.loop, EPOCH)
        self.store = SqliteStore(tmp_path / "q.db")
        self.fabric = Fabric()
        self.addresses = {i: socket_address(DIR, i) for i in range(1, workers + 1)}
        self.waker = Waker(self.fabric, self.addresses, random.Random(3))
        self.producer = Producer(self.store, clock=self.clock, waker=self.waker)

    def listen_all(self) -> None:
        for address in self.addresses.values():
            self.fabric.listen_now(address)

    def advance(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def close(self) -> None:
        self.store.close()
        self.loop.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.close()


# -- encode_args ---------------------------------------------------------------------------


def test_encode_args_accepts_plain_json() -> None:
    args = [1, 2.5, "s", True, None, [1, [2]], {"a": {"b": [None]}}]
    assert json.loads(encode_args(args)) == args
    assert encode_args(()) == "[]"
    assert encode_args((1, "x")) == '[1,"x"]'  # the outer sequence may be a tuple


@pytest.mark.parametrize(
    ("args", "position", "type_name"),
    [
        ((1, (2, 3)), 1, "tuple"),
        (("a", {1, 2}), 1, "set"),
        (({1: "x"},), 0, "dict"),
        (("ok", {"k": {2: 3}}), 1, "dict"),
        ((math.nan,), 0, "float"),
        ((1, math.inf), 1, "float"),
        (([1, math.nan],), 0, "list"),
        ((object(),), 0, "object"),
        ((b"bytes",), 0, "bytes"),
        ((1, 2, datetime(2026, 1, 1)), 2, "datetime"),
    ],
)
def test_encode_args_rejects_non_json_naming_the_position(
    args: tuple[object, ...], position: int, type_name: str
) -> None:
    with pytest.raises(PayloadError, match=rf"argument {position} \({type_name}\)") as info:
        encode_args(args)
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    "args",
    [(1, (2, 3)), ({1: "x"},), (math.nan,), (object(),), ({"a", "b"},)],
)
def test_non_json_enqueue_stores_nothing_and_wakes_nobody(
    world: World, args: tuple[object, ...]
) -> None:
    world.listen_all()
    with pytest.raises(PayloadError):
        world.producer.enqueue(Noop, args, options=None)
    assert world.store.stats().total == 0
    assert world.fabric.sends == []


# -- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"nope": 1}, InvalidOptionError),
        ({"retry": "2"}, OptionTypeError),
        ({"timeout": True}, OptionTypeError),
        ({"timeout": -1}, InvalidOptionError),
    ],
)
def test_options_are_validated_before_storing(
    world: World, options: dict[str, object], error: type[Exception]
) -> None:
    world.listen_all()
    with pytest.raises(error):
        world.producer.enqueue(Noop, ("x",), options=options)
    assert world.store.stats().total == 0
    assert world.fabric.sends == []


def test_call_site_options_are_stored_merged(world: World) -> None:
    job_id = world.producer.enqueue(Flaky, ("t", 1), options={"retry": 4, "jitter": None})
    row = world.store.get(job_id)
    assert row is not None
    stored = json.loads(row.options)
    assert stored["retry"] == 4
    assert stored["jitter"] is None
    assert stored["timeout"] == 30.0


# -- ids and times -------------------------------------------------------------------------


def test_enqueue_returns_increasing_ids_of_pending_rows(world: World) -> None:
    ids = [world.producer.enqueue(Noop, (str(i),), options=None) for i in range(5)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    rows = world.store.list_jobs(JobStatus.PENDING)
    assert sorted(r.id for r in rows) == ids
    assert {r.name for r in rows} == {"tests.unit.engine_jobs.Noop"}


def test_delay_and_run_at_arithmetic_on_the_virtual_clock(world: World) -> None:
    world.advance(100.0)
    now = EPOCH.timestamp() + 100.0
    assert world.clock.realtime() == now
    store, producer = world.store, world.producer

    due_now = store.get(producer.enqueue(Noop, (), options=None))
    delayed = store.get(producer.enqueue(Noop, (), options=None, delay=1.5))
    at = store.get(producer.enqueue(Noop, (), options=None, run_at=now + 3600))
    negative = store.get(producer.enqueue(Noop, (), options=None, delay=-10))
    assert due_now is not None
    assert delayed is not None
    assert at is not None
    assert negative is not None
    assert (due_now.run_at, due_now.created_at) == (now, now)
    assert delayed.run_at == pytest.approx(now + 1.5)
    assert at.run_at == now + 3600
    assert at.created_at == now
    assert negative.run_at == pytest.approx(now - 10)  # overdue: runs at once

    world.advance(50.0)
    later = store.get(producer.enqueue(Noop, (), options=None, delay=10))
    assert later is not None
    assert later.run_at == pytest.approx(now + 60.0)


def test_enqueue_many_shares_one_run_at_and_one_transaction(world: World) -> None:
    now = world.clock.realtime()
    ids = world.producer.enqueue_many(
        [(Noop, ["a"], None), (Sleepy, ["b", 1], {"timeout": 5}), (Noop, [], None)],
        run_at=now + 30,
    )
    assert len(ids) == 3
    rows = [world.store.get(i) for i in ids]
    assert all(r is not None and r.run_at == now + 30 for r in rows)
    assert rows[1] is not None
    assert json.loads(rows[1].options)["timeout"] == 5.0


def test_enqueue_many_with_one_bad_call_stores_none(world: World) -> None:
    world.listen_all()
    with pytest.raises(PayloadError, match="argument 0"):
        world.producer.enqueue_many([(Noop, ["fine"], None), (Noop, [{1, 2}], None)])
    with pytest.raises(InvalidOptionError):
        world.producer.enqueue_many([(Noop, ["fine"], None), (Noop, [], {"bad": 1})])
    assert world.store.stats().total == 0
    assert world.fabric.sends == []


# -- wake-ups ------------------------------------------------------------------------------


def test_exactly_one_wake_up_per_enqueue(world: World) -> None:
    world.listen_all()
    for i in range(6):
        world.producer.enqueue(Noop, (i,), options=None)
        assert len(world.fabric.sends) == i + 1
    assert all(s.result is SendResult.DELIVERED for s in world.fabric.sends)
    # A delayed job still wakes one worker, so it can re-read the earliest run_at.
    world.producer.enqueue(Noop, (), options=None, delay=60)
    assert len(world.fabric.sends) == 7


def test_exactly_one_wake_up_per_bulk_enqueue(world: World) -> None:
    world.listen_all()
    world.producer.enqueue_many([(Noop, [i], None) for i in range(50)])
    assert len(world.fabric.sends) == 1
    assert world.store.stats().pending == 50
    assert world.producer.enqueue_many([]) == []
    assert len(world.fabric.sends) == 1  # nothing stored, nobody woken


def test_wake_up_reaches_the_ring_past_unavailable_workers(world: World) -> None:
    world.fabric.listen_now(world.addresses[2])  # 1 and 3 have no socket file
    for _ in range(5):
        world.producer.enqueue(Noop, (), options=None)
    delivered = [s for s in world.fabric.sends if s.result is SendResult.DELIVERED]
    assert len(delivered) == 5
    assert {s.address for s in delivered} == {world.addresses[2]}


def test_all_addresses_missing_never_raises(world: World) -> None:
    job_id = world.producer.enqueue(Noop, (), options=None)
    assert world.store.get(job_id) is not None
    # One attempt per worker, every one MISSING, and the enqueue still succeeded.
    assert [s.result for s in world.fabric.sends] == [SendResult.MISSING] * 3
    ids = world.producer.enqueue_many([(Noop, [], None), (Noop, [], None)])
    assert len(ids) == 2
    assert world.store.stats().pending == 3


def test_stale_and_faulty_transports_never_raise(tmp_path: Path) -> None:
    loop = SimEventLoop()
    store = SqliteStore(tmp_path / "q.db")
    try:
        fabric = Fabric(random.Random(1), fault_rate=1.0)
        addresses = {1: socket_address(DIR, 1), 2: socket_address(DIR, 2)}
        fabric.listen_now(addresses[1])
        fabric.plant_stale(addresses[2])
        producer = Producer(
            store, clock=SimClock(loop, EPOCH), waker=Waker(fabric, addresses, random.Random(2))
        )
        for _ in range(20):
            producer.enqueue(Noop, (), options=None)
        assert store.stats().pending == 20
        assert fabric.sends  # it tried, and every failure stayed inside the waker
    finally:
        store.close()
        loop.close()


def test_no_waker_means_no_wake_up(world: World) -> None:
    world.listen_all()
    producer = Producer(world.store, clock=world.clock, waker=None)
    producer.enqueue(Noop, (), options=None)
    producer.wake()
    assert world.fabric.sends == []
    assert world.store.stats().pending == 1
    assert "Producer(" in repr(producer)


def _nested(levels: int) -> list[object]:
    """A list nested `levels` deep ([[...]] has 2)."""
    value: list[object] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_payload_depth_limit_matches_what_a_worker_decodes() -> None:
    """The argument list is level 1; the deepest accepted value decodes again (a worker's
    json.loads of ~1,000 levels raised RecursionError and crash-looped it)."""
    accepted = encode_args([_nested(MAX_ARGS_DEPTH - 1)])
    assert json.loads(accepted) == [_nested(MAX_ARGS_DEPTH - 1)]
    for levels in (MAX_ARGS_DEPTH, 985, 50_000):
        with pytest.raises(PayloadError, match=f"nested more than {MAX_ARGS_DEPTH} levels"):
            encode_args([_nested(levels)])
    with pytest.raises(PayloadError, match="nested more than"):
        encode_args([{"a": _nested(MAX_ARGS_DEPTH)}])


def test_payload_size_and_int_limits() -> None:
    with pytest.raises(PayloadError, match="the limit is 1,048,576"):
        encode_args(["x" * MAX_ARGS_BYTES])
    assert json.loads(encode_args([2**MAX_INT_BITS - 1])) == [2**MAX_INT_BITS - 1]
    with pytest.raises(PayloadError, match="an int of more than"):
        encode_args([10**5000])  # str() of it raises ValueError (4,300-digit limit)
    with pytest.raises(PayloadError, match="dict key <huge int> is not a str"):
        encode_args([{10**400: 1}])


class _Arity(Job):
    async def perform(self, a: int, b: int, c: int = 0) -> None: ...


class _Star(Job):
    def perform(self, a: int, *rest: int) -> None: ...


class _KeywordOnly(Job):
    async def perform(self, a: int, *, must: int) -> None: ...


@pytest.mark.parametrize(
    ("cls", "args", "message"),
    [
        (_Arity, (1,), r"takes 2 to 3 argument\(s\), 1 given"),
        (_Arity, (1, 2, 3, 4), r"takes 2 to 3 argument\(s\), 4 given"),
        (_Star, (), r"takes at least 1 argument\(s\), 0 given"),
        (_KeywordOnly, (1,), "required keyword-only argument"),
    ],
)
def test_wrong_arity_raises_type_error_and_stores_nothing(
    world: World, cls: type[Job], args: tuple[object, ...], message: str
) -> None:
    """A 2-argument perform enqueued with 3 stored a job that failed later, every retry."""
    world.listen_all()
    with pytest.raises(TypeError, match=message):
        world.producer.enqueue(cls, args, options=None)
    assert world.store.stats().total == 0
    assert world.fabric.sends == []


def test_right_arity_is_accepted_including_defaults_and_star_args(world: World) -> None:
    for cls, args in ((_Arity, (1, 2)), (_Arity, (1, 2, 3)), (_Star, (1, 2, 3, 4, 5))):
        world.producer.enqueue(cls, args, options=None)
    assert world.store.stats().total == 3
