"""The queue consumer through the real `Worker`: virtual time, a real SQLite file, the Fabric.

Each test runs one or two `Worker`s wired with `QueueWiring` on a `SimEventLoop`, enqueues
through a real `Producer`, and reads outcomes from the database and from the jobs' journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

import pytest

from reference.consumer import STORE_GIVE_UP
from reference.counters import SEGMENT_SIZE, BufferCounters
from reference.errors import StoreError, StoreUnusableError
from reference.liveness import never_gone
from reference.options import JobOptions
from reference.producer import Producer
from reference.records import JobRow, JobStatus, LogEvent, NewJob, WorkerRow
from reference.registry import default_registry
from reference.runtime import QueueWiring, Runtime, Worker
from reference.schedule import ScheduleEntry
from reference.sqlite_store import SqliteStore
from reference.waker import Waker, socket_address
from sim.clock import SimClock
from sim.fabric import Fabric, PathState
from sim.offload import InlineOffload
from sim.trace import HostObserver, Trace
from tests.unit.engine_jobs import (
    JOURNAL,
    Boom,
    Flaky,
    Journal,
    Noop,
    Sleepy,
    SyncNoop,
    run_virtual,
    timed_job,
    wait_until,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path
    from types import TracebackType

    from reference.job import Job
    from sim.loop import SimEventLoop

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
DIR = "/sim/sockets"


@pytest.fixture(autouse=True)
def journal() -> Iterator[Journal]:
    JOURNAL.reset()
    yield JOURNAL
    JOURNAL.reset()


class Rig:
    """Workers sharing one SQLite file and one Fabric, plus a producer connection."""

    def __init__(
        self,
        db: Path,
        *,
        indexes: Sequence[int] = (1,),
        concurrency: int = 2,
        lease: float = 60.0,
        poll: float = 5.0,
        producer_rng: random.Random | None = None,
        entries: Sequence[ScheduleEntry] = (),
        gone: Callable[[WorkerRow], bool] = never_gone,
    ) -> None:
        loop = asyncio.get_running_loop()
        assert hasattr(loop, "now_ns")
        self.loop: SimEventLoop = loop  # type: ignore[assignment]
        self.clock = SimClock(loop, EPOCH)
        self.fabric = Fabric()
        self.trace = Trace(lambda: self.loop.now_ns)
        self.addresses = {i: socket_address(DIR, i) for i in indexes}
        self.store = SqliteStore(db)  # the producer's and the test's own connection
        self._stores: list[SqliteStore] = [self.store]
        self.workers: dict[int, Worker] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.counters: dict[int, BufferCounters] = {}
        for i in indexes:
            store = SqliteStore(db)
            self._stores.append(store)
            self.counters[i] = BufferCounters(bytearray(SEGMENT_SIZE), 0, i)
            runtime = Runtime(
                clock=self.clock,
                rng=random.Random(1000 + i),
                registry=default_registry,
                offload=InlineOffload(),
                counters=self.counters[i],
                observer=HostObserver(self.trace, i),
            )
            wiring = QueueWiring(
                store=store,
                transport=self.fabric,
                address=self.addresses[i],
                peers=dict(self.addresses),
                poll_interval=poll,
                lease=lease,
                gone=gone,
            )
            self.workers[i] = Worker(
                runtime, index=i, entries=entries, concurrency=concurrency, queue=wiring
            )
        waker = Waker(self.fabric, self.addresses, producer_rng or random.Random(0))
        self.producer = Producer(self.store, clock=self.clock, waker=waker)

    @property
    def now(self) -> float:
        return self.loop.time()

    async def start(self, *indexes: int) -> None:
        """Start workers (all by default) and wait until each listens for wake-ups."""
        for i in indexes or tuple(self.workers):
            self.tasks[i] = asyncio.create_task(self.workers[i].run(), name=f"worker{i}")
        for i in indexes or tuple(self.workers):
            await wait_until(lambda i=i: self.fabric.state(self.addresses[i]) is PathState.LIVE, 1)

    async def stop(self, *indexes: int) -> float:
        """Stop workers gracefully; return the loop time when the last `run()` returned."""
        chosen = indexes or tuple(self.tasks)
        for i in chosen:
            self.workers[i].stop()
        for i in chosen:
            await self.tasks[i]
        return self.now

    def enqueue(self, cls: type[Job], *args: object, **kw: Any) -> int:
        options = kw.pop("options", None)
        return self.producer.enqueue(cls, args, options=options, **kw)

    def row(self, job_id: int) -> JobRow:
        row = self.store.get(job_id)
        assert row is not None
        return row

    def running_of(self, worker: int) -> int:
        owner = f"worker-{worker}"  # the wiring gives no owner id: the consumer's default
        return sum(1 for r in self.store.list_jobs(JobStatus.RUNNING) if r.locked_by == owner)

    def events(self, event: LogEvent) -> list[tuple[float, int, dict[str, Any]]]:
        return [(r.ns / 1e9, r.host, r.fields) for r in self.trace.of(event.value)]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            for task in self.tasks.values():
                if not task.done():
                    task.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        finally:
            for store in self._stores:
                store.close()


def _picks(seed: int, n: int) -> list[int]:
    """The ring positions a producer `Waker` seeded with `seed` picks first (one draw each)."""
    rng = random.Random(seed)
    return [rng.randrange(2) for _ in range(n)]


def starts(tag: str) -> list[float]:
    return [t for t in JOURNAL.times("start", tag) if t is not None]


# -- timing of pick-up -----------------------------------------------------------------------


def test_delayed_job_starts_at_its_run_at_not_at_the_poll(tmp_path: Path) -> None:
    async def main() -> JobRow:
        async with Rig(tmp_path / "q.db") as rig:
            await rig.start()
            await asyncio.sleep(2.0 - rig.now)
            job_id = rig.enqueue(Noop, "delayed", delay=1.0)  # perform_in(1, ...)
            await wait_until(lambda: rig.row(job_id).status is JobStatus.DONE, 30)
            await rig.stop()
            return rig.row(job_id)

    row = run_virtual(main)
    assert starts("delayed") == [pytest.approx(3.0, abs=1e-3)]  # not the 5 s poll
    assert row.attempts == 1


def test_delayed_job_behind_a_longer_one_wakes_on_the_earlier(tmp_path: Path) -> None:
    async def main() -> None:
        async with Rig(tmp_path / "q.db") as rig:
            await rig.start()
            rig.enqueue(Noop, "late", delay=4.0)
            rig.enqueue(Noop, "early", delay=0.5)
            await wait_until(lambda: len(JOURNAL.of("end")) == 2, 30)
            await rig.stop()

    run_virtual(main)
    t0 = 0.01  # the rig starts enqueueing once the doorbell listens
    assert starts("early") == [pytest.approx(t0 + 0.5, abs=0.02)]
    assert starts("late") == [pytest.approx(t0 + 4.0, abs=0.02)]


def test_a_wake_up_that_claims_still_wakes_the_worker_for_a_later_run_at(
    tmp_path: Path,
) -> None:
    # One wake-up step carries both enqueues: the doorbell claims "now" at once, and must
    # still make the serve loop re-read the next run_at, or "later" waits for the 5 s poll
    # ("now" runs past both, so its completion wakes nobody in time).
    async def main() -> None:
        async with Rig(tmp_path / "q.db") as rig:
            await rig.start()
            await asyncio.sleep(1.0 - rig.now)
            rig.enqueue(Noop, "later", delay=2.0)
            rig.enqueue(Sleepy, "now", 10.0)
            await wait_until(lambda: len(JOURNAL.of("end")) == 2, 30)
            await rig.stop()

    run_virtual(main)
    assert starts("now") == [1.0]
    assert starts("later") == [pytest.approx(3.0, abs=1e-3)]


def test_idle_worker_picks_up_at_once_when_woken(tmp_path: Path) -> None:
    async def main() -> None:
        async with Rig(tmp_path / "q.db") as rig:
            await rig.start()
            await asyncio.sleep(1.0 - rig.now)
            rig.enqueue(Noop, "now")
            await wait_until(lambda: bool(starts("now")), 30)
            await rig.stop()

    run_virtual(main)
    assert starts("now") == [1.0]


def test_lost_wake_up_delays_to_the_poll_but_never_loses(tmp_path: Path) -> None:
    async def main() -> tuple[float, JobRow]:
        async with Rig(tmp_path / "q.db") as rig:
            await rig.start()
            first_poll_from = rig.now
            rig.fabric.set_drop(rig.addresses[1], True)  # every wake-up vanishes
            await asyncio.sleep(1.0 - rig.now)
            job_id = rig.enqueue(Noop, "lost")
            await wait_until(lambda: rig.row(job_id).status is JobStatus.DONE, 30)
            await rig.stop()
            return first_poll_from, rig.row(job_id)

    polled_from, row = run_virtual(main)
    (at,) = starts("lost")
    assert 1.0 < at <= polled_from + 5.0 + 1e-6  # the next 5 s poll, not later
    assert at == pytest.approx(5.0, abs=0.05)
    assert row.status is JobStatus.DONE


def test_sync_job_runs_through_the_offload(tmp_path: Path) -> None:
    async def main() -> JobRow:
        async with Rig(tmp_path / "q.db") as rig:
            await rig.start()
            job_id = rig.enqueue(SyncNoop, "s")
            await wait_until(lambda: rig.row(job_id).status is JobStatus.DONE, 10)
            await rig.stop()
            return rig.row(job_id)

    assert run_virtual(main).attempts == 1
    assert [n.worker for n in JOURNAL.of("start")] == [1]  # current_worker() inside the job


# -- slots -----------------------------------------------------------------------------------


def test_claims_never_exceed_free_slots(tmp_path: Path) -> None:
    samples: list[int] = []

    async def main() -> list[JobRow]:
        async with Rig(tmp_path / "q.db", concurrency=2) as rig:
            await rig.start()
            ids = rig.producer.enqueue_many([(Sleepy, [f"j{i}", 10.0], None) for i in range(10)])
            while not all(rig.row(i).status is JobStatus.DONE for i in ids):
                samples.append(rig.running_of(1))
                assert rig.now < 200, "jobs did not finish"
                await asyncio.sleep(0.5)
            await rig.stop()
            return [rig.row(i) for i in ids]

    rows = run_virtual(main)
    assert max(samples) == 2
    assert JOURNAL.max_concurrent() == 2
    assert all(r.attempts == 1 for r in rows)
    # Pairs back to back: each batch starts the instant the previous one frees its slots.
    assert sorted(t for t in JOURNAL.times("start") if t is not None) == pytest.approx(
        [0.01 + 10.0 * (k // 2) for k in range(10)], abs=0.02
    )


# -- outcomes --------------------------------------------------------------------------------


def test_fails_twice_then_succeeds_with_retry_2(tmp_path: Path) -> None:
    async def main() -> JobRow:
        async with Rig(tmp_path / "q.db") as rig:
            await rig.start()
            job_id = rig.enqueue(Flaky, "f", 2, options={"retry": 2, "retry_delay": 1.0})
            await wait_until(lambda: rig.row(job_id).status is JobStatus.DONE, 60)
            await rig.stop()
            return rig.row(job_id)

    row = run_virtual(main)
    assert row.attempts == 3
    assert row.last_error is None  # the success cleared run 2's error (#14)
    t = starts("f")
    assert len(t) == 3
    assert t[1] - t[0] == pytest.approx(1.0, abs=1e-3)  # fixed backoff of 1 s, on time
    assert t[2] - t[1] == pytest.approx(1.0, abs=1e-3)


def test_exponential_backoff_spacing(tmp_path: Path) -> None:
    async def main() -> JobRow:
        async with Rig(tmp_path / "q.db") as rig:
            await rig.start()
            opts = {"retry": 3, "retry_delay": 2.0, "backoff": "exponential", "jitter": 0}
            job_id = rig.enqueue(Flaky, "e", 3, options=opts)
            await wait_until(lambda: rig.row(job_id).status is JobStatus.DONE, 120)
            await rig.stop()
            return rig.row(job_id)

    assert run_virtual(main).attempts == 4
    t = starts("e")
    gaps = [b - a for a, b in itertools.pairwise(t)]
    assert gaps == pytest.approx([2.0, 4.0, 8.0], abs=1e-3)


def test_retry_exhausted_marks_failed_with_last_error(tmp_path: Path) -> None:
    async def main() -> tuple[JobRow, Rig]:
        async with Rig(tmp_path / "q.db") as rig:
            await rig.start()
            job_id = rig.enqueue(Boom, "b", options={"retry": 1, "retry_delay": 0.5})
            await wait_until(lambda: rig.row(job_id).status is JobStatus.FAILED, 60)
            await asyncio.sleep(30.0)  # and it is not run again
            await rig.stop()
            return rig.row(job_id), rig

    row, rig = run_virtual(main)
    assert row.attempts == 2
    assert row.last_error == "RuntimeError: boom"
    assert len(starts("b")) == 2
    assert [e[0] for e in rig.events(LogEvent.JOB_DEAD)] == [pytest.approx(starts("b")[1])]


def test_timeout_is_retried_then_failed_with_a_timeout_error(tmp_path: Path) -> None:
    async def main() -> tuple[JobRow, Rig]:
        async with Rig(tmp_path / "q.db") as rig:
            await rig.start()
            opts = {"timeout": 2.0, "retry": 1, "retry_delay": 1.0}
            job_id = rig.enqueue(Sleepy, "t", 100.0, options=opts)
            await wait_until(lambda: rig.row(job_id).status is JobStatus.FAILED, 60)
            await rig.stop()
            return rig.row(job_id), rig

    row, rig = run_virtual(main)
    assert row.attempts == 2
    assert row.last_error is not None
    assert row.last_error.startswith("TimeoutError: ")
    assert "exceeded its 2 s timeout" in row.last_error
    t = starts("t")
    assert t[1] - t[0] == pytest.approx(3.0, abs=1e-3)  # 2 s timeout + 1 s backoff
    assert JOURNAL.times("end", "t") == []
    assert len(rig.events(LogEvent.JOB_RETRY_SCHEDULED)) == 1
    assert rig.counters[1].snapshot().total_timeouts == 2


def test_unknown_job_name_fails_at_once_without_retry_or_import(tmp_path: Path) -> None:
    async def main() -> tuple[JobRow, JobRow]:
        async with Rig(tmp_path / "q.db") as rig:
            now = rig.clock.realtime()
            opts = JobOptions.parse({"retry": 5}).to_json()
            ghost = rig.store.enqueue(NewJob("nowhere_pkg.jobs.Ghost", "[]", opts, now, now))
            not_a_list = rig.store.enqueue(
                NewJob("tests.unit.engine_jobs.Noop", '{"a": 1}', opts, now, now)
            )
            await rig.start()
            await wait_until(
                lambda: all(rig.row(i).status is JobStatus.FAILED for i in (ghost, not_a_list)),
                10,
            )
            await asyncio.sleep(60.0)
            await rig.stop()
            return rig.row(ghost), rig.row(not_a_list)

    ghost, not_a_list = run_virtual(main)
    assert ghost.attempts == 1  # failed for good, although retry=5
    assert ghost.last_error is not None
    assert ghost.last_error.startswith("UnknownJobError: unknown job 'nowhere_pkg.jobs.Ghost'")
    assert "nowhere_pkg" not in sys.modules
    assert not_a_list.attempts == 1
    assert not_a_list.last_error == "TypeError: stored arguments are not a JSON array"
    assert JOURNAL.notes == []


# -- recovery and leases ---------------------------------------------------------------------


def _claim_for(store: SqliteStore, owner: str, *, now: float, lease: float = 60.0) -> int:
    """Register `owner` (heartbeat at `now`) and claim one due job for it; its id."""
    store.register_worker(WorkerRow(owner, "test-host", 4242, 9, "*", now, now))
    (row,) = store.claim(owner, now=now, lease=lease, limit=1)[1]
    return row.id


def test_startup_requeues_the_running_jobs_of_a_gone_predecessor(tmp_path: Path) -> None:
    async def main() -> tuple[JobRow, JobRow]:
        # A previous life of this worker (its process gone, as the probe says) left `mine`
        # running; a live peer holds `theirs`.
        async with Rig(tmp_path / "q.db", gone=lambda row: row.owner == "old-1") as rig:
            now = rig.clock.realtime()
            mine = rig.enqueue(Noop, "mine")
            theirs = rig.enqueue(Noop, "theirs")
            assert _claim_for(rig.store, "old-1", now=now) == mine
            assert _claim_for(rig.store, "live-2", now=now, lease=600.0) == theirs
            await rig.start()
            await wait_until(lambda: rig.row(mine).status is JobStatus.DONE, 10)
            for _ in range(4):  # the live peer keeps beating
                await asyncio.sleep(10.0)
                rig.store.heartbeat("live-2", now=rig.clock.realtime())
            await rig.stop()
            return rig.row(mine), rig.row(theirs)

    mine, theirs = run_virtual(main)
    assert mine.attempts == 2
    assert starts("mine") == [pytest.approx(0.0, abs=0.02)]
    assert theirs.status is JobStatus.RUNNING  # a live owner's job is left alone
    assert theirs.locked_by == "live-2"


def test_a_silent_peer_is_judged_dead_after_a_lease_and_its_job_run(tmp_path: Path) -> None:
    async def main() -> tuple[JobRow, JobRow]:
        async with Rig(tmp_path / "q.db", lease=60.0) as rig:
            now = rig.clock.realtime()
            silent = rig.enqueue(Noop, "silent")
            ghost = rig.enqueue(Noop, "ghost")
            # A peer on another host claimed `silent` and never beat again; `ghost` was
            # claimed by an owner with no row (wave 1's rows), its lease long over.
            assert _claim_for(rig.store, "peer-2", now=now) == silent
            (row,) = rig.store.claim("ghost", now=now, lease=-100.0, limit=1)[1]
            assert row.id == ghost
            await rig.start()
            await wait_until(lambda: rig.row(silent).status is JobStatus.DONE, 120)
            await rig.stop()
            return rig.row(silent), rig.row(ghost)

    silent, ghost = run_virtual(main)
    assert (silent.status, silent.attempts, silent.locked_by) == (JobStatus.DONE, 2, "worker-1")
    assert starts("ghost") == [pytest.approx(0.0, abs=0.02)]  # at start-up recovery
    # Watched from start-up on: its heartbeat unchanged for a lease, judged at the next
    # maintenance pass (every lease/6 = 10 s).
    assert starts("silent") == [pytest.approx(60.0, abs=0.05)]
    assert ghost.status is JobStatus.DONE


def test_a_live_peers_job_is_never_taken_past_its_lease(tmp_path: Path) -> None:
    """The two-supervisor bug: a running job whose lease looks over (a clock step, a slow
    renewal) but whose owner keeps beating stays with its owner."""

    async def main() -> JobRow:
        async with Rig(tmp_path / "q.db", lease=60.0) as rig:
            now = rig.clock.realtime()
            job_id = rig.enqueue(Noop, "theirs")
            assert _claim_for(rig.store, "peer-2", now=now, lease=-100.0) == job_id
            await rig.start()
            for _ in range(20):  # 200 s: more than three leases
                await asyncio.sleep(10.0)
                rig.store.heartbeat("peer-2", now=rig.clock.realtime())
            await rig.stop()
            return rig.row(job_id)

    row = run_virtual(main)
    assert (row.status, row.locked_by, row.attempts) == (JobStatus.RUNNING, "peer-2", 1)
    assert starts("theirs") == []


def test_long_job_keeps_its_lease_renewed(tmp_path: Path) -> None:
    async def main() -> tuple[JobRow, list[float]]:
        leases: list[float] = []
        async with Rig(tmp_path / "q.db", lease=3.0) as rig:
            await rig.start()
            job_id = rig.enqueue(Sleepy, "long", 10.0)
            while rig.row(job_id).status is not JobStatus.DONE:
                row = rig.row(job_id)
                if row.lease_until is not None:
                    leases.append(row.lease_until - rig.clock.realtime())
                assert rig.now < 60
                await asyncio.sleep(0.25)
            await rig.stop()
            return rig.row(job_id), leases

    row, leases = run_virtual(main)
    assert row.attempts == 1
    assert len(starts("long")) == 1  # never requeued, never run twice
    assert min(leases) > 0  # the lease was always in the future while it ran
    assert max(leases) <= 3.0 + 1e-6


def test_busy_worker_hands_the_wake_up_to_a_peer(tmp_path: Path) -> None:
    # A producer rng whose first two picks are both worker 1 (ring position 0).
    seed = next(s for s in range(100) if _picks(s, 2) == [0, 0])

    async def main() -> Rig:
        async with Rig(
            tmp_path / "q.db", indexes=(1, 2), concurrency=1, producer_rng=random.Random(seed)
        ) as rig:
            await rig.start()
            await asyncio.sleep(0.5 - rig.now)
            rig.enqueue(Sleepy, "A", 20.0)  # worker 1 takes it and is then full
            await wait_until(lambda: bool(starts("A")), 5)
            await asyncio.sleep(1.0 - rig.now)
            rig.enqueue(Noop, "B")  # woken: busy worker 1, which must pass it on
            await wait_until(lambda: bool(starts("B")), 10)
            await rig.stop()
            return rig

    rig = run_virtual(main)
    (a,) = JOURNAL.of("start")[:1]
    assert (a.tag, a.worker, a.at) == ("A", 1, 0.5)
    (b,) = [n for n in JOURNAL.of("start") if n.tag == "B"]
    assert (b.worker, b.at) == (2, 1.0)  # the peer ran it at once, not at its 5 s poll
    passed = rig.events(LogEvent.WAKE_PASSED_ON)
    assert [(t, host, f["to"]) for t, host, f in passed] == [(1.0, 1, 2)]


def test_graceful_stop_lets_running_queue_jobs_finish_as_done(tmp_path: Path) -> None:
    async def main() -> tuple[list[JobRow], JobRow, float, float]:
        async with Rig(tmp_path / "q.db", concurrency=2) as rig:
            await rig.start()
            ids = [rig.enqueue(Sleepy, f"s{i}", 10.0) for i in range(2)]
            await wait_until(lambda: len(starts("s0") + starts("s1")) == 2, 5)
            started = rig.now
            extra = rig.enqueue(Noop, "extra")  # pending: no slot free before the stop
            await asyncio.sleep(3.0)
            returned = await rig.stop()
            return [rig.row(i) for i in ids], rig.row(extra), started, returned

    rows, extra, started, returned = run_virtual(main)
    assert [r.status for r in rows] == [JobStatus.DONE, JobStatus.DONE]
    assert returned == pytest.approx(started + 10.0, abs=0.02)
    assert extra.status is JobStatus.PENDING  # no new claim after stop()
    assert starts("extra") == []


def test_old_done_jobs_are_purged(tmp_path: Path) -> None:
    async def main() -> tuple[JobRow | None, JobRow | None]:
        async with Rig(tmp_path / "q.db") as rig:
            await rig.start()
            job_id = rig.enqueue(Noop, "old")
            await wait_until(lambda: rig.row(job_id).status is JobStatus.DONE, 5)
            await asyncio.sleep(3600.0 - rig.now)
            before = rig.store.get(job_id)
            await asyncio.sleep(3600.0 + 301.0 - rig.now)
            after = rig.store.get(job_id)
            await rig.stop()
            return before, after

    before, after = run_virtual(main)
    assert before is not None
    assert after is None


def test_worker_counters_and_options_round_trip(tmp_path: Path) -> None:
    async def main() -> Rig:
        async with Rig(tmp_path / "q.db") as rig:
            await rig.start()
            ok = rig.enqueue(Noop, "c1")
            bad = rig.enqueue(Boom, "c2")
            await wait_until(
                lambda: (
                    rig.row(ok).status is JobStatus.DONE and rig.row(bad).status is JobStatus.FAILED
                ),
                10,
            )
            assert json.loads(rig.row(bad).options)["retry"] == 0
            await rig.stop()
            return rig

    snap = run_virtual(main).counters[1].snapshot()
    assert (snap.total_runs, snap.total_successes, snap.total_failures) == (2, 1, 1)
    assert snap.active_jobs == 0


def test_queue_job_starts_when_a_scheduled_run_frees_the_shared_slot(tmp_path: Path) -> None:
    # Concurrency 1, shared by the schedule and the queue: a queue job that arrives while a
    # scheduled run holds the slot starts the moment that run ends, not at a later poll.
    entry = ScheduleEntry(
        name="sched", job_class=timed_job("sched", 8.0), every=100.0, timeout=60.0, worker=1
    )

    async def main() -> None:
        async with Rig(tmp_path / "q.db", concurrency=1, entries=[entry]) as rig:
            await rig.start()
            await wait_until(lambda: bool(starts("sched")), 200)
            await asyncio.sleep(1.0)  # the wake-up finds no free slot; the poll is 5 s off
            rig.enqueue(Noop, "queued")
            await wait_until(lambda: bool(starts("queued")), 60)
            await rig.stop()

    run_virtual(main)
    (sched_end,) = JOURNAL.times("end", "sched")
    assert starts("queued") == [pytest.approx(sched_end, abs=1e-3)]


def test_a_slot_a_scheduled_run_frees_after_a_wake_up_filled_the_rest_is_not_left_idle(
    tmp_path: Path,
) -> None:
    # Concurrency 2: a scheduled run holds one slot; one wake-up carries two jobs and the
    # doorbell claims the first into the other slot. When the scheduled run ends (before
    # the serve loop's next 5 s poll), the second job must start then, not at that poll.
    entry = ScheduleEntry(
        name="sched", job_class=timed_job("sched", 0.8), every=100.0, timeout=60.0, worker=1
    )

    async def main() -> None:
        async with Rig(tmp_path / "q.db", concurrency=2, entries=[entry]) as rig:
            await rig.start()
            await wait_until(lambda: bool(starts("sched")), 200)
            await asyncio.sleep(0.2)
            rig.enqueue(Sleepy, "long", 60.0)
            rig.enqueue(Noop, "queued")
            await wait_until(lambda: bool(starts("queued")), 60)
            await rig.stop()

    run_virtual(main)
    (sched_end,) = JOURNAL.times("end", "sched")
    assert starts("queued") == [pytest.approx(sched_end, abs=1e-3)]


# -- bugs in loop callbacks still stop the worker ---------------------------------------------


@pytest.mark.parametrize("where", ["wake-up", "flush"])
def test_a_bug_in_the_claim_path_stops_the_worker_as_a_task_error_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # Wake-ups only signal the serve loop, and outcomes are recorded by it: a bug in
    # handing a wake-up on or in reporting an outcome ends the worker with that error,
    # never only in the loop's exception handler.
    from reference.consumer import Consumer

    def boom(*_args: object) -> None:
        raise RuntimeError(f"bug in the {where} callback")

    target = "_hand_on_rings" if where == "wake-up" else "_report"
    monkeypatch.setattr(Consumer, target, boom)

    async def main() -> BaseException | None:
        async with Rig(tmp_path / "q.db") as rig:
            await rig.start()
            await asyncio.sleep(1.0 - rig.now)
            if where == "flush":
                # No wake-up: the serve loop's poll claims it, then its success flushes.
                rig.store.enqueue(
                    NewJob("tests.unit.engine_jobs.Noop", '["x"]', "{}", rig.now, rig.now)
                )
            else:
                rig.enqueue(Noop, "x")
            task = rig.tasks[1]
            await wait_until(task.done, 30)
            return task.exception()

    error = run_virtual(main)
    assert error is not None
    found = [error, *getattr(error, "exceptions", ())]
    assert any(f"bug in the {where} callback" in str(e) for e in found), found


# -- a store that stopped working for good ends the worker with one clear error -----------


async def _worker_error(rig: Rig) -> tuple[float, BaseException]:
    """Wait for worker 1 to end with an error; the loop time then, and the error."""
    with pytest.raises(BaseExceptionGroup) as info:
        async with asyncio.timeout(120.0):  # virtual: fails, not hangs, if it serves on
            await rig.tasks[1]
    return rig.now, info.value.exceptions[0]


def test_a_database_replaced_under_the_worker_ends_it_at_the_next_poll(tmp_path: Path) -> None:
    """SQLite goes on serving the unlinked file; jobs enqueued into the new one at the path
    would never run. The worker must notice within a poll and exit, not serve a ghost."""
    db = tmp_path / "q.db"

    async def main() -> tuple[float, BaseException]:
        async with Rig(db, poll=5.0) as rig:
            await rig.start()
            await asyncio.sleep(2.0)
            db.rename(tmp_path / "old.db")
            SqliteStore.create_schema(db)
            return await _worker_error(rig)

    at, exc = run_virtual(main)
    assert isinstance(exc, StoreUnusableError)
    assert "was deleted or replaced" in str(exc)
    assert at <= 5.0 + 1e-6


def test_a_store_failing_for_good_ends_the_worker_after_the_give_up_time(tmp_path: Path) -> None:
    """A read-only or corrupt file fails every claim; after STORE_GIVE_UP of that the worker
    exits with the last error instead of warning every few seconds forever."""
    db = tmp_path / "q.db"

    async def main() -> tuple[float, BaseException]:
        async with Rig(db, poll=5.0) as rig:
            await rig.start()
            worker_store = rig._stores[1]
            worker_store.close()  # every later call raises StoreError("store is closed")
            rig.enqueue(Noop, "never")  # a wake-up makes the worker claim, and fail
            return await _worker_error(rig)

    at, exc = run_virtual(main)
    assert isinstance(exc, StoreUnusableError)
    assert "kept failing for 30 s" in str(exc)
    assert "store is closed" in str(exc)
    assert STORE_GIVE_UP <= at <= STORE_GIVE_UP + 5.0 + 1e-6


def test_one_transient_store_error_and_a_quiet_spell_are_not_a_broken_store(
    tmp_path: Path,
) -> None:
    """Found by `sim soak` (swarm seeds 27, 72, ...): a busy worker makes no claims, so one
    failed check followed by 30 s of nothing to do must not end it."""

    async def main() -> tuple[bool, JobRow]:
        async with Rig(tmp_path / "q.db", poll=5.0, concurrency=1) as rig:
            await rig.start()
            store = rig._stores[1]
            real_verify = store.verify
            calls = [0]

            def flaky_verify() -> None:
                calls[0] += 1
                if calls[0] == 1:
                    raise StoreError("injected: one transient failure")
                real_verify()

            store.verify = flaky_verify  # type: ignore[method-assign]
            job_id = rig.enqueue(Sleepy, "busy", 90.0, options={"timeout": 120})
            await asyncio.sleep(100.0)
            alive = not rig.tasks[1].done()
            await rig.stop()
            return alive, rig.row(job_id)

    alive, row = run_virtual(main)
    assert alive
    assert row.status is JobStatus.DONE


def test_a_stored_row_too_deep_to_decode_fails_that_job_only(tmp_path: Path) -> None:
    """Rows our producer refuses can still reach the table (older code, another writer):
    json.loads of ~1,000 levels raises RecursionError, which crash-looped the worker."""

    async def main() -> tuple[JobRow, JobRow]:
        async with Rig(tmp_path / "q.db") as rig:
            await rig.start()
            deep = "[" * 100_000 + "]" * 100_000
            bad = rig.store.enqueue(
                NewJob("tests.unit.engine_jobs.Noop", f"[{deep}]", "{}", rig.clock.realtime(), 0)
            )
            rig.producer.wake()
            ok = rig.enqueue(Noop, "after")
            await wait_until(lambda: rig.row(ok).status is JobStatus.DONE, 30)
            await rig.stop()
            return rig.row(bad), rig.row(ok)

    bad, ok = run_virtual(main)
    assert bad.status is JobStatus.FAILED
    assert bad.last_error is not None
    assert bad.last_error.startswith("RecursionError")
    assert ok.attempts == 1


def test_a_worker_registers_heartbeats_and_marks_itself_stopped(tmp_path: Path) -> None:
    """The `workers` table: a row at start, heartbeat_at moving every lease/3 while idle,
    stopped_at set by a graceful stop; a crash (cancelled task) leaves it unstopped."""

    async def main() -> tuple[list[WorkerRow], list[WorkerRow], list[WorkerRow]]:
        async with Rig(tmp_path / "q.db", indexes=(1, 2), lease=30.0) as rig:
            await rig.start()
            first = rig.store.list_workers()
            await asyncio.sleep(25.0)
            beaten = rig.store.list_workers()
            await rig.stop(1)
            rig.tasks[2].cancel()  # a crash: no graceful end
            with contextlib.suppress(asyncio.CancelledError):
                await rig.tasks[2]
            return first, beaten, rig.store.list_workers()

    first, beaten, last = run_virtual(main)
    assert sorted(w.index for w in first) == [1, 2]
    assert len({w.owner for w in first}) == 2
    assert all(w.heartbeat_at == w.started_at and w.stopped_at is None for w in first)
    assert all(w.heartbeat_at >= w.started_at + 20.0 for w in beaten)  # two beats of 10 s
    by_index = {w.index: w for w in last}
    assert by_index[1].stopped_at is not None
    assert by_index[2].stopped_at is None
