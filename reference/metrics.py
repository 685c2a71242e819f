"""The shared-memory metrics file: one `counters.SEGMENT_SIZE` segment per worker.

Owns the file format (header + segments), its safe creation and growth, the writer's
mmap, the lock-free reader `read_all()`, and the operator CLI `python -m reference.metrics`
(which asks the database's `workers` table, through `SqliteStore`, which workers are live).
The only importer of `mmap`; never imports sqlite3, socket, threading or `sim`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import mmap
import os
import struct
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NoReturn

from reference import __version__
from reference.counters import SEGMENT_SIZE, BufferCounters, Snapshot
from reference.errors import BackgroundError, MetricsFileError, StoreError
from reference.health import WorkerState, newest_by_index, worker_state

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# File layout (little-endian), all offsets 8-byte aligned so no counter field is torn:
#   0   magic            8 bytes
#   8   layout version   u32
#   12  segment size     u32
#   16  segment count    u32 (grows, never shrinks)
#   20  reserved         up to HEADER_SIZE
#   64  segment of worker 1, then worker 2, ...
MAGIC = b"REFMTRCS"
LAYOUT_VERSION = 1
HEADER_SIZE = 64  # one cache line, so segment i starts on a line boundary
_HEADER = struct.Struct("<8sIII")
_COUNT = struct.Struct("<I")
_COUNT_OFFSET = 16
# A sanity bound: a typo like --workers 1000000 must not allocate a 128 MB file.
MAX_WORKERS = 4096
METRICS_SUFFIX = ".metrics"


def metrics_path_for(db_path: str) -> str:
    """Return the metrics file of the workers serving the queue database `db_path`.

    A SQLite file gets `<db_path>.metrics` beside it (like its `-wal` and `-shm` files), so
    two projects on one host never share counters and the file goes where the database goes.
    A database URL (no file to sit beside) gets a name in the temp dir derived from a hash
    of the URL, so every process given that URL finds the same file.
    """
    if "://" in db_path:
        digest = hashlib.sha256(db_path.encode()).hexdigest()[:16]
        return os.path.join(tempfile.gettempdir(), f"reference-metrics-{digest}{METRICS_SUFFIX}")
    return db_path + METRICS_SUFFIX


def _file_size(segments: int) -> int:
    return HEADER_SIZE + segments * SEGMENT_SIZE


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in {low}..{high}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Header:
    """The decoded header of a metrics file."""

    version: int
    segment_size: int
    segment_count: int

    @classmethod
    def parse(cls, path: str, data: bytes) -> Header:
        """Decode and validate `data` (the file's first bytes); raise `MetricsFileError`."""
        if len(data) < _HEADER.size:
            raise MetricsFileError(f"metrics file {path!r} is truncated ({len(data)} bytes)")
        magic, version, segment_size, count = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise MetricsFileError(f"{path!r} is not a metrics file (bad magic {magic!r})")
        if version != LAYOUT_VERSION:
            raise MetricsFileError(
                f"metrics file {path!r} has layout version {version}, expected {LAYOUT_VERSION}"
            )
        if segment_size != SEGMENT_SIZE:
            raise MetricsFileError(
                f"metrics file {path!r} has segment size {segment_size}, expected {SEGMENT_SIZE}"
            )
        return cls(version, segment_size, count)


def _create_whole(path: str, segments: int) -> None:
    """Publish a complete new file at `path` unless one exists.

    The file is built under a temporary name and hard-linked into place: link() never
    replaces, so exactly one racer wins, and no process ever sees a file without a header.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_HEADER.pack(MAGIC, LAYOUT_VERSION, SEGMENT_SIZE, segments))
            f.truncate(_file_size(segments))
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _grow_locked(fd: int, path: str, total_workers: int) -> int:
    """Validate the header and grow the file to `total_workers` segments; return its size.

    The caller holds the flock. The file is extended before the header count is raised,
    so a reader trusting the count never reads past the end; nothing ever shrinks.
    """
    header = Header.parse(path, os.pread(fd, _HEADER.size, 0))
    segments = max(header.segment_count, total_workers)
    size = os.fstat(fd).st_size
    if size < _file_size(segments):
        os.ftruncate(fd, _file_size(segments))
        size = _file_size(segments)
    if header.segment_count < segments:
        os.pwrite(fd, _COUNT.pack(segments), _COUNT_OFFSET)
    return size


class MetricsSegment:
    """One worker's mapped segment of the metrics file; `.counters` writes into it."""

    def __init__(self, path: str, worker: int, total_workers: int) -> None:
        """Open (creating or growing) the file and map it; prefer `open_metrics()`."""
        _check_range("total_workers", total_workers, 1, MAX_WORKERS)
        _check_range("worker", worker, 1, total_workers)
        self.path = path
        self.worker = worker
        self.total_workers = total_workers
        try:
            if not os.path.exists(path):
                _create_whole(path, total_workers)
            # O_NOFOLLOW: a path in a shared temp dir (a URL's default) may be a planted link.
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise MetricsFileError(f"cannot open metrics file {path!r}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = _grow_locked(fd, path, total_workers)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._mmap = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            raise MetricsFileError(f"cannot map metrics file {path!r}: {exc.strerror}") from exc
        finally:
            os.close(fd)  # the mapping keeps its own reference to the file
        self._view: memoryview | None = memoryview(self._mmap)
        offset = HEADER_SIZE + (worker - 1) * SEGMENT_SIZE
        self.counters = BufferCounters(self._view, offset, worker)
        # A restarted worker starts from zero rather than inheriting its predecessor's totals.
        self.counters.reset()

    @property
    def closed(self) -> bool:
        """Whether `close()` has run."""
        return self._view is None

    def close(self) -> None:
        """Unmap the file; idempotent. `.counters` must not be used afterwards."""
        if self._view is None:
            return
        # The memoryview pins the mmap: release it first or mmap.close() raises BufferError.
        self._view.release()
        self._view = None
        self._mmap.close()

    def __enter__(self) -> MetricsSegment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._view is None else "open"
        return (
            f"MetricsSegment(path={self.path!r}, worker={self.worker}, "
            f"total_workers={self.total_workers}, {state})"
        )


def open_metrics(path: str, worker: int, total_workers: int) -> MetricsSegment:
    """Open worker `worker`'s segment (1-based) of the file at `path`, creating or growing it.

    Raises:
        MetricsFileError: the file cannot be created/opened, or is not a metrics file.
        ValueError: `worker` is not in 1..total_workers.
    """
    return MetricsSegment(path, worker, total_workers)


def read_header(path: str | None = None) -> tuple[Header, bytes]:
    """Read the header and all allocated segment bytes with plain reads; no lock taken.

    `path` None: the default file of the default database (`config.default_metrics_path`).
    """
    if path is None:
        from reference.config import default_metrics_path  # layer 4 owns the defaults

        path = default_metrics_path()
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_SIZE)
            header = Header.parse(path, head)
            body = f.read(header.segment_count * SEGMENT_SIZE)
    except FileNotFoundError as exc:
        raise MetricsFileError(f"metrics file {path!r} does not exist") from exc
    except OSError as exc:
        raise MetricsFileError(f"cannot read metrics file {path!r}: {exc.strerror}") from exc
    return header, body


def read_all(total_workers: int, path: str | None = None) -> list[Snapshot]:
    """Return one `Snapshot` per worker 1..total_workers, read from any process.

    Segments the file does not hold yet (a file still being grown) read as zeros.

    Raises:
        MetricsFileError: the file is missing, unreadable or not a metrics file.
    """
    _check_range("total_workers", total_workers, 1, MAX_WORKERS)
    _, body = read_header(path)
    # Trust only whole segments actually read: the count is raised after the file grows,
    # but a short read is still possible if the file is replaced underneath us.
    allocated = len(body) // SEGMENT_SIZE
    zero = bytes(SEGMENT_SIZE)
    return [
        Snapshot.unpack(i, body, (i - 1) * SEGMENT_SIZE)
        if i <= allocated
        else Snapshot.unpack(i, zero)
        for i in range(1, total_workers + 1)
    ]


# --- CLI -------------------------------------------------------------------------------

_PROG = "python -m reference.metrics"


@dataclass(frozen=True, slots=True)
class Metric:
    """One per-worker value as every output names it.

    `field` is the `Snapshot` attribute, the JSON key and the table column, all one name.
    `prometheus` is that name in Prometheus form: `total_X` becomes `X_total`, and a unit
    suffix (`_at`, `_ms`) becomes the base unit (`_timestamp_seconds`, `_seconds`).
    """

    field: str
    kind: str  # "counter" or "gauge"
    prometheus: str
    help: str


# Every counter counts runs, i.e. attempts: a job that fails twice and then succeeds adds 3
# to total_runs, 2 to total_failures and 1 to total_successes; scheduled runs count too.
# Jobs by status are the queue's business (`python -m reference.queue stats`).
METRICS: tuple[Metric, ...] = (
    Metric("total_runs", "counter", "reference_runs_total", "Runs started (attempts, not jobs)."),
    Metric(
        "total_successes", "counter", "reference_successes_total", "Runs that returned (attempts)."
    ),
    Metric(
        "total_failures",
        "counter",
        "reference_failures_total",
        "Runs that raised (failed attempts; a retried job counts once per attempt).",
    ),
    Metric(
        "total_timeouts", "counter", "reference_timeouts_total", "Runs that timed out (attempts)."
    ),
    Metric(
        "total_skips",
        "counter",
        "reference_skips_total",
        "Scheduled runs skipped because the entry's previous run was still going.",
    ),
    Metric("active_jobs", "gauge", "reference_active_jobs", "Runs in progress now."),
    Metric("free_slots", "gauge", "reference_free_slots", "Free concurrency slots."),
    Metric(
        "last_run_at",
        "gauge",
        "reference_last_run_timestamp_seconds",
        "Start of the last run, Unix time (0: never).",
    ),
    Metric(
        "last_duration_ms",
        "gauge",
        "reference_last_duration_seconds",
        "Duration of the last finished run.",
    ),
)
# A worker's state comes from the database's `workers` table, not from the file: a stopped
# or killed worker's segment keeps its last values, which alone would look live.
WORKER_STATES = tuple(state.value for state in WorkerState)
STATE_METRIC = "reference_state"
STATE_HELP = "Worker state from the workers table: 1 for the current one (live, stopped, gone)."
TABLE_NOTE = "counts are runs (attempts), not jobs; `python -m reference.queue stats` counts jobs"
# The table's summed columns: every integer counter and gauge (the timestamps are not).
_SUMMED = tuple(m.field for m in METRICS if m.field not in ("last_run_at", "last_duration_ms"))


class _UsageError(Exception):
    """Bad command-line usage; exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _build_parser() -> _Parser:
    from reference.config import DEFAULT_DB_PATH  # layer 4 owns the defaults

    parser = _Parser(
        prog=_PROG,
        description=f"Print per-worker job metrics ({TABLE_NOTE}).",
    )
    parser.add_argument("--version", action="version", version=f"reference {__version__}")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="workers to show (env BACKGROUND_FORKS; default: every segment in the file)",
    )
    parser.add_argument(
        "--db",
        metavar="PATH",
        help="queue database whose workers' metrics to read: the file beside it, "
        f"PATH{METRICS_SUFFIX} (env QUEUE_DB_PATH; default: {DEFAULT_DB_PATH})",
    )
    parser.add_argument(
        "--metrics", metavar="PATH", help="metrics file; overrides --db (env METRICS_PATH)"
    )
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print a JSON list")
    fmt.add_argument("--prometheus", action="store_true", help="print Prometheus text format")
    return parser


def _iso(ts: float) -> str:
    if ts <= 0:
        return "-"
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _cell(s: Snapshot, field: str) -> str:
    if field == "last_run_at":
        return _iso(s.last_run_at)
    if field == "last_duration_ms":
        return f"{s.last_duration_ms:.1f}" if s.last_run_at > 0 else "-"
    return str(getattr(s, field))


def format_table(snapshots: Sequence[Snapshot], states: Mapping[int, str] | None = None) -> str:
    """Render snapshots as an aligned table with a totals row; columns are the JSON keys.

    `states` maps a worker index to its state in the `workers` table (`live`, `stopped`,
    `gone`); `-` where it is unknown (no database to ask).
    """
    known = states or {}
    head = ("worker", "state", *(m.field for m in METRICS))
    rows: list[tuple[str, ...]] = [
        (str(s.worker), known.get(s.worker, "-"), *(_cell(s, m.field) for m in METRICS))
        for s in snapshots
    ]
    latest = max((s.last_run_at for s in snapshots), default=0.0)
    sums = {f: str(sum(getattr(s, f) for s in snapshots)) for f in _SUMMED}
    totals = (sums.get(m.field, "-") for m in METRICS[:-2])
    rows.append(("total", "-", *totals, _iso(latest), "-"))
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    left = {0, 1, head.index("last_run_at")}

    def line(cells: Sequence[str]) -> str:
        # Worker and timestamp columns read left to right; numbers align right.
        out = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(head), *(line(r) for r in rows), f"({TABLE_NOTE})"])


def format_json(snapshots: Sequence[Snapshot], states: Mapping[int, str] | None = None) -> str:
    """Render snapshots as a JSON list of objects: `worker`, `state` (None: unknown), every
    field, and `last_run_iso`."""
    known = states or {}
    items = []
    for s in snapshots:
        item: dict[str, object] = {"worker": s.worker, "state": known.get(s.worker)}
        item.update(asdict(s))
        item["last_run_iso"] = None if s.last_run_at <= 0 else _iso(s.last_run_at)
        items.append(item)
    return json.dumps(items, indent=2)


def _prom_value(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def format_prometheus(
    snapshots: Sequence[Snapshot], states: Mapping[int, str] | None = None
) -> str:
    """Render snapshots in the Prometheus text exposition format (version 0.0.4).

    Workers whose state is known also get `reference_state{worker,state}`: 1 for the state
    the `workers` table gives, 0 for the others (the usual way to expose an enum).
    """
    out: list[str] = []
    known = [s.worker for s in snapshots if states and s.worker in states]
    if states and known:
        out.append(f"# HELP {STATE_METRIC} {STATE_HELP}")
        out.append(f"# TYPE {STATE_METRIC} gauge")
        for worker in known:
            for state in WORKER_STATES:
                flag = int(states[worker] == state)
                out.append(f'{STATE_METRIC}{{worker="{worker}",state="{state}"}} {flag}')
    for m in METRICS:
        out.append(f"# HELP {m.prometheus} {m.help}")
        out.append(f"# TYPE {m.prometheus} {m.kind}")
        for s in snapshots:
            value: float = getattr(s, m.field)
            if m.field == "last_duration_ms":
                value = value / 1000.0
            out.append(f'{m.prometheus}{{worker="{s.worker}"}} {_prom_value(value)}')
    return "\n".join(out) + "\n"


@dataclass(frozen=True, slots=True)
class _Plan:
    path: str  # the metrics file
    workers: int | None  # None: every segment in the file
    states_db: str | None  # the database whose `workers` rows give the states, if any
    lease: float


def _resolve(args: argparse.Namespace, environ: Mapping[str, str]) -> _Plan:
    from reference.config import (  # layer 4: the defaults and the environment
        resolve_db_path,
        resolve_lease,
        resolve_metrics_path,
    )

    db_path = resolve_db_path(args.db, environ)
    path = resolve_metrics_path(metrics=args.metrics, db_path=db_path, environ=environ)
    if path is None:
        raise _UsageError("metrics are turned off (METRICS_PATH or --metrics is 'off')")
    # The database tells the workers' states when the file is its (derived from it) or
    # when --db names it; an explicit file alone says nothing about which database it is.
    explicit_file = args.metrics is not None or bool(environ.get("METRICS_PATH"))
    states_db = db_path if args.db is not None or not explicit_file else None
    workers: int | None = args.workers
    if workers is None and environ.get("BACKGROUND_FORKS"):
        raw = environ["BACKGROUND_FORKS"]
        try:
            workers = int(raw)
        except ValueError:
            raise _UsageError(f"BACKGROUND_FORKS must be an integer, got {raw!r}") from None
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise _UsageError(f"workers must be in 1..{MAX_WORKERS}, got {workers}")
    try:
        lease = resolve_lease(environ)
    except BackgroundError as exc:  # ConfigError: a malformed QUEUE_LEASE
        raise _UsageError(str(exc)) from None
    return _Plan(path, workers, states_db, lease)


def worker_states(db_path: str, *, now: float, lease: float) -> dict[int, str]:
    """This host's worker states by index, from the database's `workers` table.

    Empty when the database cannot tell (missing, not a queue database, unreadable): the
    metrics are still worth showing without them.
    """
    from reference.process import this_host
    from reference.sqlite_store import SqliteStore

    if not os.path.exists(db_path):  # opening would only fail; never create one
        return {}
    try:
        store = SqliteStore.open_readonly(db_path)
        try:
            rows = store.list_workers()
        finally:
            store.close()
    except StoreError:
        return {}
    newest = newest_by_index(rows, this_host())
    return {i: worker_state(r, now=now, lease=lease).value for i, r in newest.items()}


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the metrics CLI; return the exit status (0 ok, 1 unreadable file, 2 bad usage)."""
    if environ is None:
        from reference.config import process_environ  # layer 4; imported only by the CLI

        environ = process_environ()
    parser = _build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        plan = _resolve(args, environ)
    except _UsageError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    path, workers = plan.path, plan.workers
    try:
        header, _ = read_header(path)
        if workers is None:
            workers = header.segment_count
        if workers < 1 or header.segment_count < workers:
            print(
                f"{_PROG}: metrics file {path!r} holds {header.segment_count} worker "
                f"segment(s), {workers} requested; are the workers running?",
                file=sys.stderr,
            )
            return 1
        snapshots = read_all(workers, path)
    except MetricsFileError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 1
    states: dict[int, str] = {}
    if plan.states_db is not None:
        from reference.clock import SystemClock

        states = worker_states(plan.states_db, now=SystemClock().realtime(), lease=plan.lease)
    if args.json:
        text = format_json(snapshots, states) + "\n"
    elif args.prometheus:
        text = format_prometheus(snapshots, states)
    else:
        text = format_table(snapshots, states) + "\n"
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `| head` stopped reading: no traceback, and none at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
