"""Schedules are rows (issue 13), with real processes: the `schedules`, `pause` and `resume`
CLI, two supervisors on one database firing each tick once, and cadence across restarts."""

from __future__ import annotations

import itertools
import signal
import time
from typing import TYPE_CHECKING

import pytest

from reference.records import NewSchedule
from reference.sqlite_store import SqliteStore
from tests.integration.conftest import (
    BOUND,
    JOBS,
    db_rows,
    ledger_lines,
    one_error_line,
    wait_until,
)

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.conftest import Workspace

pytestmark = pytest.mark.slow


def _schedule(ws: Workspace, body: str) -> Path:
    path = ws.root / "schedule.yml"
    path.write_text(body)
    return path


def _every(name: str, seconds: float, ledger: Path, **extra: object) -> str:
    lines = [
        f"{name}:",
        f"  class: {JOBS}.Record",
        f"  every: {seconds}",
        f'  args: ["{ledger}", "{name}"]',
        *(f"  {k}: {v}" for k, v in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def _fires(ledger: Path, name: str) -> int:
    return sum(1 for line in ledger_lines(ledger) if line and line[0] == name)


@pytest.mark.parametrize("verb", ["pause", "resume"])
def test_pause_or_resume_of_an_unknown_entry_is_one_line_exit_2(ws: Workspace, verb: str) -> None:
    SqliteStore.create_schema(ws.db)
    line = one_error_line(ws.queue_cli(verb, "ghost"))
    assert "no schedule entry named 'ghost'" in line


def test_schedules_of_a_database_no_scheduler_opened_is_just_the_header(ws: Workspace) -> None:
    SqliteStore.create_schema(ws.db)
    out = ws.queue_cli("schedules")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 1


def test_an_entry_whose_perform_cannot_take_its_args_is_exit_2(ws: Workspace) -> None:
    path = _schedule(ws, f"bad:\n  class: {JOBS}.Record\n  every: 1\n  args: [1, 2, 3, 4]\n")
    proc = ws.worker("--workers", "1", "--schedule", str(path))
    assert proc.wait() == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "schedule entry 'bad', key 'args'" in lines[0]
    assert "Traceback" not in proc.stderr


def test_two_supervisors_on_one_database_fire_each_tick_once(ws: Workspace) -> None:
    """`every: 1` under two supervisors (2 workers each): about once a second, not twice;
    then `schedules` lists the rows and `pause` / `resume` act on every worker at once."""
    path = _schedule(ws, _every("tick", 1, ws.ledger) + _every("later", 3600, ws.ledger))
    common = ["--workers", "2", "--schedule", str(path), "--db", str(ws.db)]
    first = ws.worker(*common, "--socket-dir", str(ws.root / "a"), queue=False)
    second = ws.worker(*common, "--socket-dir", str(ws.root / "b"), queue=False)
    for proc in (first, second):
        proc.wait_log("worker 1 started")
        proc.wait_log("worker 2 started")
    start = _fires(ws.ledger, "tick")
    began = time.monotonic()
    time.sleep(6.0)
    fired = _fires(ws.ledger, "tick") - start
    elapsed = time.monotonic() - began
    assert elapsed - 2 <= fired <= elapsed + 1, (fired, elapsed)

    out = ws.queue_cli("schedules")
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split()[:3] == ["name", "next", "fire"]
    by_name = {row.split()[0]: row for row in rows}
    assert set(by_name) == {"later", "tick"}
    assert "(in 60 min)" in by_name["later"] or "(in 1 h)" in by_name["later"]
    assert " no " in by_name["tick"]
    assert "every 1.0" in by_name["tick"]

    paused = ws.queue_cli("pause", "tick")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == "schedule entry tick paused"
    assert " yes " in ws.queue_cli("schedules").stdout
    time.sleep(0.8)  # lets a fire that had claimed its tick before the pause land
    frozen = _fires(ws.ledger, "tick")
    time.sleep(1.6)
    assert _fires(ws.ledger, "tick") == frozen  # paused: 1.6 s of a 1 s entry, no fire
    assert ws.queue_cli("resume", "tick").returncode == 0
    wait_until(lambda: _fires(ws.ledger, "tick") > frozen, what="a fire after resume")

    for proc in (first, second):
        proc.signal(signal.SIGTERM)
    for proc in (first, second):
        assert proc.wait() == 0, proc.stderr
    ((fires, skips),) = db_rows(ws.db, "SELECT fires, skips FROM schedules WHERE name = 'tick'")
    # Every claimed tick ran once (one claimed just before the stop may not have started).
    assert fires - _fires(ws.ledger, "tick") in (0, 1), (fires, _fires(ws.ledger, "tick"))
    assert skips == 0


def test_a_supervisor_restarted_every_two_seconds_keeps_an_every_5_entry_firing(
    ws: Workspace,
) -> None:
    path = _schedule(ws, _every("slow", 5, ws.ledger))
    # The row an earlier deploy left, due in a second (a new one would wait 5 s + jitter).
    SqliteStore.create_schema(ws.db)
    store = SqliteStore(ws.db)
    seed = NewSchedule("slow", "every 5.0", time.time() + 1.0, f"{JOBS}.Record")
    store.sync_schedules([seed], now=time.time())
    store.close()
    fired_at: list[float] = []  # distinct last_fire values (wall time of each fire)
    deadline = time.monotonic() + 4 * BOUND
    while len(fired_at) < 3 and time.monotonic() < deadline:
        proc = ws.worker("--workers", "1", "--schedule", str(path), name=f"boot{len(ws.procs)}")
        proc.wait_log("worker 1 started")
        time.sleep(2.0)
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.stderr
        rows = db_rows(ws.db, "SELECT last_fire FROM schedules WHERE name = 'slow'")
        last = rows[0][0] if rows else None
        if isinstance(last, float) and (not fired_at or last != fired_at[-1]):
            fired_at.append(last)
    # A fresh cadence per start (5 s + jitter after each boot) would never fire at all.
    assert len(fired_at) >= 3, f"{len(fired_at)} fires across {len(ws.procs)} restarts"
    gaps = [b - a for a, b in itertools.pairwise(fired_at)]
    # ~5 s apart: a tick due while the supervisor was down fires late, at the next start,
    # and the one after it keeps the 5 s cadence of the ticks (so comes that much sooner).
    assert all(3.0 <= gap <= 10.0 for gap in gaps), gaps
