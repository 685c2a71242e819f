"""Contract suite for the `reference.store` protocols: every implementation passes all of it.

A new backend joins by adding a param to `STORE_FACTORIES`; nothing here may depend on SQL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from reference.records import JobStatus, NewJob, Settlement, WorkerRow
from reference.sqlite_store import SqliteStore
from tests.storeops import LEASE, T0, claim, record

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

    from reference.records import JobRow
    from reference.store import Store


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


def register(store: Store, owner: str, *, at: float = T0) -> None:
    store.register_worker(WorkerRow(owner, "host-a", 100, 1, "*", at, at))


def test_claim_in_run_at_then_id_order(store: Store) -> None:
    late = store.enqueue(job(run_at=T0 - 1))
    early_a = store.enqueue(job(run_at=T0 - 10))
    early_b = store.enqueue(job(run_at=T0 - 10))
    claimed = [claim(store) for _ in range(4)]
    assert [ids(c) for c in claimed] == [[early_a], [early_b], [late], []]


def test_not_yet_due_jobs_are_not_claimed(store: Store) -> None:
    due = store.enqueue(job(run_at=T0))
    future = store.enqueue(job(run_at=T0 + 0.5))
    assert ids(claim(store, limit=10)) == [due]
    assert claim(store) == []
    assert ids(claim(store, now=T0 + 0.5)) == [future]


def test_limit_claims_several_in_order(store: Store) -> None:
    new = [store.enqueue(job(run_at=T0 - i)) for i in range(5)]  # later ids are older
    assert ids(claim(store, "w2", limit=3)) == [new[4], new[3], new[2]]
    assert ids(claim(store, "w2", limit=3)) == [new[1], new[0]]


def test_claim_with_nothing_to_do_is_empty(store: Store) -> None:
    store.enqueue(job())
    assert store.claim("w1", now=T0, lease=LEASE, limit=0) == ([], [])
    assert store.stats().pending == 1


def test_claim_sets_lease_fields_and_counts_attempts(store: Store) -> None:
    job_id = store.enqueue(job())
    (row,) = claim(store, "w3", now=T0 + 1)
    assert (row.status, row.locked_by, row.locked_at, row.lease_until, row.attempts) == (
        JobStatus.RUNNING,
        "w3",
        T0 + 1,
        T0 + 1 + LEASE,
        1,
    )
    assert store.get(job_id) == row
    assert record(store, job_id, 1, owner="w3", now=T0 + 1.5, error="boom", retry_at=T0 + 2)
    (again,) = claim(store, "w3", now=T0 + 2)
    assert again.attempts == 2


def test_a_success_marks_done(store: Store) -> None:
    job_id = store.enqueue(job())
    (row,) = claim(store)
    assert record(store, job_id, row.attempts, now=T0 + 3)
    done = store.get(job_id)
    assert done is not None
    assert (done.status, done.finished_at, done.lease_until) == (JobStatus.DONE, T0 + 3, None)
    assert not record(store, job_id, row.attempts, now=T0 + 4)


def test_outcomes_are_fenced_by_owner(store: Store) -> None:
    """Only the owner holding the claim records its outcome, whatever the attempt."""
    job_id = store.enqueue(job())
    (row,) = claim(store, "w1")
    before = store.get(job_id)
    assert not record(store, job_id, row.attempts, owner="w2")
    assert not record(store, job_id, row.attempts, owner="w2", error="x", retry_at=None)
    assert store.get(job_id) == before
    assert record(store, job_id, row.attempts, owner="w1")


def test_an_outcome_of_a_superseded_run_is_fenced(store: Store) -> None:
    job_id = store.enqueue(job())
    register(store, "w1")
    claim(store, "w1")
    assert store.recover(["w1"], now=T0 + 2) == 1  # a peer judged w1 dead
    (second,) = claim(store, "w2", now=T0 + 2)
    before = store.get(job_id)
    assert not record(store, job_id, 1, owner="w1", now=T0 + 3)
    assert not record(store, job_id, 1, owner="w1", now=T0 + 3, error="late")
    assert store.get(job_id) == before
    assert record(store, job_id, second.attempts, owner="w2", now=T0 + 4)


def test_the_same_owner_claiming_again_fences_its_older_attempt(store: Store) -> None:
    """A worker presumed dead re-registers and claims its old job again: the late outcome
    of its first run must not settle the second."""
    job_id = store.enqueue(job())
    register(store, "w1")
    claim(store, "w1")
    store.recover(["w1"], now=T0 + 1)
    register(store, "w1", at=T0 + 2)
    (again,) = claim(store, "w1", now=T0 + 2)
    assert again.attempts == 2
    assert not record(store, job_id, 1, owner="w1", now=T0 + 3)
    assert store.get(job_id).status is JobStatus.RUNNING  # type: ignore[union-attr]


def test_claim_records_then_claims_in_order(store: Store) -> None:
    first, other, later, second = store.enqueue_many(
        [job(run_at=T0), job(run_at=T0), job(run_at=T0 + 100), job(run_at=T0 + 1)]
    )
    rows = claim(store, limit=2)
    assert ids(rows) == [first, other]
    recorded, claimed = store.claim(
        "w1",
        now=T0 + 3,
        lease=LEASE,
        limit=2,
        settle=[Settlement(rows[0].id, 1), Settlement(rows[1].id, 1, "ValueError: x", None)],
    )
    assert recorded == [True, True]
    assert store.get(first).status is JobStatus.DONE  # type: ignore[union-attr]
    assert store.get(other).status is JobStatus.FAILED  # type: ignore[union-attr]
    assert ids(claimed) == [second]  # `later` is not due yet
    assert (claimed[0].locked_by, claimed[0].attempts) == ("w1", 1)
    assert claimed[0].lease_until == T0 + 3 + LEASE
    assert store.get(later).status is JobStatus.PENDING  # type: ignore[union-attr]


def test_claim_fences_each_outcome_and_still_claims(store: Store) -> None:
    first, kept, second = store.enqueue_many([job(), job(), job()])
    register(store, "w1")
    claim(store, "w1", limit=2)
    store.recover(["w1"], now=T0 + 2)
    claim(store, "w2", now=T0 + 2)  # w2 takes `first` over
    register(store, "w1", at=T0 + 2)
    (again,) = claim(store, "w1", now=T0 + 2)
    assert again.id == kept
    recorded, claimed = store.claim(
        "w1",
        now=T0 + 3,
        lease=LEASE,
        limit=1,
        settle=[Settlement(first, 1), Settlement(kept, again.attempts)],
    )
    assert recorded == [False, True]  # w2 holds attempt 2 of `first`
    assert store.get(first).status is JobStatus.RUNNING  # type: ignore[union-attr]
    assert ids(claimed) == [second]


def test_an_outcome_for_a_pending_job_is_refused(store: Store) -> None:
    job_id = store.enqueue(job())
    assert not record(store, job_id, 0)
    assert store.get(job_id).status is JobStatus.PENDING  # type: ignore[union-attr]


def test_a_failure_with_retry_at_goes_back_to_pending(store: Store) -> None:
    job_id = store.enqueue(job())
    claim(store)
    assert record(store, job_id, 1, now=T0 + 1, error="ValueError: nope", retry_at=T0 + 60)
    row = store.get(job_id)
    assert row is not None
    assert (row.status, row.run_at, row.last_error, row.attempts) == (
        JobStatus.PENDING,
        T0 + 60,
        "ValueError: nope",
        1,
    )
    assert (row.locked_by, row.locked_at, row.lease_until, row.finished_at) == (None,) * 4
    assert claim(store, now=T0 + 59) == []
    assert ids(claim(store, now=T0 + 60)) == [job_id]


def test_a_failure_without_retry_at_is_final(store: Store) -> None:
    job_id = store.enqueue(job())
    claim(store)
    assert record(store, job_id, 1, now=T0 + 2, error="boom")
    row = store.get(job_id)
    assert row is not None
    assert (row.status, row.finished_at, row.last_error, row.lease_until) == (
        JobStatus.FAILED,
        T0 + 2,
        "boom",
        None,
    )
    assert claim(store, now=T0 + 1000) == []


def test_recover_requeues_only_the_dead_owners_jobs(store: Store) -> None:
    a = store.enqueue(job())
    b = store.enqueue(job())
    register(store, "w1")
    register(store, "w2")
    claim(store, "w1")
    claim(store, "w2")
    assert store.recover(["w1"], now=T0 + 1) == 1
    row_a, row_b = store.get(a), store.get(b)
    assert row_a is not None
    assert row_b is not None
    assert (row_a.status, row_a.locked_by, row_a.lease_until, row_a.attempts) == (
        JobStatus.PENDING,
        None,
        None,
        1,
    )
    assert (row_b.status, row_b.locked_by) == (JobStatus.RUNNING, "w2")
    assert store.recover(["w1"], now=T0 + 1) == 0
    # The dead owner is marked stopped: its next heartbeat learns it was presumed dead.
    assert store.heartbeat("w1", now=T0 + 2) is False
    assert store.heartbeat("w2", now=T0 + 2) is True


def test_a_live_owners_jobs_are_never_recovered_even_past_their_lease(store: Store) -> None:
    """The two-supervisor bug: a lease past its end (a clock step, a slow renewal) never
    hands a live owner's running job to another worker."""
    job_id = store.enqueue(job())
    register(store, "w1")
    claim(store, "w1", lease=5.0)
    assert store.recover([], now=T0 + 1000) == 0
    assert store.get(job_id).status is JobStatus.RUNNING  # type: ignore[union-attr]


def test_an_ownerless_run_falls_back_to_its_lease(store: Store) -> None:
    """A run whose owner has no live row (never registered, its row purged) is recovered
    once its lease has ended, strictly."""
    short = store.enqueue(job())
    long = store.enqueue(job())
    claim(store, "ghost-1", lease=5.0)
    claim(store, "ghost-2", lease=50.0)
    assert store.recover([], now=T0 + 5.0) == 0  # lease_until < now, strictly
    assert store.recover([], now=T0 + 6.0) == 1
    assert store.get(short).status is JobStatus.PENDING  # type: ignore[union-attr]
    assert store.get(long).status is JobStatus.RUNNING  # type: ignore[union-attr]


def test_a_job_whose_runs_kill_their_worker_fails_at_max_crashes(store: Store) -> None:
    """A poison job (os._exit, a segfault, the OOM killer) takes down every worker that runs
    it; each re-queue after such a death counts, and the third ends it `failed`."""
    poison = store.enqueue(job())
    now = T0
    for crash in (1, 2, 3):
        owner = f"w{crash}"
        register(store, owner, at=now)
        assert ids(claim(store, owner, now=now, lease=5.0)) == [poison]
        now += 10.0
        assert store.recover([owner], now=now) == 1
        row = store.get(poison)
        assert row is not None
        if crash < 3:
            assert (row.status, row.last_error) == (JobStatus.PENDING, None)
    assert (row.status, row.finished_at, row.attempts) == (JobStatus.FAILED, now, 3)
    assert row.last_error is not None
    assert row.last_error.startswith("WorkerLostError: the worker running this job died during 3")
    assert claim(store, now=now, lease=5.0) == []


def test_max_crashes_comes_from_the_jobs_options(store: Store) -> None:
    once = store.enqueue(NewJob("app.Job", "[]", '{"max_crashes": 1}', T0, T0))
    register(store, "w1")
    claim(store, "w1")
    store.recover(["w1"], now=T0 + 1)
    assert store.get(once).status is JobStatus.FAILED  # type: ignore[union-attr]


def test_heartbeat_renews_only_the_owners_running_jobs(store: Store) -> None:
    mine = store.enqueue(job())
    theirs = store.enqueue(job())
    claim(store, "w1", lease=5.0)
    claim(store, "w2", lease=5.0)
    register(store, "w1")
    assert store.heartbeat("w1", now=T0 + 1, renew=[mine, theirs], lease_until=T0 + 100)
    assert store.get(mine).lease_until == T0 + 100  # type: ignore[union-attr]
    assert store.get(theirs).lease_until == T0 + 5.0  # type: ignore[union-attr]
    assert store.heartbeat("w1", now=T0 + 2)  # nothing to renew: still a heartbeat


def test_a_heartbeat_refused_renews_nothing(store: Store) -> None:
    """An owner marked stopped (presumed dead) must not extend leases it no longer holds."""
    job_id = store.enqueue(job())
    claim(store, "w1", lease=5.0)
    assert store.heartbeat("w1", now=T0 + 1, renew=[job_id], lease_until=T0 + 100) is False
    assert store.get(job_id).lease_until == T0 + 5.0  # type: ignore[union-attr]


def test_a_graceful_stop_releases_what_its_owner_holds(store: Store) -> None:
    mine = store.enqueue(job())
    theirs = store.enqueue(job())
    register(store, "w1")
    register(store, "w2")
    claim(store, "w1")
    claim(store, "w2")
    assert store.stop_worker("w1", now=T0 + 5) == 1
    row = store.get(mine)
    assert row is not None
    # Released, not crashed: pending again at once, its attempts kept (they fence it).
    assert (row.status, row.locked_by, row.attempts, row.last_error) == (
        JobStatus.PENDING,
        None,
        1,
        None,
    )
    assert store.get(theirs).status is JobStatus.RUNNING  # type: ignore[union-attr]
    assert [w.stopped_at for w in store.list_workers() if w.owner == "w1"] == [T0 + 5]
    for _ in range(5):  # releases never count toward max_crashes
        register(store, "w1")
        claim(store, "w1")
        store.stop_worker("w1", now=T0 + 6)
    assert store.get(mine).status is JobStatus.PENDING  # type: ignore[union-attr]


def test_purge_removes_only_old_done_jobs(store: Store) -> None:
    old, new, failed, pending = (store.enqueue(job()) for _ in range(4))
    claim(store, limit=3)
    record(store, old, 1, now=T0 + 10)
    record(store, new, 1, now=T0 + 20)
    record(store, failed, 1, now=T0 + 10, error="x")
    assert store.purge(done_before=T0 + 10, workers_before=0) == 0  # strictly before
    assert store.purge(done_before=T0 + 15, workers_before=0) == 1
    assert store.get(old) is None
    assert [store.get(i) is not None for i in (new, failed, pending)] == [True, True, True]


def test_purged_ids_are_never_reused(store: Store) -> None:
    first = store.enqueue(job())
    claim(store)
    record(store, first, 1)
    assert store.purge(done_before=T0 + 1, workers_before=0) == 1
    assert store.enqueue(job()) > first


def test_retry_only_requeues_failed_jobs(store: Store) -> None:
    failed, done, pending = (store.enqueue(job()) for _ in range(3))
    claim(store, limit=2)
    record(store, failed, 1, now=T0 + 1, error="boom")
    record(store, done, 1, now=T0 + 1)
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
    claim(store, limit=3)
    record(store, a, 1)
    record(store, b, 1, error="x")
    stats = store.stats()
    assert (stats.pending, stats.running, stats.done, stats.failed, stats.total) == (2, 1, 1, 1, 5)
    assert stats.oldest_pending_run_at == T0 + 7
    assert store.get(c).status is JobStatus.RUNNING  # type: ignore[union-attr]


def test_next_run_at(store: Store) -> None:
    assert store.next_run_at() is None
    store.enqueue(job(run_at=T0 + 30))
    store.enqueue(job(run_at=T0 + 10))
    assert store.next_run_at() == T0 + 10
    claim(store, now=T0 + 10)
    assert store.next_run_at() == T0 + 30


def test_list_jobs_newest_first_with_status_filter(store: Store) -> None:
    a, b, c = (store.enqueue(job()) for _ in range(3))
    claim(store)
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
        seen += ids(claim(who, f"w{step % 3}", limit=step % 3 + 1))
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
    assert store.purge(done_before=0, workers_before=T0 + 50) == 0  # no jobs; 2 rows

    assert [w.owner for w in store.list_workers()] == ["live"]


def test_a_success_clears_the_error_of_an_earlier_attempt(store: Store) -> None:
    """A done job showed the last_error of a failed attempt before it, as if it had failed."""
    job_id = store.enqueue(job())
    (first,) = claim(store)
    record(store, job_id, first.attempts, error="RuntimeError: once", retry_at=T0 + 1)
    (second,) = claim(store, now=T0 + 2)
    assert second.last_error == "RuntimeError: once"  # visible while it runs again
    assert record(store, job_id, second.attempts, now=T0 + 3)
    done = store.get(job_id)
    assert done is not None
    assert (done.status, done.last_error) == (JobStatus.DONE, None)
