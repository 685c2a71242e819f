"""The operator's command line as a user meets it (issue 17): versions, installed scripts,
bad logging options, JSON log lines, the health probe, and the per-database metrics file.
"""

from __future__ import annotations

import importlib.metadata
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import reference
from reference.config import LOG_LEVELS
from tests.integration.conftest import (
    BOUND,
    JOBS,
    ROOT,
    WorkerProc,
    clean_env,
    one_error_line,
    wait_until,
)

if TYPE_CHECKING:
    from tests.integration.conftest import Workspace

pytestmark = pytest.mark.slow

MODULES = ("reference.worker", "reference.queue", "reference.metrics")
SCRIPTS = ("reference-worker", "reference-queue", "reference-metrics")


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=ROOT,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )


def test_the_version_has_one_source() -> None:
    assert importlib.metadata.version("reference") == reference.__version__


@pytest.mark.parametrize("module", MODULES)
def test_every_module_prints_the_package_version(module: str) -> None:
    out = _run([sys.executable, "-m", module, "--version"])
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout == f"reference {reference.__version__}\n"


@pytest.mark.parametrize("script", SCRIPTS)
def test_installed_console_scripts_run(script: str) -> None:
    path = Path(sys.executable).parent / script
    assert path.exists(), f"{path} missing: run `make install` (pyproject [project.scripts])"
    out = _run([str(path), "--version"])
    assert (out.returncode, out.stdout) == (0, f"reference {reference.__version__}\n")


def test_console_script_help_lists_defaults() -> None:
    out = _run([str(Path(sys.executable).parent / "reference-worker"), "--help"])
    assert out.returncode == 0
    assert "default: tmp/queue.db" in " ".join(out.stdout.split())


@pytest.mark.parametrize(
    ("module", "args", "env"),
    [
        ("reference.worker", ["--log-level", "verbose"], None),
        ("reference.worker", [], {"QUEUE_LOG_LEVEL": "verbose"}),
        ("reference.worker", ["--log-format", "xml"], None),
        ("reference.queue", ["--log-level", "verbose", "stats"], None),
        ("reference.queue", ["stats"], {"QUEUE_LOG_FORMAT": "yaml"}),
    ],
)
def test_bad_logging_option_is_one_line_exit_2(
    ws: Workspace, module: str, args: list[str], env: dict[str, str] | None
) -> None:
    line = one_error_line(_run([sys.executable, "-m", module, "--db", str(ws.db), *args], env), 2)
    assert "verbose" in line or "xml" in line or "yaml" in line
    if "level" in line:
        assert all(level in line for level in LOG_LEVELS)
    assert not ws.db.exists()  # refused before anything was opened


def _metrics_worker(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> WorkerProc:
    """A worker with the default metrics file (Workspace.worker turns metrics off)."""
    argv = ["--import", JOBS, *ws.queue_args(), "--workers", "1", *args]
    proc = WorkerProc(argv, ws.root, clean_env(env), f"worker{len(ws.procs)}")
    ws.procs.append(proc)
    return proc


def test_health_follows_the_workers_and_metrics_sit_beside_the_database(ws: Workspace) -> None:
    proc = _metrics_worker(ws)
    proc.wait_log("worker 1 started")
    wait_until(lambda: ws.queue_cli("health").returncode == 0, what="a healthy probe")
    ok = ws.queue_cli("health")
    assert ok.stdout.startswith("ok: 1 worker(s) of host ")
    assert ok.stderr == ""
    elsewhere = ws.queue_cli("health", "--host", "no-such-host")
    assert elsewhere.returncode == 1
    assert elsewhere.stderr.startswith("unhealthy: no worker of host 'no-such-host'")
    assert len(elsewhere.stderr.splitlines()) == 1

    # The metrics file is the database's, and `--db` (or QUEUE_DB_PATH) finds it.
    assert (ws.root / "q.db.metrics").exists()
    pushed = ws.queue_cli("push", f"{JOBS}.Record", json.dumps([str(ws.ledger)]))
    assert pushed.returncode == 0, pushed.stderr

    def runs() -> int:
        out = _run([sys.executable, "-m", "reference.metrics", "--db", str(ws.db), "--json"])
        return int(json.loads(out.stdout)[0]["total_runs"]) if out.returncode == 0 else -1

    wait_until(lambda: runs() == 1, what="the run counted in <db>.metrics")
    via_env = _run([sys.executable, "-m", "reference.metrics"], {"QUEUE_DB_PATH": str(ws.db)})
    assert via_env.returncode == 0, via_env.stderr
    assert via_env.stdout.splitlines()[1].split()[:3] == ["1", "live", "1"]
    prom = _run([sys.executable, "-m", "reference.metrics", "--db", str(ws.db), "--prometheus"])
    assert 'reference_state{worker="1",state="live"} 1' in prom.stdout.splitlines()
    assert 'reference_state{worker="1",state="gone"} 0' in prom.stdout.splitlines()
    other = _run([sys.executable, "-m", "reference.metrics", "--db", str(ws.root / "other.db")])
    assert other.returncode == 1
    assert "other.db.metrics" in other.stderr

    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    stopped = ws.queue_cli("health")
    assert stopped.returncode == 1
    assert "has stopped" in stopped.stderr
    # The stopped worker's counters are still in the file; the database says it stopped.
    after = _run([sys.executable, "-m", "reference.metrics", "--db", str(ws.db), "--json"])
    assert [(d["state"], d["total_runs"]) for d in json.loads(after.stdout)] == [("stopped", 1)]


def test_health_without_a_database_is_one_line_exit_1(ws: Workspace) -> None:
    line = one_error_line(ws.queue_cli("health"), 1)
    assert "q.db" in line


def test_json_log_lines_carry_the_structured_fields(ws: Workspace) -> None:
    # On the supervisor's command line: it passes the option on to its worker.
    proc = _metrics_worker(ws, "--metrics", "off", "--log-format", "json")
    wait_until(lambda: '"worker_started"' in proc.stderr and '"worker": 1' in proc.stderr)
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert lines, "no log lines"
    for line in lines:
        assert {"time", "level", "logger", "message", "event"} <= set(line), line
    started = [d for d in lines if d["event"] == "worker_started" and d.get("worker") == 1]
    assert started
    assert started[0]["process"] == "worker 1"
    assert started[0]["logger"].startswith("reference.")
    assert any(d["event"] == "worker_stopped" for d in lines)


def test_text_logs_stay_the_default(ws: Workspace) -> None:
    proc = ws.worker("--workers", "1")
    proc.wait_log("worker 1 started")
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    assert " INFO [worker 1] reference." in proc.stderr
    assert not proc.stderr.lstrip().startswith("{")


def test_metrics_turned_off_is_one_line_exit_2(ws: Workspace) -> None:
    argv = [sys.executable, "-m", "reference.metrics", "--db", str(ws.db)]
    out = _run(argv, {"METRICS_PATH": "off"})
    assert out.returncode == 2
    assert len(out.stderr.splitlines()) == 1
    assert "turned off" in out.stderr
