"""`WorkerSettings` and `QueueSettings`: argv > environment > defaults, resolved once.

Layer 4. The only reader of `os.environ` in the package. Everything below receives values
as arguments; nothing reads the environment later (STYLE 4.7). Invalid values raise
`ConfigError(key=...)`, which the CLIs turn into one line and exit status 2.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reference.allocator import DEFAULT_TRIM_THRESHOLD
from reference.consumer import DEFAULT_LEASE
from reference.errors import ConfigError
from reference.metrics import MAX_WORKERS, metrics_path_for
from reference.supervisor import DEFAULT_STOP_GRACE
from reference.waker import POLL_INTERVAL, wake_addresses

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

DEFAULT_CONCURRENCY = 2
DEFAULT_WORKERS = 1
DEFAULT_DB_PATH = os.path.join("tmp", "queue.db")
DEFAULT_SOCKET_DIR = os.path.join("tmp", "sockets")
METRICS_OFF = frozenset({"", "off", "none", "0"})
# Logging (`--log-level`/`QUEUE_LOG_LEVEL`, `--log-format`/`QUEUE_LOG_FORMAT`). A worker
# logs its lifecycle at INFO; the queue CLI prints its answers on stdout and only warns.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
DEFAULT_LOG_LEVEL = "INFO"
DEFAULT_CLI_LOG_LEVEL = "WARNING"
DEFAULT_LOG_FORMAT = "text"


def default_metrics_path(db_path: str = DEFAULT_DB_PATH) -> str:
    """The metrics file the workers of the database at `db_path` write when not told."""
    return metrics_path_for(db_path)


def process_environ() -> Mapping[str, str]:
    """A snapshot of this process's environment, for CLIs resolving their fallbacks."""
    return dict(os.environ)


@dataclass(frozen=True, slots=True)
class LogSettings:
    """How a CLI process logs: a level name from LOG_LEVELS and a format from LOG_FORMATS."""

    level: str = DEFAULT_LOG_LEVEL
    format: str = DEFAULT_LOG_FORMAT


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """Where the queue lives and how many workers listen for wake-ups."""

    db_path: str
    socket_dir: str
    total_workers: int
    mmap: bool = True
    isolated: frozenset[int] = frozenset()  # ISOLATION_FORKS: never listen, never woken

    def wake_addresses(self) -> dict[int, str]:
        """Index -> wake-up address of every queue-consuming worker."""
        return wake_addresses(self.socket_dir, self.total_workers, self.isolated)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Everything a worker or the supervisor needs, validated."""

    schedule_path: str | None
    workers: int
    concurrency: int
    queue: QueueSettings
    metrics_path: str | None  # None: metrics off
    imports: tuple[str, ...]
    worker_index: int | None
    isolated: frozenset[int]
    poll_interval: float = POLL_INTERVAL
    lease: float = DEFAULT_LEASE
    # glibc's malloc trim threshold for worker processes (reference.allocator says why);
    # None when the user set glibc's own knobs, which then stay in charge.
    heap_trim_threshold: int | None = DEFAULT_TRIM_THRESHOLD
    # Seconds a stopping worker may take before the supervisor kills it (WORKER_STOP_GRACE).
    stop_grace: float = DEFAULT_STOP_GRACE

    def serves_queue(self, index: int) -> bool:
        """True unless `ISOLATION_FORKS` keeps worker `index` off the queue."""
        return index not in self.isolated

    def queue_workers(self) -> list[int]:
        """The worker indexes that consume the queue (and so listen for wake-ups)."""
        return [i for i in range(1, self.workers + 1) if self.serves_queue(i)]


def _positive_int(key: str, raw: str | int, *, minimum: int = 1, maximum: int | None = None) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        shown = raw if len(str(raw)) <= 40 else f"{str(raw)[:37]}..."
        raise ConfigError(f"must be an integer, not {shown!r}", key=key) from None
    if value < minimum:
        raise ConfigError(f"must be at least {minimum}, not {value}", key=key)
    if maximum is not None and value > maximum:
        raise ConfigError(f"must be at most {maximum}", key=key)
    return value


def _positive_float(key: str, raw: str | float) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"must be a number, not {raw!r}", key=key) from None
    # "inf" parses as a float, but an endless poll or lease switches off the safety nets
    # (SPEC: a lost wake-up delays a job by at most one poll; expired leases are re-queued).
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"must be a finite number > 0, not {value}", key=key)
    return value


def _index_list(key: str, raw: str) -> frozenset[int]:
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    return frozenset(_positive_int(key, p) for p in parts)


def _pick(cli: object, environ: Mapping[str, str], name: str) -> object:
    """argv wins, then the environment variable `name`; None if neither is set."""
    if cli is not None:
        return cli
    value = environ.get(name)
    return value if value not in (None, "") else None


def _heap_trim_threshold(environ: Mapping[str, str]) -> int | None:
    """The worker's malloc trim threshold, unless glibc's own variables already set one."""
    if "MALLOC_TRIM_THRESHOLD_" in environ:
        return None
    if "trim_threshold" in environ.get("GLIBC_TUNABLES", ""):
        return None
    return DEFAULT_TRIM_THRESHOLD


def _one_of(key: str, raw: object, allowed: Sequence[str], *, upper: bool) -> str:
    text = str(raw).strip()
    value = text.upper() if upper else text.lower()
    if value not in allowed:
        shown = text if len(text) <= 40 else f"{text[:37]}..."
        raise ConfigError(f"must be one of {', '.join(allowed)}, not {shown!r}", key=key)
    return value


def resolve_logging(
    *,
    level: str | None,
    fmt: str | None,
    environ: Mapping[str, str],
    default_level: str = DEFAULT_LOG_LEVEL,
) -> LogSettings:
    """Resolve `--log-level`/`--log-format` > `QUEUE_LOG_LEVEL`/`QUEUE_LOG_FORMAT` > defaults.

    Raises:
        ConfigError: a level is not in LOG_LEVELS (any case) or a format not in LOG_FORMATS.
    """
    raw_level = _pick(level, environ, "QUEUE_LOG_LEVEL") or default_level
    raw_format = _pick(fmt, environ, "QUEUE_LOG_FORMAT") or DEFAULT_LOG_FORMAT
    return LogSettings(
        level=_one_of("log-level", raw_level, LOG_LEVELS, upper=True),
        format=_one_of("log-format", raw_format, LOG_FORMATS, upper=False),
    )


def resolve_metrics_path(
    *, metrics: str | None, db_path: str, environ: Mapping[str, str]
) -> str | None:
    """`--metrics` > `METRICS_PATH` > the file beside the database; None when turned off.

    The workers and `python -m reference.metrics` both resolve through here, so the CLI given
    the same `--db` reads the file those workers write (`metrics.metrics_path_for`).
    """
    raw = _pick(metrics, environ, "METRICS_PATH")
    if raw is None:
        return default_metrics_path(db_path)
    if str(raw).strip().lower() in METRICS_OFF:
        return None
    return str(raw)


def resolve_lease(environ: Mapping[str, str]) -> float:
    """`QUEUE_LEASE` seconds, else DEFAULT_LEASE: how long a silent worker still counts live."""
    lease = environ.get("QUEUE_LEASE")
    return DEFAULT_LEASE if lease is None else _positive_float("QUEUE_LEASE", lease)


def resolve_db_path(db: str | None, environ: Mapping[str, str]) -> str:
    """`--db` > `QUEUE_DB_PATH` > DEFAULT_DB_PATH."""
    return str(_pick(db, environ, "QUEUE_DB_PATH") or DEFAULT_DB_PATH)


def resolve_queue(
    *,
    db: str | None,
    socket_dir: str | None,
    workers: int | None,
    environ: Mapping[str, str],
) -> QueueSettings:
    """Resolve the producer-side queue settings (also used by `python -m reference.queue`)."""
    db_path = resolve_db_path(db, environ)
    sock = str(_pick(socket_dir, environ, "QUEUE_SOCKET_DIR") or DEFAULT_SOCKET_DIR)
    raw_workers = _pick(workers, environ, "BACKGROUND_FORKS")
    total = (
        DEFAULT_WORKERS
        if raw_workers is None
        else _positive_int("workers", str(raw_workers), maximum=MAX_WORKERS)
    )
    mmap_raw = environ.get("QUEUE_MMAP", "1").strip().lower()
    isolated = _index_list("ISOLATION_FORKS", environ.get("ISOLATION_FORKS", ""))
    return QueueSettings(
        db_path,
        sock,
        total,
        mmap=mmap_raw not in ("0", "off", "false", "no"),
        isolated=isolated,
    )


def resolve_worker(
    *,
    schedule: str | None = None,
    workers: int | None = None,
    concurrency: int | None = None,
    db: str | None = None,
    socket_dir: str | None = None,
    metrics: str | None = None,
    imports: Sequence[str] = (),
    worker_index: int | None = None,
    environ: Mapping[str, str],
) -> WorkerSettings:
    """Resolve worker settings: argv values (None when not given) > `environ` > defaults.

    Raises:
        ConfigError: a value is malformed or out of range; `key` names the setting.
    """
    queue = resolve_queue(db=db, socket_dir=socket_dir, workers=workers, environ=environ)
    raw_conc = _pick(concurrency, environ, "LIMIT_JOB_COUNT")
    conc = DEFAULT_CONCURRENCY if raw_conc is None else _positive_int("concurrency", str(raw_conc))
    schedule_path = _pick(schedule, environ, "SCHEDULE_PATH")
    metrics_path = resolve_metrics_path(metrics=metrics, db_path=queue.db_path, environ=environ)
    if worker_index is not None and not 1 <= worker_index <= queue.total_workers:
        raise ConfigError(
            f"must be between 1 and --workers ({queue.total_workers}), not {worker_index}",
            key="worker-index",
        )
    poll = environ.get("QUEUE_POLL_INTERVAL")
    stop_grace = environ.get("WORKER_STOP_GRACE")
    return WorkerSettings(
        schedule_path=None if schedule_path is None else str(schedule_path),
        workers=queue.total_workers,
        concurrency=conc,
        queue=queue,
        metrics_path=metrics_path,
        imports=tuple(imports),
        worker_index=worker_index,
        isolated=queue.isolated,
        poll_interval=POLL_INTERVAL
        if poll is None
        else _positive_float("QUEUE_POLL_INTERVAL", poll),
        lease=resolve_lease(environ),
        heap_trim_threshold=_heap_trim_threshold(environ),
        stop_grace=DEFAULT_STOP_GRACE
        if stop_grace is None
        else _positive_float("WORKER_STOP_GRACE", stop_grace),
    )
