"""Contract suite for `reference.store.Store`: every implementation must pass all of it.

A new backend joins by adding a param to `STORE_FACTORIES`; nothing here may depend on SQL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from reference.records import JobStatus, NewJob, WorkerRow
from reference.sqlite_store import SqliteStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

    from reference.records import JobRow
    from reference.store import Store

T0 = 1_700_000_000.0
LEASE = 30.0

STORE_FACTORIES: dict[str, Callable[[Path], Store]] = {
    "sqlite-mmap": lambda p: SqliteStore(p / "queue.db", mmap=True),
    "sqlite-nommap": lambda p: SqliteStore(p / "queue.db", mmap=False),
}


@pytest.fixture(params=sorted(STORE_FACTORIES))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Open stores of one implementation on one shared database; close them all after."""
    factory = STORE_FACTORIES[request.param]
    opened: list[Store] = []

    def make() -> Store:
        store = factory(tmp_path)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[[], Store]) -> Store:
    return make_store()


def job(name: str = "app.Job", *, run_at: float = T0, args: str = "[]") -> NewJob:
    return NewJob(name=name, args=args, options="{}", run_at=run_at, created_at=T0)


def ids(rows: Sequence[JobRow]) -> list[int]:
    return [r.id for r in rows]


def test_enqueue_then_get_round_trips(store: Store) -> None:
    job_id = store.enqueue(NewJob("app.Send", '[42, "hi"]', '{"retry": 2}', T0 + 5, T0))
    row = store.get(job_id)
    assert row is not None
    assert (row.id, row.name, row.args, row.options) == (
        job_id,
        "app.Send",
        '[42, "hi"]',
        '{"retry": 2}',
    )
    assert (row.status, row.run_at, row.created_at, row.attempts) == (
        JobStatus.PENDING,
        T0 + 5,
        T0,
        0,
    )
    assert (row.locked_by, row.locked_at, row.lease_until, row.finished_at, row.last_error) == (
        None,
        None,
        None,
        None,
        None,
    )
    assert store.get(job_id + 1000) is None


def test_ids_increase(store: Store) -> None:
    first = store.enqueue(job())
    second = store.enqueue(job())
    assert second > first


def test_enqueue_many_returns_ids_in_order(store: Store) -> None:
    new_ids = store.enqueue_many([job(f"app.J{i}") for i in range(5)])
    assert new_ids == sorted(new_ids)
    assert len(set(new_ids)) == 5
    assert [store.get(i).name for i in new_ids] == [f"app.J{i}" for i in range(5)]  # type: ignore[union-attr]
    assert store.enqueue_many([]) == []


def test_fetch_claims_in_run_at_then_id_order(store: Store) -> None:
    late = store.enqueue(job(run_at=T0 - 1))
    early_a = store.enqueue(job(run_at=T0 - 10))
    early_b = store.enqueue(job(run_at=T0 - 10))
    claimed = [store.fetch_due(1, now=T0, lease=LEASE) for _ in range(4)]
    assert [ids(c) for c in claimed] == [[early_a], [early_b], [late], []]


def test_not_yet_due_jobs_are_not_claimed(store: Store) -> None:
    due = store.enqueue(job(run_at=T0))
    future = store.enqueue(job(run_at=T0 + 0.5))
    assert ids(store.fetch_due(1, now=T0, lease=LEASE, limit=10)) == [due]
    assert store.fetch_due(1, now=T0, lease=LEASE) == []
    assert ids(store.fetch_due(1, now=T0 + 0.5, lease=LEASE)) == [future]


def test_limit_claims_several_in_order(store: Store) -> None:
    new = [store.enqueue(job(run_at=T0 - i)) for i in range(5)]  # later ids are older
    claimed = store.fetch_due(2, now=T0, lease=LEASE, limit=3)
    assert ids(claimed) == [new[4], new[3], new[2]]
    assert ids(store.fetch_due(2, now=T0, lease=LEASE, limit=3)) == [new[1], new[0]]


def test_claim_sets_lease_fields_and_counts_attempts(store: Store) -> None:
    job_id = store.enqueue(job())
    (row,) = store.fetch_due(3, now=T0 + 1, lease=LEASE)
    assert (row.status, row.locked_by, row.locked_at, row.lease_until, row.attempts) == (
        JobStatus.RUNNING,
        3,
        T0 + 1,
        T0 + 1 + LEASE,
        1,
    )
    assert store.get(job_id) == row
    assert store.fail(job_id, "boom", attempt=1, retry_at=T0 + 2, now=T0 + 1.5)
    (again,) = store.fetch_due(3, now=T0 + 2, lease=LEASE)
    assert again.attempts == 2


def test_complete_marks_done(store: Store) -> None:
    job_id = store.enqueue(job())
    (row,) = store.fetch_due(1, now=T0, lease=LEASE)
    assert store.complete(job_id, attempt=row.attempts, now=T0 + 3)
    done = store.get(job_id)
    assert done is not None
    assert (done.status, done.finished_at, done.lease_until) == (JobStatus.DONE, T0 + 3, None)
    assert not store.complete(job_id, attempt=row.attempts, now=T0 + 4)


def test_complete_with_stale_attempt_is_fenced(store: Store) -> None:
    job_id = store.enqueue(job())
    store.fetch_due(1, now=T0, lease=1.0)
    assert store.requeue_expired(now=T0 + 2) == 1
    (second,) = store.fetch_due(2, now=T0 + 2, lease=LEASE)
    before = store.get(job_id)
    assert not store.complete(job_id, attempt=1, now=T0 + 3)
    assert not store.fail(job_id, "late", attempt=1, retry_at=None, now=T0 + 3)
    assert store.get(job_id) == before
    assert store.complete(job_id, attempt=second.attempts, now=T0 + 4)


def test_complete_and_fetch_completes_then_claims_in_order(store: Store) -> None:
    first, other, later, second = store.enqueue_many(
        [job(run_at=T0), job(run_at=T0), job(run_at=T0 + 100), job(run_at=T0 + 1)]
    )
    rows = store.fetch_due(1, now=T0, lease=LEASE, limit=2)
    assert ids(rows) == [first, other]
    done, claimed = store.complete_and_fetch(
        [(r.id, r.attempts) for r in rows], now=T0 + 3, worker=1, lease=LEASE, limit=2
    )
    assert done == [True, True]
    assert {store.get(i).status for i in (first, other)} == {JobStatus.DONE}  # type: ignore[union-attr]
    assert ids(claimed) == [second]  # `later` is not due yet
    assert (claimed[0].locked_by, claimed[0].attempts) == (1, 1)
    assert claimed[0].lease_until == T0 + 3 + LEASE
    assert store.get(later).status is JobStatus.PENDING  # type: ignore[union-attr]


def test_complete_and_fetch_with_limit_zero_only_completes(store: Store) -> None:
    first, second = store.enqueue_many([job(), job()])
    (row,) = store.fetch_due(1, now=T0, lease=LEASE)
    assert store.complete_and_fetch(
        [(first, row.attempts)], now=T0, worker=1, lease=LEASE, limit=0
    ) == ([True], [])
    assert store.get(second).status is JobStatus.PENDING  # type: ignore[union-attr]


def test_complete_and_fetch_fences_each_claim_and_still_claims(store: Store) -> None:
    first, kept, second = store.enqueue_many([job(), job(), job()])
    store.fetch_due(1, now=T0, lease=1.0, limit=2)
    store.requeue_expired(now=T0 + 2)
    store.fetch_due(2, now=T0 + 2, lease=LEASE, limit=1)  # worker 2 takes `first` over
    store.renew(1, [kept], lease_until=T0 + 100)  # too late: `kept` was re-queued too
    (again,) = store.fetch_due(1, now=T0 + 2, lease=LEASE, limit=1)
    assert again.id == kept
    done, claimed = store.complete_and_fetch(
        [(first, 1), (kept, again.attempts)], now=T0 + 3, worker=1, lease=LEASE, limit=1
    )
    assert done == [False, True]  # worker 2 holds attempt 2 of `first`
    assert store.get(first).status is JobStatus.RUNNING  # type: ignore[union-attr]
    assert ids(claimed) == [second]


def test_complete_of_pending_job_is_false(store: Store) -> None:
    job_id = store.enqueue(job())
    assert not store.complete(job_id, attempt=0, now=T0)
    assert store.get(job_id).status is JobStatus.PENDING  # type: ignore[union-attr]


def test_fail_with_retry_at_goes_back_to_pending(store: Store) -> None:
    job_id = store.enqueue(job())
    store.fetch_due(1, now=T0, lease=LEASE)
    assert store.fail(job_id, "ValueError: nope", attempt=1, retry_at=T0 + 60, now=T0 + 1)
    row = store.get(job_id)
    assert row is not None
    assert (row.status, row.run_at, row.last_error, row.attempts) == (
        JobStatus.PENDING,
        T0 + 60,
        "ValueError: nope",
        1,
    )
    assert (row.locked_by, row.locked_at, row.lease_until, row.finished_at) == (None,) * 4
    assert store.fetch_due(1, now=T0 + 59, lease=LEASE) == []
    assert ids(store.fetch_due(1, now=T0 + 60, lease=LEASE)) == [job_id]


def test_fail_without_retry_at_is_final(store: Store) -> None:
    job_id = store.enqueue(job())
    store.fetch_due(1, now=T0, lease=LEASE)
    assert store.fail(job_id, "boom", attempt=1, retry_at=None, now=T0 + 2)
    row = store.get(job_id)
    assert row is not None
    assert (row.status, row.finished_at, row.last_error, row.lease_until) == (
        JobStatus.FAILED,
        T0 + 2,
        "boom",
        None,
    )
    assert store.fetch_due(1, now=T0 + 1000, lease=LEASE) == []


def test_requeue_running_touches_only_that_worker(store: Store) -> None:
    a = store.enqueue(job())
    b = store.enqueue(job())
    store.fetch_due(1, now=T0, lease=LEASE)
    store.fetch_due(2, now=T0, lease=LEASE)
    assert store.requeue_running(1, now=T0 + 1) == 1
    row_a, row_b = store.get(a), store.get(b)
    assert row_a is not None
    assert row_b is not None
    assert (row_a.status, row_a.locked_by, row_a.lease_until, row_a.attempts) == (
        JobStatus.PENDING,
        None,
        None,
        1,
    )
    assert (row_b.status, row_b.locked_by) == (JobStatus.RUNNING, 2)
    assert store.requeue_running(1, now=T0 + 1) == 0


def test_requeue_expired_touches_only_expired_leases(store: Store) -> None:
    short = store.enqueue(job())
    long = store.enqueue(job())
    store.fetch_due(1, now=T0, lease=5.0)
    store.fetch_due(2, now=T0, lease=50.0)
    assert store.requeue_expired(now=T0 + 5.0) == 0  # lease_until < now, strictly
    assert store.requeue_expired(now=T0 + 6.0) == 1
    assert store.get(short).status is JobStatus.PENDING  # type: ignore[union-attr]
    assert store.get(long).status is JobStatus.RUNNING  # type: ignore[union-attr]


@pytest.mark.parametrize("how", ["own", "expired"])
def test_a_job_whose_runs_kill_their_worker_fails_at_max_crashes(store: Store, how: str) -> None:
    """A poison job (os._exit, a segfault, the OOM killer) takes down every worker that runs
    it; each re-queue after such a death counts, and the third ends it `failed`."""
    poison = store.enqueue(job())
    now = T0
    for crash in (1, 2, 3):
        assert ids(store.fetch_due(1, now=now, lease=5.0)) == [poison]
        now += 10.0
        requeued = (
            store.requeue_running(1, now=now) if how == "own" else store.requeue_expired(now=now)
        )
        assert requeued == 1
        row = store.get(poison)
        assert row is not None
        if crash < 3:
            assert (row.status, row.last_error) == (JobStatus.PENDING, None)
    assert (row.status, row.finished_at, row.attempts) == (JobStatus.FAILED, now, 3)
    assert row.last_error is not None
    assert row.last_error.startswith("WorkerLostError: the worker running this job died during 3")
    assert store.fetch_due(1, now=now, lease=5.0) == []


def test_max_crashes_comes_from_the_jobs_options(store: Store) -> None:
    once = store.enqueue(NewJob("app.Job", "[]", '{"max_crashes": 1}', T0, T0))
    store.fetch_due(1, now=T0, lease=LEASE)
    store.requeue_running(1, now=T0 + 1)
    assert store.get(once).status is JobStatus.FAILED  # type: ignore[union-attr]


def test_renew_extends_only_own_running_jobs(store: Store) -> None:
    mine = store.enqueue(job())
    theirs = store.enqueue(job())
    store.fetch_due(1, now=T0, lease=5.0)
    store.fetch_due(2, now=T0, lease=5.0)
    assert store.renew(1, [mine, theirs], lease_until=T0 + 100) == 1
    assert store.renew(1, [], lease_until=T0 + 100) == 0
    assert store.requeue_expired(now=T0 + 10) == 1
    assert store.get(mine).status is JobStatus.RUNNING  # type: ignore[union-attr]
    assert store.get(theirs).status is JobStatus.PENDING  # type: ignore[union-attr]


def test_purge_removes_only_old_done_jobs(store: Store) -> None:
    old, new, failed, pending = (store.enqueue(job()) for _ in range(4))
    store.fetch_due(1, now=T0, lease=LEASE, limit=3)
    store.complete(old, attempt=1, now=T0 + 10)
    store.complete(new, attempt=1, now=T0 + 20)
    store.fail(failed, "x", attempt=1, retry_at=None, now=T0 + 10)
    assert store.purge_done(older_than=T0 + 10) == 0  # finished_at < older_than, strictly
    assert store.purge_done(older_than=T0 + 15) == 1
    assert store.get(old) is None
    assert [store.get(i) is not None for i in (new, failed, pending)] == [True, True, True]


def test_purged_ids_are_never_reused(store: Store) -> None:
    first = store.enqueue(job())
    store.fetch_due(1, now=T0, lease=LEASE)
    store.complete(first, attempt=1, now=T0)
    assert store.purge_done(older_than=T0 + 1) == 1
    assert store.enqueue(job()) > first


def test_retry_only_requeues_failed_jobs(store: Store) -> None:
    failed, done, pending = (store.enqueue(job()) for _ in range(3))
    store.fetch_due(1, now=T0, lease=LEASE, limit=2)
    store.fail(failed, "boom", attempt=1, retry_at=None, now=T0 + 1)
    store.complete(done, attempt=1, now=T0 + 1)
    assert not store.retry(done, now=T0 + 2)
    assert not store.retry(pending, now=T0 + 2)
    assert not store.retry(9999, now=T0 + 2)
    assert store.retry(failed, now=T0 + 2)
    row = store.get(failed)
    assert row is not None
    # A user retry gives the job its whole retry budget again.
    assert (row.status, row.run_at, row.attempts, row.finished_at) == (
        JobStatus.PENDING,
        T0 + 2,
        0,
        None,
    )
    assert not store.retry(failed, now=T0 + 3)


def test_stats_counts_and_oldest_pending(store: Store) -> None:
    empty = store.stats()
    assert (empty.pending, empty.running, empty.done, empty.failed) == (0, 0, 0, 0)
    assert empty.oldest_pending_run_at is None
    a, b = store.enqueue(job(run_at=T0 - 5)), store.enqueue(job(run_at=T0 - 4))
    c = store.enqueue(job(run_at=T0 - 3))
    store.enqueue(job(run_at=T0 + 7))
    store.enqueue(job(run_at=T0 + 9))
    store.fetch_due(1, now=T0, lease=LEASE, limit=3)
    store.complete(a, attempt=1, now=T0)
    store.fail(b, "x", attempt=1, retry_at=None, now=T0)
    stats = store.stats()
    assert (stats.pending, stats.running, stats.done, stats.failed, stats.total) == (2, 1, 1, 1, 5)
    assert stats.oldest_pending_run_at == T0 + 7
    assert store.get(c).status is JobStatus.RUNNING  # type: ignore[union-attr]


def test_next_run_at(store: Store) -> None:
    assert store.next_run_at() is None
    store.enqueue(job(run_at=T0 + 30))
    store.enqueue(job(run_at=T0 + 10))
    assert store.next_run_at() == T0 + 10
    store.fetch_due(1, now=T0 + 10, lease=LEASE)
    assert store.next_run_at() == T0 + 30


def test_list_jobs_newest_first_with_status_filter(store: Store) -> None:
    a, b, c = (store.enqueue(job()) for _ in range(3))
    store.fetch_due(1, now=T0, lease=LEASE)
    assert ids(store.list_jobs()) == [c, b, a]
    assert ids(store.list_jobs(limit=2)) == [c, b]
    assert ids(store.list_jobs(JobStatus.PENDING)) == [c, b]
    assert ids(store.list_jobs(JobStatus.RUNNING)) == [a]
    assert store.list_jobs(JobStatus.DONE) == []


def test_two_stores_on_one_file_never_claim_the_same_job(
    make_store: Callable[[], Store],
) -> None:
    one, two = make_store(), make_store()
    one.enqueue_many([job(run_at=T0 - i % 7) for i in range(60)])
    seen: list[int] = []
    for step in range(40):
        who = one if step % 2 else two
        seen += ids(who.fetch_due(step % 3 + 1, now=T0, lease=LEASE, limit=step % 3 + 1))
    assert len(seen) == len(set(seen)) == 60
    assert one.stats().running == two.stats().running == 60


def test_close_is_idempotent(make_store: Callable[[], Store]) -> None:
    store = make_store()
    store.close()
    store.close()


def _worker(owner: str, *, index: int = 1, at: float = T0) -> WorkerRow:
    return WorkerRow(owner, "host-a", 100 + index, index, "*", at, at)


def test_workers_register_heartbeat_stop_and_list(store: Store) -> None:
    store.register_worker(_worker("a:1:x", index=1))
    store.register_worker(_worker("a:2:y", index=2, at=T0 + 1))
    assert store.heartbeat("a:1:x", now=T0 + 20) is True
    assert store.heartbeat("nobody", now=T0 + 20) is False
    store.stop_worker("a:2:y", now=T0 + 30)
    assert store.heartbeat("a:2:y", now=T0 + 40) is False  # a stopped owner stays stopped
    assert store.list_workers() == [
        WorkerRow("a:2:y", "host-a", 102, 2, "*", T0 + 1, T0 + 1, T0 + 30),
        WorkerRow("a:1:x", "host-a", 101, 1, "*", T0, T0 + 20, None),
    ]


def test_one_index_may_have_many_owners(store: Store) -> None:
    """Two supervisors on one store both run a worker 1: two owners, one index."""
    store.register_worker(_worker("a:1:x"))
    store.register_worker(_worker("b:1:z"))
    assert sorted(w.owner for w in store.list_workers()) == ["a:1:x", "b:1:z"]


def test_purge_workers_drops_rows_silent_or_stopped_before_the_cutoff(store: Store) -> None:
    store.register_worker(_worker("old-stopped"))
    store.stop_worker("old-stopped", now=T0 + 5)
    store.register_worker(_worker("old-silent"))
    store.register_worker(_worker("live"))
    store.heartbeat("live", now=T0 + 100)
    assert store.purge_workers(older_than=T0 + 50) == 2
    assert [w.owner for w in store.list_workers()] == ["live"]


def test_a_success_clears_the_error_of_an_earlier_attempt(store: Store) -> None:
    """A done job showed the last_error of a failed attempt before it, as if it had failed."""
    job_id = store.enqueue(job())
    (first,) = store.fetch_due(1, now=T0, lease=LEASE)
    store.fail(job_id, "RuntimeError: once", attempt=first.attempts, retry_at=T0 + 1, now=T0)
    (second,) = store.fetch_due(1, now=T0 + 2, lease=LEASE)
    assert second.last_error == "RuntimeError: once"  # visible while it runs again
    assert store.complete(job_id, attempt=second.attempts, now=T0 + 3)
    done = store.get(job_id)
    assert done is not None
    assert (done.status, done.last_error) == (JobStatus.DONE, None)
