"""Stateful model test: a real SqliteStore on a temp file against a plain in-memory queue model.

Sync rules only (async rules are unsupported by hypothesis); time is an explicit `now` the
machine advances. Three owners claim, record (fenced by owner and attempt), get judged dead
(`recover`), re-register and stop. Invariants: nothing lost, nothing claimed twice while
running, a live owner's job never recovered, claims in (run_at, id) order and only when
due, and every row agrees with the model.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from property_tests.profiles import scaled
from reference.options import DEFAULT_MAX_CRASHES
from reference.records import JobStatus, NewJob, Settlement, WorkerRow
from reference.sqlite_store import SqliteStore

T0 = 1_700_000_000.0
# Hypothesis draws the simplest value most often, so the common case goes first.
STALE = st.sampled_from([False, False, False, True])


@dataclass
class ModelJob:
    """What the model believes about one job."""

    run_at: float
    status: JobStatus = JobStatus.PENDING
    attempts: int = 0
    locked_by: str | None = None
    lease_until: float | None = None
    finished_at: float | None = None
    crashes: int = 0  # re-queues after its worker died; at DEFAULT_MAX_CRASHES it fails


class StoreMachine(RuleBasedStateMachine):
    """Drive SqliteStore and the model with the same operations; compare after each step."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="store-model-")
        self.store = SqliteStore(Path(self.dir) / "queue.db")
        self.now = T0
        self.jobs: dict[int, ModelJob] = {}
        self.purged: set[int] = set()
        self.max_id = 0
        self.live: set[str] = set()  # owners with a live row
        for worker in (1, 2, 3):
            self.register(worker)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers ------------------------------------------------------------------------

    def _added(self, job_id: int, run_at: float) -> None:
        assert job_id > self.max_id, "ids must grow and never be reused"
        self.max_id = job_id
        self.jobs[job_id] = ModelJob(run_at=run_at)

    def _with(self, status: JobStatus) -> list[int]:
        return [i for i, j in self.jobs.items() if j.status is status]

    def _pick(self, data: st.DataObject, prefer: JobStatus) -> int:
        """Mostly a job of status `prefer`, sometimes any job (to exercise the False paths)."""
        pool = sorted(self._with(prefer))
        if not pool or data.draw(st.integers(0, 4)) == 4:
            pool = sorted(self.jobs)
        return data.draw(st.sampled_from(pool))

    def _record(self, owner: str, job_id: int, attempt: int, **outcome: object) -> bool:
        settle = Settlement(job_id, attempt, **outcome)  # type: ignore[arg-type]
        (ok,), rows = self.store.claim(owner, now=self.now, lease=1, limit=0, settle=[settle])
        assert rows == []
        return ok

    def _requeue(self, job_ids: list[int]) -> None:
        """Each re-queue is a crash of the job's worker; the last allowed one fails it."""
        for i in job_ids:
            j = self.jobs[i]
            j.crashes += 1
            j.locked_by, j.lease_until = None, None
            if j.crashes >= DEFAULT_MAX_CRASHES:
                j.status, j.finished_at = JobStatus.FAILED, self.now
            else:
                j.status = JobStatus.PENDING

    # -- rules --------------------------------------------------------------------------

    @rule(offset=st.integers(-10, 15))
    def enqueue(self, offset: int) -> None:
        run_at = self.now + offset
        self._added(self.store.enqueue(NewJob("m.Job", "[]", "{}", run_at, self.now)), run_at)

    @rule(offsets=st.lists(st.integers(-5, 10), max_size=4))
    def enqueue_many(self, offsets: list[int]) -> None:
        run_ats = [self.now + o for o in offsets]
        new_ids = self.store.enqueue_many(
            [NewJob("m.Job", "[]", "{}", r, self.now) for r in run_ats]
        )
        assert len(new_ids) == len(run_ats)
        for job_id, run_at in zip(new_ids, run_ats, strict=True):
            self._added(job_id, run_at)

    @rule(dt=st.integers(1, 20))
    def advance(self, dt: int) -> None:
        self.now += dt

    @rule(worker=st.integers(1, 3))
    def register(self, worker: int) -> None:
        owner = f"w{worker}"
        self.store.register_worker(WorkerRow(owner, "h", worker, worker, "*", self.now, self.now))
        self.live.add(owner)

    @rule(worker=st.integers(1, 3), limit=st.integers(1, 3), lease=st.integers(1, 30))
    def fetch(self, worker: int, limit: int, lease: int) -> None:
        owner = f"w{worker}"
        due = sorted(
            (j.run_at, i)
            for i, j in self.jobs.items()
            if j.status is JobStatus.PENDING and j.run_at <= self.now
        )
        expected = [i for _, i in due[:limit]]
        rows = self.store.claim(owner, now=self.now, lease=lease, limit=limit)[1]
        assert [r.id for r in rows] == expected, "claims follow (run_at, id) among due jobs"
        for r in rows:
            j = self.jobs[r.id]
            assert j.status is JobStatus.PENDING, "a running job was claimed again"
            j.status, j.locked_by, j.lease_until = JobStatus.RUNNING, owner, self.now + lease
            j.attempts += 1
            assert (r.status, r.locked_by, r.attempts) == (JobStatus.RUNNING, owner, j.attempts)
            assert (r.locked_at, r.lease_until) == (self.now, self.now + lease)

    @precondition(lambda self: bool(self._with(JobStatus.RUNNING)))
    @rule(data=st.data(), stale=STALE, other=STALE)
    def complete(self, data: st.DataObject, stale: bool, other: bool) -> None:
        job_id = self._pick(data, JobStatus.RUNNING)
        j = self.jobs[job_id]
        attempt = j.attempts - 1 if stale else j.attempts
        owner = "w-other" if other or j.locked_by is None else j.locked_by
        ok = self._record(owner, job_id, attempt)
        assert ok == (j.status is JobStatus.RUNNING and not stale and owner == j.locked_by)
        if ok:
            j.status, j.finished_at, j.lease_until = JobStatus.DONE, self.now, None

    @precondition(lambda self: bool(self._with(JobStatus.RUNNING)))
    @rule(
        data=st.data(),
        stale=STALE,
        retry_in=st.none() | st.integers(0, 15),
    )
    def fail(self, data: st.DataObject, stale: bool, retry_in: int | None) -> None:
        job_id = self._pick(data, JobStatus.RUNNING)
        j = self.jobs[job_id]
        attempt = j.attempts - 1 if stale else j.attempts
        retry_at = None if retry_in is None else self.now + retry_in
        owner = j.locked_by or "w1"
        ok = self._record(owner, job_id, attempt, error="err", retry_at=retry_at)
        assert ok == (j.status is JobStatus.RUNNING and not stale and owner == j.locked_by)
        if not ok:
            return
        j.lease_until = None
        if retry_at is None:
            j.status, j.finished_at = JobStatus.FAILED, self.now
        else:
            j.status, j.run_at, j.locked_by = JobStatus.PENDING, retry_at, None

    def _ownerless_expired(self) -> list[int]:
        return [
            i
            for i in self._with(JobStatus.RUNNING)
            if self.jobs[i].locked_by not in self.live
            and (lease := self.jobs[i].lease_until) is not None
            and lease < self.now
        ]

    @rule(worker=st.integers(1, 3))
    def recover_dead_owner(self, worker: int) -> None:
        owner = f"w{worker}"
        mine = [i for i in self._with(JobStatus.RUNNING) if self.jobs[i].locked_by == owner]
        self.live.discard(owner)
        expected = sorted({*mine, *self._ownerless_expired()})
        assert self.store.recover([owner], now=self.now) == len(expected)
        self._requeue(expected)

    @rule()
    def recover_nobody_dead(self) -> None:
        """Only ownerless runs past their lease: a live owner's job is never touched."""
        expired = self._ownerless_expired()
        assert self.store.recover([], now=self.now) == len(expired)
        self._requeue(expired)

    @rule(worker=st.integers(1, 3))
    def graceful_stop(self, worker: int) -> None:
        owner = f"w{worker}"
        mine = [i for i in self._with(JobStatus.RUNNING) if self.jobs[i].locked_by == owner]
        assert self.store.stop_worker(owner, now=self.now) == len(mine)
        self.live.discard(owner)
        for i in mine:  # released: pending again, no crash, attempts kept
            j = self.jobs[i]
            j.status, j.locked_by, j.lease_until = JobStatus.PENDING, None, None

    @rule(age=st.integers(0, 30))
    def purge(self, age: int) -> None:
        cutoff = self.now - age
        old = [
            i
            for i in self._with(JobStatus.DONE)
            if (done_at := self.jobs[i].finished_at) is not None and done_at < cutoff
        ]
        assert self.store.purge(done_before=cutoff, workers_before=0) == len(old)
        for i in old:
            del self.jobs[i]
            self.purged.add(i)

    @precondition(lambda self: bool(self._with(JobStatus.FAILED)))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        job_id = self._pick(data, JobStatus.FAILED)
        j = self.jobs[job_id]
        ok = self.store.retry(job_id, now=self.now)
        assert ok == (j.status is JobStatus.FAILED)
        if ok:
            j.status, j.run_at, j.attempts, j.finished_at = JobStatus.PENDING, self.now, 0, None
            j.locked_by, j.crashes = None, 0

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def rows_agree_with_model(self) -> None:
        rows = {r.id: r for r in self.store.list_jobs(limit=1_000_000)}
        assert set(rows) == set(self.jobs), "a job was lost or appeared from nowhere"
        assert not set(rows) & self.purged
        for job_id, j in self.jobs.items():
            r = rows[job_id]
            got = (r.status, r.run_at, r.attempts, r.locked_by, r.lease_until, r.finished_at)
            want = (j.status, j.run_at, j.attempts, j.locked_by, j.lease_until, j.finished_at)
            assert got == want, f"job {job_id}: store {got} != model {want}"

    @invariant()
    def stats_agree_with_model(self) -> None:
        stats = self.store.stats()
        counts = tuple(len(self._with(s)) for s in JobStatus)
        assert (stats.pending, stats.running, stats.done, stats.failed) == counts
        pending = [self.jobs[i].run_at for i in self._with(JobStatus.PENDING)]
        assert stats.oldest_pending_run_at == (min(pending) if pending else None)
        assert self.store.next_run_at() == stats.oldest_pending_run_at


StoreMachine.TestCase.settings = settings(
    max_examples=scaled(150),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStoreModel = StoreMachine.TestCase
