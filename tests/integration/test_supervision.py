"""The supervisor and its real worker processes when things go wrong (issue #12).

- `kill -9` of the supervisor takes its workers down (they stop gracefully), so a new
  supervisor can start; a supervisor refused because sockets are live names their pids.
- A worker whose queue database was deleted exits 3 and is given up after a few tries; the
  supervisor then exits 1 instead of restarting it forever, and no empty database appears.
- A stop is bounded: a worker that ignores SIGTERM is killed after `WORKER_STOP_GRACE`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from reference.process import socket_holders
from tests.integration.conftest import ROOT, ledger_lines, wait_until

if TYPE_CHECKING:
    from tests.integration.conftest import WorkerProc, Workspace

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

STUBBORN = "tests.integration.stubborn_jobs"


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of `pid` from /proc, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rpartition(")")[2].split()[:2]  # the name may contain ") "
    return state, int(ppid)


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a container's init may never reap it)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == pid and stat[0] not in ("Z", "X"):
                found.add(int(entry))
    return found


def _worker_pids(sup: WorkerProc, n: int) -> dict[int, int]:
    """{worker index: pid} of the supervisor's `n` children, read from their command lines."""
    wait_until(lambda: len(_children(sup.pid)) == n, what=f"{n} worker processes")
    found = {}
    for pid in _children(sup.pid):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        found[int(argv[argv.index("--worker-index") + 1])] = pid
    return found


def _start(
    ws: Workspace, workers: int, *args: str, env: dict[str, str] | None = None, name: str
) -> WorkerProc:
    sup = ws.worker("--workers", str(workers), *args, env=env, name=name)
    for i in range(1, workers + 1):
        sup.wait_log(f"worker {i} started:")  # the worker's own line: it is serving
    return sup


@pytest.mark.parametrize("when", ["serving", "starting"])
def test_workers_die_with_a_sigkilled_supervisor(ws: Workspace, when: str) -> None:
    """Serving: the parent-death signal stops them; starting: their first parent check does."""
    sup = ws.worker("--workers", "2", name="supervisor")
    if when == "serving":
        for i in (1, 2):
            sup.wait_log(f"worker {i} started:")
    else:  # killed while the workers are still importing, before their prctl
        sup.wait_log("started worker 2")
    pids = set(_worker_pids(sup, 2).values())
    sup.proc.kill()
    assert sup.wait() == -signal.SIGKILL
    wait_until(
        lambda: not any(_running(p) for p in pids), what=f"orphaned workers {sorted(pids)} to end"
    )
    if when == "serving":  # a graceful stop, not a kill: each ran its shutdown
        for i in (1, 2):
            assert f"worker {i} stopped" in sup.stderr, sup.stderr
    again = _start(ws, 2, name="again")
    again.signal(signal.SIGTERM)
    assert again.wait() == 0, again.stderr


def test_refusal_names_the_pids_holding_the_sockets(ws: Workspace) -> None:
    first = _start(ws, 2, name="first")
    pids = _worker_pids(first, 2)
    second = ws.worker("--workers", "2", name="second")
    code = second.wait()
    lines = second.stderr.splitlines()
    assert code == 1, second.stderr  # SPEC: a failed operation
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("error: another worker is listening on "), line
    for i, pid in sorted(pids.items()):
        assert f"worker-{i}.sock (pid {pid})" in line, line
    assert "started worker" not in second.stderr
    first.signal(signal.SIGTERM)
    assert first.wait() == 0, first.stderr


def test_a_worker_whose_database_was_deleted_is_given_up(ws: Workspace) -> None:
    sup = _start(ws, 1, name="supervisor")
    pid = _worker_pids(sup, 1)[1]
    for leftover in ws.root.glob("q.db*"):  # the database and its WAL files
        leftover.unlink()
    os.kill(pid, signal.SIGKILL)  # an ordinary crash: restarted; the restart finds no database
    code = sup.wait(timeout=30)
    err = sup.stderr
    assert code == 1, err
    assert "worker 1 exited with status -9 after" in err
    for attempt in (1, 2):
        assert f"status 3 (queue database unusable, try {attempt} of 3)" in err, err
    assert "worker 1 exited with status 3 (queue database unusable) 3 times in a row" in err
    assert err.count("does not exist (deleted or moved while the supervisor ran?)") == 3, err
    assert "every worker was given up" in err.splitlines()[-1]
    assert not ws.db.exists(), "no empty database was created in its place"


def test_a_worker_that_ignores_sigterm_is_killed_after_the_stop_grace(ws: Workspace) -> None:
    sup = _start(ws, 1, "--import", STUBBORN, env={"WORKER_STOP_GRACE": "1"}, name="supervisor")
    pushed = ws.queue_cli(
        "--import", STUBBORN, "push", f"{STUBBORN}.IgnoresStop", f'["{ws.ledger}"]'
    )
    assert pushed.returncode == 0, pushed.stderr
    wait_until(lambda: ledger_lines(ws.ledger), what="the stubborn job to start")
    ((_, job_pid),) = ledger_lines(ws.ledger)
    sup.signal(signal.SIGTERM)
    code = sup.wait(timeout=15)  # not the hour the job would take
    assert code == 1, sup.stderr  # not graceful: the job was cut short
    assert "worker 1 did not stop within 1 s; killing it" in sup.stderr
    assert "worker 1 exited with status -9" in sup.stderr
    assert not _running(int(job_pid))


def test_stop_when_parent_dies_asks_the_kernel_for_sigterm() -> None:
    code = (
        "from reference.process import parent_death_signal as get;"
        "from reference.supervisor import stop_when_parent_dies as tie;"
        "before = get(); print(before, tie(), get())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["0", "True", str(int(signal.SIGTERM))]


HOLDER = """
import os, socket, sys
os.chdir(sys.argv[1])
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind("held.sock")  # relative: /proc/net/unix shows it as bound, not as a full path
print("bound", flush=True)
sys.stdin.read()
"""


def test_socket_holders_finds_a_relative_binding(ws: Workspace) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(ws.root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "bound"
        assert socket_holders(str(ws.root / "held.sock")) == [holder.pid]
        assert socket_holders(str(ws.root / "other.sock")) == []
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=20)
        if holder.stdout is not None:
            holder.stdout.close()
