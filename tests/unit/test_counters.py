"""Unit tests for reference.counters: `BufferCounters` over a bytearray and `NullCounters`."""

from __future__ import annotations

import pytest

from reference.counters import (
    FIELDS,
    SEGMENT_SIZE,
    BufferCounters,
    Counters,
    NullCounters,
    Outcome,
    Snapshot,
)


def _zero(worker: int) -> Snapshot:
    return Snapshot.unpack(worker, bytes(SEGMENT_SIZE))


def test_fresh_segment_reads_as_zero() -> None:
    counters = BufferCounters(bytearray(SEGMENT_SIZE), 0, worker=3)
    snap = counters.snapshot()
    assert snap == _zero(3)
    assert snap.worker == 3
    assert snap.last_run_at == 0.0


def test_started_counts_a_run_and_an_active_job() -> None:
    counters = BufferCounters(bytearray(SEGMENT_SIZE), 0, worker=1)
    counters.started(1_700_000_000.5)
    snap = counters.snapshot()
    assert (snap.total_runs, snap.active_jobs) == (1, 1)
    assert snap.last_run_at == 1_700_000_000.5
    assert (snap.total_successes, snap.total_failures, snap.total_timeouts) == (0, 0, 0)


@pytest.mark.parametrize(
    ("outcome", "field"),
    [
        (Outcome.SUCCESS, "total_successes"),
        (Outcome.FAILURE, "total_failures"),
        (Outcome.TIMEOUT, "total_timeouts"),
    ],
)
def test_finished_counts_exactly_one_outcome(outcome: Outcome, field: str) -> None:
    counters = BufferCounters(bytearray(SEGMENT_SIZE), 0, worker=1)
    counters.started(10.0)
    counters.finished(outcome, 42.25)
    snap = counters.snapshot()
    outcomes = {
        "total_successes": snap.total_successes,
        "total_failures": snap.total_failures,
        "total_timeouts": snap.total_timeouts,
    }
    assert outcomes.pop(field) == 1
    assert set(outcomes.values()) == {0}
    assert snap.active_jobs == 0
    assert snap.total_runs == 1
    assert snap.last_duration_ms == 42.25
    assert snap.last_run_at == 10.0


def test_arithmetic_over_interleaved_runs() -> None:
    counters = BufferCounters(bytearray(SEGMENT_SIZE), 0, worker=2)
    for i in range(5):
        counters.started(100.0 + i)
    assert counters.snapshot().active_jobs == 5
    for outcome in (Outcome.SUCCESS, Outcome.SUCCESS, Outcome.FAILURE, Outcome.TIMEOUT):
        counters.finished(outcome, 7.0)
    counters.skipped()
    counters.skipped()
    snap = counters.snapshot()
    assert snap == Snapshot(
        worker=2,
        total_runs=5,
        total_successes=2,
        total_failures=1,
        total_timeouts=1,
        total_skips=2,
        active_jobs=1,
        last_run_at=104.0,
        last_duration_ms=7.0,
        free_slots=0,
    )


def test_skipped_is_not_a_run() -> None:
    counters = BufferCounters(bytearray(SEGMENT_SIZE), 0, worker=1)
    counters.skipped()
    snap = counters.snapshot()
    assert (snap.total_skips, snap.total_runs, snap.active_jobs) == (1, 0, 0)


def test_capacity_is_set_not_added() -> None:
    counters = BufferCounters(bytearray(SEGMENT_SIZE), 0, worker=1)
    counters.set_capacity(2)
    counters.set_capacity(1)
    assert counters.snapshot().free_slots == 1


def test_reset_zeroes_only_its_own_segment() -> None:
    buf = bytearray(3 * SEGMENT_SIZE)
    left = BufferCounters(buf, 0, worker=1)
    middle = BufferCounters(buf, SEGMENT_SIZE, worker=2)
    right = BufferCounters(buf, 2 * SEGMENT_SIZE, worker=3)
    for c in (left, middle, right):
        c.started(5.0)
        c.finished(Outcome.SUCCESS, 1.0)
        c.set_capacity(4)
    middle.reset()
    assert middle.snapshot() == _zero(2)
    assert left.snapshot().total_runs == 1
    assert right.snapshot().total_successes == 1
    assert bytes(buf[SEGMENT_SIZE : 2 * SEGMENT_SIZE]) == bytes(SEGMENT_SIZE)


def test_segments_are_independent_and_within_bounds() -> None:
    buf = bytearray(2 * SEGMENT_SIZE)
    first = BufferCounters(buf, 0, worker=1)
    second = BufferCounters(buf, SEGMENT_SIZE, worker=2)
    first.started(1.0)
    second.skipped()
    assert (first.snapshot().total_runs, first.snapshot().total_skips) == (1, 0)
    assert (second.snapshot().total_runs, second.snapshot().total_skips) == (0, 1)


def test_layout_fits_a_segment_with_aligned_fields() -> None:
    # Eight bytes per field keeps every field aligned, so readers never see a torn value.
    assert len(FIELDS) * 8 <= SEGMENT_SIZE
    assert SEGMENT_SIZE % 64 == 0


def test_memoryview_buffer_is_written_in_place() -> None:
    raw = bytearray(SEGMENT_SIZE)
    counters = BufferCounters(memoryview(raw), 0, worker=1)
    counters.started(2.0)
    assert Snapshot.unpack(1, bytes(raw)).total_runs == 1


@pytest.mark.parametrize(
    ("size", "offset"),
    [(SEGMENT_SIZE - 1, 0), (SEGMENT_SIZE, 1), (2 * SEGMENT_SIZE, SEGMENT_SIZE + 8), (512, -1)],
)
def test_segment_must_fit_the_buffer(size: int, offset: int) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        BufferCounters(bytearray(size), offset, worker=1)


def test_repr_names_worker_and_offset() -> None:
    counters = BufferCounters(bytearray(2 * SEGMENT_SIZE), SEGMENT_SIZE, worker=2)
    assert repr(counters) == f"BufferCounters(worker=2, offset={SEGMENT_SIZE})"


def test_null_counters_accept_every_call_and_hold_nothing() -> None:
    null = NullCounters()
    null.started(1.0)
    null.finished(Outcome.FAILURE, 3.0)
    null.skipped()
    null.set_capacity(9)
    assert repr(null) == "NullCounters()"
    assert not hasattr(null, "__dict__")


def test_both_implementations_satisfy_the_protocol() -> None:
    implementations: list[Counters] = [
        NullCounters(),
        BufferCounters(bytearray(SEGMENT_SIZE), 0, worker=1),
    ]
    for counters in implementations:
        counters.started(0.0)
        counters.finished(Outcome.SUCCESS, 0.0)
