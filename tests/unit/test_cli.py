"""The CLIs' shared surface: logging settings, JSON log lines, defaults in --help, health."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from reference import cli
from reference.config import (
    DEFAULT_CLI_LOG_LEVEL,
    DEFAULT_CONCURRENCY,
    DEFAULT_DB_PATH,
    DEFAULT_LOG_FORMAT,
    DEFAULT_LOG_LEVEL,
    DEFAULT_SOCKET_DIR,
    DEFAULT_WORKERS,
    LOG_FORMATS,
    LOG_LEVELS,
    LogSettings,
    default_metrics_path,
    resolve_lease,
    resolve_logging,
)
from reference.consumer import DEFAULT_LEASE
from reference.errors import ConfigError
from reference.health import WorkerState, check_host, worker_state
from reference.queue.__main__ import build_parser as queue_parser
from reference.records import LogEvent, WorkerRow
from reference.worker import build_parser as worker_parser

# --- logging settings -------------------------------------------------------------------


def test_log_settings_default_argv_and_environment() -> None:
    assert resolve_logging(level=None, fmt=None, environ={}).level == DEFAULT_LOG_LEVEL
    assert resolve_logging(level=None, fmt=None, environ={}).format == DEFAULT_LOG_FORMAT == "text"
    env = {"QUEUE_LOG_LEVEL": "debug", "QUEUE_LOG_FORMAT": "JSON"}
    assert resolve_logging(level=None, fmt=None, environ=env) == LogSettings("DEBUG", "json")
    assert resolve_logging(level="error", fmt="text", environ=env) == LogSettings("ERROR", "text")
    queue = resolve_logging(level=None, fmt=None, environ={}, default_level=DEFAULT_CLI_LOG_LEVEL)
    assert queue.level == "WARNING"


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"level": "verbose", "fmt": None}, "log-level"),
        ({"level": "5", "fmt": None}, "log-level"),
        ({"level": None, "fmt": "xml"}, "log-format"),
    ],
)
def test_bad_log_settings_are_config_errors_naming_the_choices(
    kwargs: dict[str, str | None], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_logging(environ={}, **kwargs)
    assert info.value.key == key
    allowed = LOG_LEVELS if key == "log-level" else LOG_FORMATS
    assert all(name in str(info.value) for name in allowed)


def test_lease_from_the_environment() -> None:
    assert resolve_lease({}) == DEFAULT_LEASE
    assert resolve_lease({"QUEUE_LEASE": "9"}) == 9.0
    with pytest.raises(ConfigError):
        resolve_lease({"QUEUE_LEASE": "soon"})


# --- JSON log lines ---------------------------------------------------------------------


def _record(**extra: object) -> logging.LogRecord:
    logger = logging.getLogger("reference.scheduler")
    return logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, "entry %s skipped", ("tick",), None, extra=extra
    )


def test_json_line_has_the_fixed_keys_and_every_extra_field() -> None:
    record = _record(event=LogEvent.JOB_SKIPPED, worker=2, entry="tick", job_id=7)
    cli.ProcessTag("worker 2").filter(record)
    line = cli.JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data == {
        "time": data["time"],
        "level": "WARNING",
        "logger": "reference.scheduler",
        "message": "entry tick skipped",
        "process": "worker 2",
        "event": "job_skipped",
        "worker": 2,
        "entry": "tick",
        "job_id": 7,
    }
    assert data["time"].endswith("+00:00")


def test_json_line_keeps_a_traceback_on_one_line_and_survives_odd_values() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        exc_info = sys.exc_info()
    record = _record(odd=object())
    record.exc_info = exc_info
    line = cli.JsonFormatter().format(record)
    assert len(line.splitlines()) == 1
    data = json.loads(line)
    assert "ValueError: boom" in data["exception"]
    assert data["odd"].startswith("<object object")


def test_configure_logging_installs_one_handler_of_the_chosen_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        cli.configure_logging(resolve_logging(level="info", fmt="json", environ={}), "queue")
        assert len(root.handlers) == 1
        assert root.level == logging.INFO
        logging.getLogger("reference.test").info("hello", extra={"event": "x"})
        data = json.loads(capsys.readouterr().err)
        assert (data["message"], data["event"], data["process"]) == ("hello", "x", "queue")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


# --- --help shows the defaults config holds -------------------------------------------


def _help(text: str) -> str:
    return " ".join(text.split())  # argparse wraps to the terminal width


def test_worker_help_shows_every_default_from_config() -> None:
    text = _help(worker_parser().format_help())
    for default in (
        f"default: {DEFAULT_WORKERS})",
        f"default: {DEFAULT_CONCURRENCY})",
        f"default: {DEFAULT_DB_PATH})",
        f"default: {DEFAULT_SOCKET_DIR})",
        f"default: {DEFAULT_LOG_LEVEL})",
        f"default: {DEFAULT_LOG_FORMAT})",
        default_metrics_path(),
        "--version",
    ):
        assert default in text, default
    assert all(level in text for level in LOG_LEVELS)


def test_queue_help_shows_defaults_and_health() -> None:
    text = _help(queue_parser().format_help())
    for default in (
        f"default: {DEFAULT_DB_PATH})",
        f"default: {DEFAULT_SOCKET_DIR})",
        f"default: {DEFAULT_WORKERS})",
        f"default: {DEFAULT_CLI_LOG_LEVEL})",
        "health",
        "--version",
    ):
        assert default in text, default


# --- health -----------------------------------------------------------------------------

NOW = 1_800_000_000.0
LEASE = 60.0


def _row(
    index: int,
    *,
    beat_ago: float,
    started_ago: float = 100.0,
    host: str = "h1",
    stopped: bool = False,
) -> WorkerRow:
    return WorkerRow(
        owner=f"{host}:{index}:{started_ago}",
        host=host,
        pid=1000 + index,
        index=index,
        queues="*",
        started_at=NOW - started_ago,
        heartbeat_at=NOW - beat_ago,
        stopped_at=NOW - beat_ago if stopped else None,
    )


def test_worker_state_follows_the_lease() -> None:
    assert worker_state(_row(1, beat_ago=59), now=NOW, lease=LEASE) is WorkerState.LIVE
    assert worker_state(_row(1, beat_ago=61), now=NOW, lease=LEASE) is WorkerState.GONE
    stopped = _row(1, beat_ago=1, stopped=True)
    assert worker_state(stopped, now=NOW, lease=LEASE) is WorkerState.STOPPED


def test_healthy_when_every_slot_of_this_host_beats() -> None:
    rows = [_row(1, beat_ago=5), _row(2, beat_ago=20), _row(1, beat_ago=500, host="h2")]
    verdict = check_host(rows, "h1", now=NOW, lease=LEASE)
    assert verdict.ok, verdict
    assert "2 worker(s)" in verdict.reason
    assert "20 s" in verdict.reason  # the oldest heartbeat


def test_a_silent_slot_is_unhealthy_even_beside_live_ones() -> None:
    rows = [_row(1, beat_ago=5), _row(2, beat_ago=75)]
    verdict = check_host(rows, "h1", now=NOW, lease=LEASE)
    assert not verdict.ok
    assert "2 (75 s)" in verdict.reason
    assert "60 s lease" in verdict.reason


def test_a_restarted_worker_replaces_its_dead_predecessor() -> None:
    rows = [_row(1, beat_ago=300, started_ago=900), _row(1, beat_ago=3, started_ago=10)]
    assert check_host(rows, "h1", now=NOW, lease=LEASE).ok


def test_no_rows_or_all_stopped_is_unhealthy() -> None:
    assert "registered" in check_host([], "h1", now=NOW, lease=LEASE).reason
    elsewhere = check_host([_row(1, beat_ago=1, host="h2")], "h1", now=NOW, lease=LEASE)
    assert not elsewhere.ok
    stopped = [_row(1, beat_ago=1, stopped=True), _row(2, beat_ago=2, stopped=True)]
    verdict = check_host(stopped, "h1", now=NOW, lease=LEASE)
    assert not verdict.ok
    assert "stopped" in verdict.reason
    # A slot that stopped for good beside a live one (fewer --workers after a restart).
    rows = [stopped[0], _row(2, beat_ago=2, started_ago=5)]
    assert check_host(rows, "h1", now=NOW, lease=LEASE).ok


def test_rows_other_code_wrote_do_not_crash_the_probe() -> None:
    odd = WorkerRow("o", "h1", 1, 1, "*", "yesterday", "never")  # type: ignore[arg-type]
    verdict = check_host([odd], "h1", now=NOW, lease=LEASE)
    assert not verdict.ok
    assert "?" in verdict.reason
