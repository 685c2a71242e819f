"""Fixtures for the real-process integration tests: a short work dir, worker processes, CLIs.

Worker processes are started with `subprocess.Popen` in a new session (so teardown can
kill a supervisor's whole process group), with stdout/stderr captured to files (a pipe
nobody reads can fill and block the worker). Waits go through `wait_until`, never a bare
sleep.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from reference.sqlite_store import SqliteStore
from reference.unix_transport import UnixTransport

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[2]
JOBS = "tests.integration.jobs_for_tests"
BOUND = 20.0  # generous bound for any one wait on this 2-core machine
# Environment fallbacks of the CLIs; a developer's shell must not leak into the tests.
_ENV_KEYS = (
    "SCHEDULE_PATH",
    "BACKGROUND_FORKS",
    "LIMIT_JOB_COUNT",
    "QUEUE_DB_PATH",
    "QUEUE_SOCKET_DIR",
    "ISOLATION_FORKS",
    "METRICS_PATH",
    "QUEUE_POLL_INTERVAL",
    "QUEUE_LEASE",
    "QUEUE_MMAP",
    "QUEUE_LOG_LEVEL",
    "QUEUE_LOG_FORMAT",
)


def wait_until(
    predicate: Callable[[], object], *, timeout: float = BOUND, what: str = "condition"
) -> None:
    """Poll `predicate` every 20 ms until it is truthy; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def one_error_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The one `error: ...` line a CLI printed when it refused its input with `code`."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert len(lines[0]) < 600, lines[0]  # a huge value is never echoed back whole
    return lines[0]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the CLIs' fallbacks, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _ENV_KEYS}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def ledger_lines(path: str | Path) -> list[list[str]]:
    """The ledger's lines, split into fields; [] while it does not exist."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [line.split() for line in text.splitlines() if line]


def db_rows(db: str | Path, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    """Run a read-only query on the queue database with a fresh connection."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, tuple(params)).fetchall()
    finally:
        conn.close()


def status_counts(db: str | Path) -> dict[str, int]:
    """{status: count} of the jobs table."""
    return {
        str(s): int(str(n))
        for s, n in db_rows(db, "SELECT status, count(*) FROM jobs GROUP BY status")
    }


class WorkerProc:
    """One `python -m reference.worker` process (a supervisor or one worker)."""

    def __init__(self, args: Sequence[str], workdir: Path, env: dict[str, str], name: str):
        self.args = list(args)
        self.err_path = workdir / f"{name}.stderr"
        self.out_path = workdir / f"{name}.stdout"
        with self.err_path.open("wb") as err, self.out_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "reference.worker", *self.args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = BOUND) -> int:
        """Wait for exit; fail (showing stderr) if it takes longer than `timeout`."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker did not exit within {timeout:.0f} s; stderr:\n{self.stderr}")

    def wait_log(self, text: str, *, timeout: float = BOUND) -> None:
        """Wait until `text` appears in stderr (the log)."""

        def seen() -> bool:
            if text in self.stderr:
                return True
            if self.proc.poll() is not None:
                pytest.fail(
                    f"worker exited ({self.proc.returncode}) before logging {text!r}:\n"
                    f"{self.stderr}"
                )
            return False

        wait_until(seen, timeout=timeout, what=f"log line {text!r}")

    def kill_group(self) -> None:
        """Teardown: SIGKILL this process and its session (the supervisor's children)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def __repr__(self) -> str:
        return f"WorkerProc(pid={self.proc.pid}, returncode={self.proc.returncode})"


class Workspace:
    """A short temp dir holding the database, sockets, ledger and logs of one test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "q.db"
        self.sockets = root / "s"
        self.ledger = root / "ledger"
        self.procs: list[WorkerProc] = []

    def queue_args(self) -> list[str]:
        return ["--db", str(self.db), "--socket-dir", str(self.sockets)]

    def worker(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        queue: bool = True,
        name: str | None = None,
    ) -> WorkerProc:
        """Start `python -m reference.worker` with our jobs imported and metrics off."""
        argv = ["--import", JOBS, "--metrics", "off", *(self.queue_args() if queue else []), *args]
        proc = WorkerProc(argv, self.root, clean_env(env), name or f"worker{len(self.procs)}")
        self.procs.append(proc)
        return proc

    def queue_cli(
        self, *args: str, env: dict[str, str] | None = None, db: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `python -m reference.queue` against this workspace and capture its output."""
        pre = ["--import", JOBS, *(self.queue_args() if db else [])]
        return subprocess.run(
            [sys.executable, "-m", "reference.queue", *pre, *args],
            cwd=ROOT,
            env=clean_env(env),
            capture_output=True,
            text=True,
            timeout=BOUND * 2,
            check=False,
        )

    def python(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `python -c code args...` from the project root (a separate producer)."""
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=BOUND * 3,
            check=False,
        )

    def __repr__(self) -> str:
        return f"Workspace({self.root})"


@pytest.fixture
def ws() -> Iterator[Workspace]:
    """A fresh short work dir (AF_UNIX paths stay far below 107 bytes); kills leftovers."""
    root = Path(tempfile.mkdtemp(prefix="h6-"))
    space = Workspace(root)
    try:
        yield space
    finally:
        for proc in space.procs:
            # Always: a supervisor that exited may have left children in its group.
            proc.kill_group()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sockdir() -> Iterator[str]:
    """A short temp dir for Unix sockets (pytest's tmp_path can exceed AF_UNIX's 107 bytes)."""
    base = tempfile.mkdtemp(prefix="ut-")
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def transport() -> Iterator[UnixTransport]:
    t = UnixTransport()
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def db(ws: Workspace) -> Workspace:
    """A workspace whose queue database exists (as a started worker would leave it)."""
    SqliteStore.create_schema(ws.db)
    return ws
