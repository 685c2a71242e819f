"""The queue-history invariants on hand-written traces: each accepts the good history and
names the bad one."""

from __future__ import annotations

from reference.options import JobOptions
from reference.records import LogEvent
from sim import invariants
from sim.trace import Trace

EPOCH = 1_000_000.0


class _Now:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def _trace() -> tuple[Trace, _Now]:
    now = _Now()
    return Trace(now), now


def wall(ns: int) -> float:
    return EPOCH + ns / invariants.NS


def _at(now: _Now, seconds: float) -> None:
    now.ns = round(seconds * invariants.NS)


def test_a_claim_before_run_at_is_caught_and_one_at_run_at_is_not() -> None:
    trace, now = _trace()
    trace.emit(0, LogEvent.JOB_ENQUEUED.value, {"job_id": 1, "run_at": EPOCH + 10})
    trace.emit(0, LogEvent.JOB_ENQUEUED.value, {"job_id": 2, "run_at": EPOCH + 20})
    _at(now, 10)
    trace.emit(1, LogEvent.JOB_CLAIMED.value, {"job_id": 1, "attempt": 1, "run_at": EPOCH + 10})
    assert invariants.no_start_before_run_at(trace, wall).ok
    _at(now, 19.5)
    trace.emit(1, LogEvent.JOB_CLAIMED.value, {"job_id": 2, "attempt": 1, "run_at": EPOCH + 20})
    check = invariants.no_start_before_run_at(trace, wall)
    assert not check.ok
    assert "job 2 claimed 0.500 s early" in check.detail


def test_claims_out_of_order_in_a_batch_or_past_an_older_due_job_are_caught() -> None:
    trace, now = _trace()
    for job in (1, 2, 3):
        trace.emit(0, LogEvent.JOB_ENQUEUED.value, {"job_id": job, "run_at": EPOCH})
    _at(now, 5)
    trace.emit(1, LogEvent.JOB_CLAIMED.value, {"job_id": 1, "attempt": 1, "run_at": EPOCH})
    trace.emit(1, LogEvent.JOB_CLAIMED.value, {"job_id": 2, "attempt": 1, "run_at": EPOCH})
    assert invariants.claims_in_order(trace, wall).ok
    reversed_batch, now2 = _trace()
    for job in (1, 2):
        reversed_batch.emit(0, LogEvent.JOB_ENQUEUED.value, {"job_id": job, "run_at": EPOCH})
    _at(now2, 5)
    reversed_batch.emit(1, LogEvent.JOB_CLAIMED.value, {"job_id": 2, "attempt": 1, "run_at": EPOCH})
    reversed_batch.emit(1, LogEvent.JOB_CLAIMED.value, {"job_id": 1, "attempt": 1, "run_at": EPOCH})
    assert not invariants.claims_in_order(reversed_batch, wall).ok
    # Job 3 is due and older than 4: claiming 4 alone skips it.
    trace.emit(0, LogEvent.JOB_ENQUEUED.value, {"job_id": 4, "run_at": EPOCH})
    _at(now, 6)
    trace.emit(2, LogEvent.JOB_CLAIMED.value, {"job_id": 4, "attempt": 1, "run_at": EPOCH})
    check = invariants.claims_in_order(trace, wall)
    assert not check.ok
    assert "older due job 3" in check.detail


def test_a_not_yet_due_older_job_may_wait() -> None:
    trace, now = _trace()
    trace.emit(0, LogEvent.JOB_ENQUEUED.value, {"job_id": 1, "run_at": EPOCH + 100})
    trace.emit(0, LogEvent.JOB_ENQUEUED.value, {"job_id": 2, "run_at": EPOCH})
    _at(now, 1)
    trace.emit(1, LogEvent.JOB_CLAIMED.value, {"job_id": 2, "attempt": 1, "run_at": EPOCH})
    assert invariants.claims_in_order(trace, wall).ok


def test_a_completion_from_a_superseded_attempt_is_caught() -> None:
    trace, _ = _trace()
    trace.emit(1, LogEvent.JOB_CLAIMED.value, {"job_id": 7, "attempt": 1, "run_at": EPOCH})
    trace.emit(2, LogEvent.JOB_CLAIMED.value, {"job_id": 7, "attempt": 2, "run_at": EPOCH})
    trace.emit(1, LogEvent.JOB_SUPERSEDED.value, {"job_id": 7, "attempt": 1})
    assert invariants.no_stale_outcome(trace).ok
    trace.emit(1, LogEvent.JOB_COMPLETED.value, {"job_id": 7, "attempt": 1})
    check = invariants.no_stale_outcome(trace)
    assert not check.ok
    assert "attempt 1 after attempt 2" in check.detail


def test_retry_spacing_holds_the_retry_to_its_backoff_window() -> None:
    options = JobOptions.parse({"retry_delay": 4, "backoff": "exponential", "jitter": 0.25})
    assert invariants.retry_window(options, 1) == (3.0, 5.0)
    assert invariants.retry_window(options, 3) == (12.0, 20.0)

    def history(retry_at: float) -> Trace:
        trace, now = _trace()
        trace.emit(1, LogEvent.JOB_CLAIMED.value, {"job_id": 3, "attempt": 1, "run_at": EPOCH})
        _at(now, 10)
        trace.emit(1, LogEvent.JOB_FAILED.value, {"label": "W#3", "error": "boom"})
        _at(now, 10.4)  # the settle's write, after a store retry
        trace.emit(1, LogEvent.JOB_RETRY_SCHEDULED.value, {"job_id": 3, "attempt": 1})
        _at(now, 30)
        trace.emit(
            2,
            LogEvent.JOB_CLAIMED.value,
            {"name": "W", "job_id": 3, "attempt": 2, "run_at": retry_at},
        )
        return trace

    policies = {"W": options}
    assert invariants.retry_spacing(history(EPOCH + 10 + 4.5), wall, policies).ok
    late = invariants.retry_spacing(history(EPOCH + 10 + 8.0), wall, policies)
    assert not late.ok
    assert "window [3.000, 5.000]" in late.detail
    assert not invariants.retry_spacing(history(EPOCH + 11.0), wall, policies).ok
    assert invariants.retry_spacing(history(EPOCH + 11.0), wall, {}).ok  # policy unknown


def _fire(trace: Trace, now: _Now, at: float, host: int, entry: str, tick: float) -> None:
    _at(now, at)
    trace.emit(host, LogEvent.ENTRY_FIRED.value, {"entry": entry, "tick": tick, "worker": host})


def test_a_tick_fired_twice_is_caught_even_by_two_hosts() -> None:
    trace, now = _trace()
    _fire(trace, now, 10, 1, "e", EPOCH + 10)
    _fire(trace, now, 20, 2, "e", EPOCH + 20)
    _fire(trace, now, 20, 1, "other", EPOCH + 20)  # another entry's tick of the same value
    assert invariants.each_tick_fires_once(trace).ok
    _fire(trace, now, 20, 1, "e", EPOCH + 20)
    check = invariants.each_tick_fires_once(trace)
    assert not check.ok
    assert "e tick" in check.detail
    assert "by host 2 and again by host 1" in check.detail


def test_a_gap_between_fires_longer_than_allowed_is_caught() -> None:
    trace, now = _trace()
    for at in (10, 20, 30):
        _fire(trace, now, at, 1, "e", EPOCH + at)
    assert invariants.fire_gaps(trace, "e", most=10, start=0, end=40).ok
    check = invariants.fire_gaps(trace, "e", most=10, start=0, end=55)  # 25 s unfired at the end
    assert not check.ok
    assert "longest gap 25.000 s over 3 fires" in check.detail
