"""`python -m reference.worker` as a real process: schedule-only runs, graceful signals,
and malformed configuration as a new user meets it (issue 2).
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

import pytest

from tests.integration.conftest import JOBS, ledger_lines, wait_until

if TYPE_CHECKING:
    from tests.integration.conftest import Workspace

pytestmark = pytest.mark.slow

SLOW_TICK = f"""\
tick:
  class: {JOBS}.ScheduledSlow
  every: 1
"""


def _schedule(ws: Workspace, text: str) -> str:
    path = ws.root / "schedule.yml"
    path.write_text(text)
    return str(path)


def _events(ws: Workspace) -> list[str]:
    return [fields[3] for fields in ledger_lines(ws.ledger) if fields[0] == "tick"]


@pytest.mark.parametrize(
    ("mode", "sig", "to_group"),
    [
        pytest.param("supervisor", signal.SIGTERM, False, id="supervisor-SIGTERM"),
        # Ctrl-C in a terminal: SIGINT reaches the supervisor and its workers at once.
        pytest.param("supervisor", signal.SIGINT, True, id="supervisor-SIGINT-group"),
        pytest.param("single", signal.SIGTERM, False, id="worker-index-SIGTERM"),
        pytest.param("single", signal.SIGINT, False, id="worker-index-SIGINT"),
    ],
)
def test_signal_during_a_run_lets_it_finish_and_exits_0(
    ws: Workspace, mode: str, sig: signal.Signals, to_group: bool
) -> None:
    schedule = _schedule(ws, SLOW_TICK)
    extra = ["--worker-index", "1"] if mode == "single" else []
    proc = ws.worker(
        "--schedule", schedule, "--workers", "1", *extra, env={"H6_LEDGER": str(ws.ledger)}
    )
    # The 1 s entry first runs within ~2 s (jitter + period); its run takes 1.5 s.
    wait_until(lambda: "start" in _events(ws), what="the scheduled job to start")
    assert _events(ws) == ["start"], "signal must arrive while the first run is in progress"
    if to_group:
        os.killpg(proc.pid, sig)
    else:
        proc.signal(sig)
    code = proc.wait()
    log = proc.stderr
    assert code == 0, log
    # The running job finished; no new run started after the signal.
    assert _events(ws) == ["start", "end"], log
    assert "Traceback" not in log
    assert "worker 1 stopped" in log
    workers = {fields[1] for fields in ledger_lines(ws.ledger)}
    assert workers == {"1"}  # current_worker() is visible to scheduled jobs
    pids = {int(fields[2]) for fields in ledger_lines(ws.ledger)}
    if mode == "supervisor":
        assert proc.pid not in pids  # the job ran in a child process
        assert "started worker 1" in log
    else:
        assert pids == {proc.pid}


def test_scheduled_job_runs_repeatedly_and_skips_overlap(ws: Workspace) -> None:
    """A 1 s entry whose run takes 1.5 s: runs never overlap, and the skip is logged."""
    schedule = _schedule(ws, SLOW_TICK)
    proc = ws.worker(
        "--schedule",
        schedule,
        "--workers",
        "1",
        "--worker-index",
        "1",
        env={"H6_LEDGER": str(ws.ledger), "H6_SECONDS": "1.2"},
    )
    proc.wait_log("skipping tick: its previous run is still going")
    wait_until(lambda: "end" in _events(ws), what="the first run to end")
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    events = _events(ws)
    # Strictly alternating start/end: an entry never runs concurrently with itself.
    assert events == ["start", "end"] * (len(events) // 2), events


BAD_SCHEDULES = {
    "unknown-key": (f"tick:\n  class: {JOBS}.Record\n  every: 1\n  colour: red\n", "colour"),
    "bad-cron": (f'tick:\n  class: {JOBS}.Record\n  cron: "61 * * * *"\n', "cron"),
    "missing-class": ("tick:\n  every: 1\n", "class"),
    "unknown-class": (f"tick:\n  class: {JOBS}.NoSuchJob\n  every: 1\n", "class"),
    "not-a-job": (f"tick:\n  class: {JOBS}.append_line\n  every: 1\n", "class"),
    "worker-out-of-range": (f"tick:\n  class: {JOBS}.Record\n  every: 1\n  worker: 3\n", "worker"),
    "both-every-and-cron": (
        f'tick:\n  class: {JOBS}.Record\n  every: 1\n  cron: "* * * * *"\n',
        "every",
    ),
    "every-not-positive": (f"tick:\n  class: {JOBS}.Record\n  every: 0\n", "every"),
    "bad-timezone": (
        f'tick:\n  class: {JOBS}.Record\n  cron: "0 3 * * *"\n  timezone: Mars/Olympus\n',
        "timezone",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_SCHEDULES))
@pytest.mark.parametrize("mode", ["supervisor", "single"])
def test_malformed_schedule_is_one_line_exit_2(ws: Workspace, kind: str, mode: str) -> None:
    text, key = BAD_SCHEDULES[kind]
    schedule = _schedule(ws, text)
    extra = ["--worker-index", "1"] if mode == "single" else []
    proc = ws.worker("--schedule", schedule, "--workers", "2", *extra)
    assert proc.wait() == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    assert "'tick'" in lines[0], lines[0]
    assert f"key '{key}'" in lines[0], lines[0]
    # Nothing half-started: no worker spawned, no database created, no socket bound.
    assert not ws.db.exists()
    assert not ws.sockets.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["--schedule", "/nonexistent/schedule.yml"], "does not exist", id="no-file"),
        pytest.param(["--workers", "2", "--worker-index", "3"], "worker-index", id="index-range"),
        pytest.param(["--workers", "0"], "workers", id="zero-workers"),
        pytest.param(["--import", "no_such_module_h6"], "no_such_module_h6", id="bad-import"),
    ],
)
def test_bad_command_line_is_one_line_exit_2(ws: Workspace, args: list[str], needle: str) -> None:
    proc = ws.worker(*args)
    assert proc.wait() == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, lines
    assert needle in lines[0]
    assert "Traceback" not in lines[0]


def test_empty_schedule_file_is_one_line_exit_2(ws: Workspace) -> None:
    proc = ws.worker("--schedule", _schedule(ws, ""))
    assert proc.wait() == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "empty" in lines[0]


def test_corrupt_database_stops_the_supervisor_with_one_line(ws: Workspace) -> None:
    garbage = os.urandom(8192)
    ws.db.write_bytes(garbage)
    proc = ws.worker("--workers", "1")
    assert proc.wait() == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "not a usable SQLite database" in lines[0]
    assert ws.db.read_bytes() == garbage


@pytest.mark.parametrize("job", ["SlowRecord", "SyncSlowRecord"])
def test_sigterm_lets_a_running_queue_job_finish(ws: Workspace, job: str) -> None:
    """Queue jobs too, async and blocking: the run in flight ends, is marked done, exit 0."""
    proc = ws.worker("--workers", "1", "--worker-index", "1")
    proc.wait_log("worker 1 started")
    pushed = ws.queue_cli("push", f"{JOBS}.{job}", f'["{ws.ledger}", "q", 1.5]')
    assert pushed.returncode == 0, pushed.stderr
    job_id = int(pushed.stdout)
    wait_until(lambda: ledger_lines(ws.ledger), what="the queued job to start")
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.stderr
    assert [f[3] for f in ledger_lines(ws.ledger)] == ["start", "end"]
    listed = ws.queue_cli("list", "--status", "done")
    assert any(line.split()[0] == str(job_id) for line in listed.stdout.splitlines()[1:])


def test_second_signal_kills_the_workers_at_once(ws: Workspace) -> None:
    """The supervisor's documented escape hatch: a second SIGTERM does not wait for jobs."""
    proc = ws.worker("--workers", "1", name="supervisor")
    proc.wait_log("worker 1 started")
    pushed = ws.queue_cli("push", f"{JOBS}.SlowRecord", f'["{ws.ledger}", "long", 25]')
    assert pushed.returncode == 0, pushed.stderr
    wait_until(lambda: ledger_lines(ws.ledger), what="the long job to start")
    (worker_pid,) = {int(f[2]) for f in ledger_lines(ws.ledger)}
    proc.signal(signal.SIGTERM)
    proc.wait_log("worker 1 stopping")
    proc.signal(signal.SIGTERM)
    code = proc.wait(timeout=5.0)  # not the 25 s the job would take
    assert code != 0  # not a graceful stop: the running job was cut short
    assert "killing" in proc.stderr
    assert [f[3] for f in ledger_lines(ws.ledger)] == ["start"]
    wait_until(lambda: not _pid_alive(worker_pid), timeout=5.0, what="the worker to be gone")
    # Left running under index 1: the next start of worker 1 re-queues it.
    listed = ws.queue_cli("list", "--status", "running")
    assert len(listed.stdout.splitlines()) == 2, listed.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
