"""`Job`: registration, class options, the perform_* producer methods and current_worker()."""

from __future__ import annotations

import asyncio
import contextvars
import json
import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from reference.counters import SEGMENT_SIZE, BufferCounters
from reference.errors import InvalidOptionError, NotConfiguredError, OptionTypeError
from reference.job import Job, current_enqueuer, current_worker, install_enqueuer
from reference.observe import NULL_OBSERVER
from reference.offload import ThreadOffload
from reference.producer import Producer
from reference.registry import default_registry, job_name
from reference.runner import Runner
from reference.sqlite_store import SqliteStore
from sim.clock import SimClock
from sim.loop import SimEventLoop
from sim.offload import InlineOffload
from tests.unit.engine_jobs import JOURNAL, Journal, Noop, SyncNoop, run_virtual

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

EPOCH = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Mailer(Job):
    """A job with class-level options."""

    options = {"timeout": 120, "retry": 5, "retry_delay": 10, "backoff": "exponential"}

    async def perform(self, user_id: int, template: str) -> None:
        JOURNAL.note("start", f"{user_id}:{template}")


@pytest.fixture(autouse=True)
def journal() -> Iterator[Journal]:
    JOURNAL.reset()
    yield JOURNAL
    JOURNAL.reset()


@pytest.fixture
def configured(tmp_path: Path) -> Iterator[tuple[SqliteStore, SimClock]]:
    """A producer on a real SQLite file and a (stopped) virtual clock, installed in job.py."""
    loop = SimEventLoop()
    store = SqliteStore(tmp_path / "q.db")
    clock = SimClock(loop, EPOCH)
    install_enqueuer(Producer(store, clock=clock, waker=None))
    try:
        yield store, clock
    finally:
        install_enqueuer(None)
        store.close()
        loop.close()


def test_subclass_registers_by_dotted_name() -> None:
    assert job_name(Mailer) == "tests.unit.test_job.Mailer"
    assert default_registry.resolve("tests.unit.test_job.Mailer") is Mailer
    assert default_registry.resolve("tests.unit.engine_jobs.Noop") is Noop


def test_nested_class_registers_under_its_qualname() -> None:
    class Inner(Job):
        async def perform(self) -> None:
            return None

    assert default_registry.resolve(job_name(Inner)) is Inner
    assert "<locals>.Inner" in job_name(Inner)


def test_class_options_are_validated_at_definition() -> None:
    with pytest.raises(InvalidOptionError, match="'priority'"):

        class Unknown(Job):
            options = {"priority": 3}

    with pytest.raises(OptionTypeError, match="'retry'"):

        class WrongType(Job):
            options = {"retry": "5"}

    with pytest.raises(InvalidOptionError, match="'backoff'"):

        class OutOfRange(Job):
            options = {"backoff": "random"}

    # A class rejected at definition is not registered.
    assert not any(name.endswith("Unknown") for name in default_registry.names())


def test_base_perform_is_abstract() -> None:
    class Lazy(Job):
        pass

    with pytest.raises(NotImplementedError, match="Lazy"):
        Lazy().perform()


@pytest.mark.parametrize(
    "call",
    [
        lambda: Noop.perform_async("x"),
        lambda: Noop.perform_in(5, "x"),
        lambda: Noop.perform_at(1_900_000_000, "x"),
        lambda: Noop.perform_at(datetime(2030, 1, 1), "x"),
    ],
)
def test_enqueue_before_configure_is_a_clear_error(call: object) -> None:
    install_enqueuer(None)
    assert callable(call)
    with pytest.raises(NotConfiguredError, match=r"reference\.queue\.configure") as info:
        call()
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(NotConfiguredError):
        current_enqueuer()


def test_perform_async_stores_name_args_and_merged_options(
    configured: tuple[SqliteStore, SimClock],
) -> None:
    store, clock = configured
    job_id = Mailer.perform_async(42, "welcome", options={"timeout": 30, "retry": None})
    assert isinstance(job_id, int)
    row = store.get(job_id)
    assert row is not None
    assert row.name == "tests.unit.test_job.Mailer"
    assert json.loads(row.args) == [42, "welcome"]
    opts = json.loads(row.options)
    assert opts["timeout"] == 30.0  # the call site wins
    assert opts["retry"] == 5  # None keeps the class value
    assert opts["backoff"] == "exponential"
    assert row.run_at == clock.realtime() == row.created_at
    second = Mailer.perform_async(43, "welcome")
    assert second > job_id


def test_perform_in_adds_the_delay(configured: tuple[SqliteStore, SimClock]) -> None:
    store, clock = configured
    row = store.get(Noop.perform_in(300, "later"))
    assert row is not None
    assert row.run_at == pytest.approx(clock.realtime() + 300)
    row = store.get(Noop.perform_in(0.25, "soon"))
    assert row is not None
    assert row.run_at == pytest.approx(clock.realtime() + 0.25)


def test_perform_at_epoch_and_datetimes(configured: tuple[SqliteStore, SimClock]) -> None:
    store, _ = configured
    at_epoch = store.get(Noop.perform_at(1_900_000_000, "epoch"))
    assert at_epoch is not None
    assert at_epoch.run_at == 1_900_000_000.0

    aware = datetime(2026, 4, 1, 9, tzinfo=UTC)
    row = store.get(Noop.perform_at(aware, "aware"))
    assert row is not None
    assert row.run_at == aware.timestamp()

    naive = datetime(2026, 4, 1, 9)  # naive = local time
    row = store.get(Noop.perform_at(naive, "naive"))
    assert row is not None
    assert row.run_at == naive.astimezone().timestamp()

    other_zone = aware.astimezone(tz=None) + timedelta(0)
    row = store.get(Noop.perform_at(other_zone, "same instant"))
    assert row is not None
    assert row.run_at == aware.timestamp()


@pytest.mark.parametrize("delay", ["5", True, None, [5]])
def test_perform_in_rejects_non_numbers(
    configured: tuple[SqliteStore, SimClock], delay: object
) -> None:
    store, _ = configured
    with pytest.raises(TypeError, match="delay"):
        Noop.perform_in(delay, "x")  # type: ignore[arg-type]
    assert store.stats().total == 0


@pytest.mark.parametrize("when", ["2026-04-01T09:00:00", True, None, b"1"])
def test_perform_at_rejects_other_types(
    configured: tuple[SqliteStore, SimClock], when: object
) -> None:
    store, _ = configured
    with pytest.raises(TypeError, match="datetime or epoch"):
        Noop.perform_at(when, "x")  # type: ignore[arg-type]
    assert store.stats().total == 0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_times_are_value_errors(
    configured: tuple[SqliteStore, SimClock], bad: float
) -> None:
    store, _ = configured
    with pytest.raises(ValueError, match="finite"):
        Noop.perform_in(bad, "x")
    with pytest.raises(ValueError, match="finite"):
        Noop.perform_at(bad, "x")
    assert store.stats().total == 0


def test_perform_now_sync_runs_inline() -> None:
    assert SyncNoop.perform_now("inline") is None
    assert [n.tag for n in JOURNAL.of("start")] == ["inline"]


def test_perform_now_async_returns_an_awaitable() -> None:
    result = Noop.perform_now("awaited")
    assert JOURNAL.notes == []  # nothing ran yet
    assert asyncio.iscoroutine(result)

    async def main() -> None:
        await result

    asyncio.run(main())
    assert [n.tag for n in JOURNAL.of("end")] == ["awaited"]


def test_current_worker_is_none_outside_a_worker() -> None:
    assert contextvars.Context().run(current_worker) is None
    assert current_worker() is None


def _runner(offload: InlineOffload | ThreadOffload, clock: SimClock | None, worker: int) -> Runner:
    from reference.clock import SystemClock

    return Runner(
        clock=clock if clock is not None else SystemClock(),
        offload=offload,
        counters=BufferCounters(bytearray(SEGMENT_SIZE), 0, worker),
        observer=NULL_OBSERVER,
        worker=worker,
    )


def test_current_worker_inside_an_async_run() -> None:
    async def main() -> None:
        clock = SimClock(asyncio.get_running_loop(), EPOCH)
        runner = _runner(InlineOffload(), clock, 7)
        # A task of its own, as the scheduler and consumer run every job.
        task = asyncio.create_task(runner.run(Noop, ["a"], time_limit=5, label="a"))
        await task
        assert current_worker() is None  # the caller's context is untouched

    run_virtual(main)
    assert [n.worker for n in JOURNAL.of("start")] == [7]


def test_current_worker_inside_a_sync_run_in_a_thread() -> None:
    offload = ThreadOffload()

    async def main() -> None:
        runner = _runner(offload, None, 4)
        result = await asyncio.create_task(runner.run(SyncNoop, ["t"], time_limit=10, label="t"))
        assert result.error is None

    with asyncio.Runner() as runner:
        runner.run(main())
    notes = JOURNAL.of("start")
    assert [(n.worker, n.at) for n in notes] == [(4, None)]  # None: it ran off the loop thread
    assert "started=1" in repr(offload)
