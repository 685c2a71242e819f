"""Contract suite for `reference.store.ScheduleStore`: the `schedules` rows, fired by CAS.

Every implementation in `test_store.STORE_FACTORIES` must pass all of it; nothing here may
depend on SQL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from reference.records import NewSchedule
from reference.sqlite_store import SqliteStore
from tests.contract.test_store import STORE_FACTORIES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from reference.store import ScheduleStore

T0 = 1_700_000_000.0


@pytest.fixture(params=sorted(STORE_FACTORIES))
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], ScheduleStore]]:
    """Open stores of one implementation on one shared database; close them all after."""
    factory = STORE_FACTORIES[request.param]
    opened: list[ScheduleStore] = []

    def make() -> ScheduleStore:
        store = factory(tmp_path)
        assert isinstance(store, SqliteStore)  # every factory so far; a new one says so here
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[[], ScheduleStore]) -> ScheduleStore:
    return make_store()


def entry(name: str = "tick", *, spec: str = "every 60", next_fire: float = T0 + 60) -> NewSchedule:
    return NewSchedule(name, spec, next_fire, "app.Tick", args="[1]", queue="low", priority=3)


def test_sync_inserts_missing_rows_in_the_order_given(store: ScheduleStore) -> None:
    rows = store.sync_schedules([entry("b"), entry("a", next_fire=T0 + 5)], now=T0)
    assert [(r.name, r.next_fire) for r in rows] == [("b", T0 + 60), ("a", T0 + 5)]
    a = rows[1]
    assert (a.spec, a.last_fire, a.paused, a.fires, a.skips) == ("every 60", None, False, 0, 0)
    assert (a.class_name, a.args, a.queue, a.priority, a.synced_at) == (
        "app.Tick",
        "[1]",
        "low",
        3,
        T0,
    )
    assert [r.name for r in store.list_schedules()] == ["a", "b"]


def test_sync_keeps_next_fire_of_an_unchanged_entry(store: ScheduleStore) -> None:
    store.sync_schedules([entry()], now=T0)
    assert store.claim_fire("tick", expected=T0 + 60, next_fire=T0 + 120, fired_at=T0 + 60)
    (row,) = store.sync_schedules([entry(next_fire=T0 + 999)], now=T0 + 100)
    assert (row.next_fire, row.last_fire, row.fires, row.synced_at) == (
        T0 + 120,
        T0 + 60,
        1,
        T0 + 100,
    )


def test_sync_gives_a_changed_entry_a_fresh_next_fire_and_keeps_its_pause(
    store: ScheduleStore,
) -> None:
    store.sync_schedules([entry()], now=T0)
    assert store.set_paused("tick", True)
    (row,) = store.sync_schedules([entry(spec="every 30", next_fire=T0 + 30)], now=T0)
    assert (row.spec, row.next_fire, row.paused) == ("every 30", T0 + 30, True)


def test_sync_leaves_rows_it_is_not_given(store: ScheduleStore) -> None:
    store.sync_schedules([entry("old")], now=T0)
    store.sync_schedules([entry("new")], now=T0)
    assert [r.name for r in store.list_schedules()] == ["new", "old"]


def test_claim_fire_is_won_by_exactly_one_of_two_stores(
    make_store: Callable[[], ScheduleStore],
) -> None:
    first, second = make_store(), make_store()
    first.sync_schedules([entry()], now=T0)
    second.sync_schedules([entry()], now=T0)
    wins = [
        s.claim_fire("tick", expected=T0 + 60, next_fire=T0 + 120, fired_at=T0 + 60)
        for s in (first, second)
    ]
    assert wins == [True, False]
    row = second.get_schedule("tick")
    assert row is not None
    assert (row.next_fire, row.last_fire, row.fires, row.skips) == (T0 + 120, T0 + 60, 1, 0)


def test_claim_fire_with_a_stale_expected_value_changes_nothing(store: ScheduleStore) -> None:
    store.sync_schedules([entry()], now=T0)
    assert not store.claim_fire("tick", expected=T0 + 59, next_fire=T0 + 1, fired_at=T0)
    assert not store.claim_fire("nope", expected=T0 + 60, next_fire=T0 + 1, fired_at=T0)
    row = store.get_schedule("tick")
    assert row is not None
    assert (row.next_fire, row.fires) == (T0 + 60, 0)


def test_a_skip_moves_next_fire_and_counts_without_a_last_fire(store: ScheduleStore) -> None:
    store.sync_schedules([entry()], now=T0)
    assert store.claim_fire("tick", expected=T0 + 60, next_fire=T0 + 120, fired_at=None)
    row = store.get_schedule("tick")
    assert row is not None
    assert (row.next_fire, row.last_fire, row.fires, row.skips) == (T0 + 120, None, 0, 1)


def test_a_retired_entry_has_no_next_fire_and_cannot_be_claimed(store: ScheduleStore) -> None:
    store.sync_schedules([entry()], now=T0)
    assert store.claim_fire("tick", expected=T0 + 60, next_fire=None, fired_at=T0 + 60)
    row = store.get_schedule("tick")
    assert row is not None
    assert (row.next_fire, row.last_fire) == (None, T0 + 60)


def test_a_paused_entry_is_not_claimed_until_resumed(store: ScheduleStore) -> None:
    store.sync_schedules([entry()], now=T0)
    assert store.set_paused("tick", True)
    assert not store.claim_fire("tick", expected=T0 + 60, next_fire=T0 + 120, fired_at=T0)
    assert store.set_paused("tick", False)
    assert store.claim_fire("tick", expected=T0 + 60, next_fire=T0 + 120, fired_at=T0)


def test_pause_of_an_unknown_entry_is_false(store: ScheduleStore) -> None:
    assert not store.set_paused("ghost", True)  # no table yet
    store.sync_schedules([entry()], now=T0)
    assert not store.set_paused("ghost", True)
    assert store.get_schedule("ghost") is None


def test_reads_before_any_sync_are_empty(store: ScheduleStore) -> None:
    assert store.list_schedules() == []
    assert store.get_schedule("tick") is None
