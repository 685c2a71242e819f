"""`python -m reference.queue`: push, stats, list, retry, workers and schedules (with pause
and resume) against the queue database.

Layer 4 (CLI). Errors print one line to stderr with no traceback: exit 2 for bad usage or
input (unknown job, bad JSON, bad option), 1 for a failed operation (missing or corrupt
database, a locked one, an id that is not failed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from reference import cli
from reference.clock import SystemClock
from reference.config import (
    DEFAULT_CLI_LOG_LEVEL,
    DEFAULT_DB_PATH,
    DEFAULT_SOCKET_DIR,
    DEFAULT_WORKERS,
    process_environ,
    resolve_lease,
    resolve_logging,
    resolve_queue,
)
from reference.errors import (
    BackgroundError,
    ConfigError,
    StoreError,
    TransportError,
    UnknownJobError,
)
from reference.health import check_host, worker_state
from reference.metrics import MAX_WORKERS
from reference.process import this_host
from reference.records import JobStatus
from reference.registry import default_registry
from reference.sqlite_store import SqliteStore
from reference.worker import import_modules

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from reference.records import JobRow

# How far from now `--in`/`--at` may reach (100 years). Beyond it datetime cannot render
# the time (1e300 s overflowed every later `list` and `stats`), and no job means it.
MAX_HORIZON_S = 100 * 365.25 * 86400
MAX_ID = 2**63 - 1  # SQLite's INTEGER is 64-bit signed; job ids are 1..MAX_ID
_SHOWN = 40  # characters of a bad value quoted back in an error message


class UsageError(BackgroundError):
    """Bad input on the command line (exit 2)."""


def _shown(text: str, limit: int = _SHOWN) -> str:
    """`text` quoted for an error message, cut to `limit` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_shown(text)} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, not {_shown(text)}")
        return value

    return parse


def _seconds(text: str) -> float:
    """`--in`: a finite number of seconds within MAX_HORIZON_S of now (either way)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a number of seconds") from None
    if not math.isfinite(value) or abs(value) > MAX_HORIZON_S:
        # float() accepts "nan" and "inf": NaN reached SQLite as NULL (a NOT NULL store
        # error, exit 1), inf parked the job forever, and 1e300 broke every later `list`.
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds within {MAX_HORIZON_S:.0f} (100 years),"
            f" not {_shown(text)}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = cli.OneLineParser(
        prog="python -m reference.queue", description="Enqueue and inspect queued jobs."
    )
    cli.add_version(parser)
    parser.add_argument(
        "--db", help=f"queue SQLite file (env QUEUE_DB_PATH; default: {DEFAULT_DB_PATH})"
    )
    parser.add_argument(
        "--socket-dir",
        help=f"wake-up socket dir (env QUEUE_SOCKET_DIR; default: {DEFAULT_SOCKET_DIR})",
    )
    parser.add_argument(
        "--workers",
        type=_bounded_int(1, MAX_WORKERS),
        help=f"worker count (env BACKGROUND_FORKS; default: {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE so its Job subclasses are known (repeatable)",
    )
    cli.add_logging_options(parser, default_level=DEFAULT_CLI_LOG_LEVEL)
    sub = parser.add_subparsers(dest="command", required=True)
    push = sub.add_parser("push", help="enqueue a job; prints its id")
    push.add_argument("job", metavar="JOB_NAME", help="dotted name, e.g. app.jobs.SendEmail")
    push.add_argument(
        "args",
        metavar="ARGS_JSON",
        nargs="?",
        default="[]",
        help="JSON array of positional arguments (default [])",
    )
    when = push.add_mutually_exclusive_group()
    when.add_argument(
        "--in",
        dest="delay",
        type=_seconds,
        metavar="SECONDS",
        help="run this many seconds from now",
    )
    when.add_argument(
        "--at", dest="at", metavar="ISO8601", help="run at this time (naive = local time)"
    )
    push.add_argument("--options", metavar="JSON", help="call-site options as a JSON object")
    sub.add_parser("stats", help="counts by status and the oldest pending job's age")
    sub.add_parser("workers", help="worker processes: live, stopped, or gone silent")
    sub.add_parser("schedules", help="schedule entries: next and last fire, paused")
    for verb, text in (("pause", "stop firing"), ("resume", "fire again")):
        cmd = sub.add_parser(verb, help=f"{text} a schedule entry (every worker, at once)")
        cmd.add_argument("name", metavar="NAME", help="the entry's name in the schedule file")
    probe = "probe: exit 0 if this host's workers heartbeat, else 1 (one line says why)"
    health = sub.add_parser("health", help=probe, description=probe)
    health.add_argument(
        "--host",
        help=f"the host whose workers to judge (default: this host, {this_host()!r})",
    )
    lst = sub.add_parser("list", help="list jobs, newest first")
    lst.add_argument("--status", choices=[s.value for s in JobStatus])
    lst.add_argument(
        "--limit", type=_bounded_int(1, MAX_ID), default=50, help="at most this many (default: 50)"
    )
    retry = sub.add_parser("retry", help="re-queue a failed job")
    retry.add_argument("id", type=_bounded_int(1, MAX_ID))
    return parser


def _json(text: str, what: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError:  # an integer past sys.get_int_max_str_digits()
        raise UsageError(f"{what} has an integer with too many digits") from None
    except RecursionError:
        raise UsageError(f"{what} is nested too deeply") from None


def _job_class(name: str, imports: Sequence[str]) -> type:
    try:
        return default_registry.resolve(name)
    except UnknownJobError:
        module = name.rpartition(".")[0]
        hint = f" (did you mean --import {module}?)" if module and module not in imports else ""
        raise UsageError(
            f"unknown job {_shown(name, 200)}: no such Job subclass is registered{hint}"
        ) from None


def _push(args: argparse.Namespace, db: str, socket_dir: str, workers: int) -> int:
    from reference.queue import configure, reset

    cls = _job_class(args.job, args.imports)
    values = _json(args.args, "ARGS_JSON")
    if not isinstance(values, list):
        raise UsageError("ARGS_JSON must be a JSON array of positional arguments, e.g. '[42]'")
    options: dict[str, object] | None = None
    if args.options is not None:
        raw = _json(args.options, "--options")
        if not isinstance(raw, dict):
            raise UsageError("--options must be a JSON object")
        options = raw
    run_at = None if args.at is None else _at(args.at)
    # A socket dir too long for AF_UNIX is one TransportError from configure(), before any
    # job is stored.
    producer = configure(db, socket_dir, workers, create=False)
    try:
        job_id = producer.enqueue(
            cls, tuple(values), options=options, delay=args.delay, run_at=run_at
        )
    except (TypeError, ValueError) as exc:  # PayloadError, option errors
        raise UsageError(str(exc)) from None
    except RecursionError:  # arguments nested deeper than the encoder recurses
        raise UsageError("ARGS_JSON is nested too deeply") from None
    finally:
        reset()
    print(job_id)
    return 0


def _at(text: str) -> float:
    """`--at`: an ISO 8601 date-time within MAX_HORIZON_S of now, as epoch seconds."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at {_shown(text)} is not an ISO 8601 date-time") from None
    try:
        run_at = when.timestamp()  # year 1 local time can fall outside datetime's range
    except (ValueError, OverflowError, OSError):
        run_at = math.inf
    if not abs(run_at - SystemClock().realtime()) <= MAX_HORIZON_S:
        raise UsageError(f"--at {_shown(text)} is more than 100 years from now")
    return run_at


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _when(ts: object) -> str:
    """A run_at as local time; never raises, whatever another program stored there."""
    if ts is None:
        return "-"
    if not _is_number(ts):
        return "?"
    assert isinstance(ts, int | float)
    try:
        return datetime.fromtimestamp(ts, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):  # 1e300, inf, nan: out of datetime's range
        return f"epoch {ts:.6g}"


def _text(value: object, limit: int) -> str:
    """`value` on one line, control characters escaped, at most `limit` characters."""
    text = value if isinstance(value, str) else "" if value is None else str(value)
    text = text[: limit * 4].replace("\n", " ")
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _stats(store: SqliteStore) -> int:
    stats = store.stats()
    for status in JobStatus:
        print(f"{status.value:<8} {getattr(stats, status.value)}")
    oldest = stats.oldest_pending_run_at
    if oldest is None:
        print("oldest pending: -")
    elif not _is_number(oldest):
        print(f"oldest pending: {_when(oldest)}")
    else:
        age = SystemClock().realtime() - oldest
        size = f"{abs(age):.1f}" if abs(age) < 1e12 else f"{abs(age):.3g}"
        state = f"due {size} s ago" if age >= 0 else f"due in {size} s"
        print(f"oldest pending: {_when(oldest)} ({state})")
    return 0


def _row_line(row: JobRow) -> str:
    return (
        f"{row.id:>6}  {row.status.value:<7}  {_text(row.attempts, 6):>3}  "
        f"{_when(row.run_at):<19}  {_text(row.name, 200)}  {_text(row.last_error, 60)}"
    ).rstrip()


def _list(store: SqliteStore, status: str | None, limit: int) -> int:
    rows = store.list_jobs(None if status is None else JobStatus(status), limit=limit)
    print(f"{'id':>6}  {'status':<7}  {'try':>3}  {'run at':<19}  job  last error")
    for row in rows:
        print(_row_line(row))
    return 0


def _workers(store: SqliteStore, lease: float) -> int:
    """One line per worker row: owner, host, pid, index, state and heartbeat age.

    `gone` is a worker that neither beat within a lease (QUEUE_LEASE) nor said it stopped:
    killed, frozen or cut off.
    """
    now = SystemClock().realtime()
    print(f"{'index':>5}  {'state':<7}  {'pid':>7}  {'started':<19}  {'beat':>8}  host  owner")
    for w in store.list_workers():
        state = worker_state(w, now=now, lease=lease)
        beat = f"{now - w.heartbeat_at:.0f} s" if _is_number(w.heartbeat_at) else "?"
        print(
            f"{_text(w.index, 5):>5}  {state:<7}  {_text(w.pid, 7):>7}  "
            f"{_when(w.started_at):<19}  {beat:>8}  {_text(w.host, 40)}  {_text(w.owner, 80)}"
        )
    return 0


def _relative(seconds: float) -> str:
    """`seconds` from now as people say it: "in 3 min", "12 s ago", "now"."""
    size = abs(seconds)
    if size < 1:
        return "now"
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if size >= span:
            amount = f"{size / span:.0f} {unit}" if size < 1e12 else f"{size / span:.3g} {unit}"
            break
    else:
        amount = f"{size:.0f} s"
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def _fire_time(ts: object, now: float) -> str:
    """A fire time as local time plus how far from now, e.g. "2026-03-02 03:00:00 (in 3 h)"."""
    if not _is_number(ts):
        return _when(ts)
    assert isinstance(ts, int | float)
    return f"{_when(ts)} ({_relative(ts - now)})"


def _schedules(store: SqliteStore) -> int:
    """One line per schedule row: name, next fire, last fire, paused, fires/skips, trigger."""
    now = SystemClock().realtime()
    rows = store.list_schedules()
    width = max([4, *(len(_text(r.name, 60)) for r in rows)])
    print(f"{'name':<{width}}  {'next fire':<30}  {'last fire':<30}  paused  fires/skips  trigger")
    for r in rows:
        nxt = "never (no fire time left)" if r.next_fire is None else _fire_time(r.next_fire, now)
        last = "-" if r.last_fire is None else _fire_time(r.last_fire, now)
        print(
            f"{_text(r.name, 60):<{width}}  {nxt:<30}  {last:<30}  "
            f"{'yes' if r.paused else 'no':<6}  {f'{r.fires}/{r.skips}':<11}  {_text(r.spec, 80)}"
        )
    return 0


def _pause(store: SqliteStore, name: str, paused: bool) -> int:
    if not store.set_paused(name, paused):
        known = ", ".join(_text(r.name, 40) for r in store.list_schedules()[:10]) or "none yet"
        raise UsageError(
            f"no schedule entry named {_shown(name, 200)} in the store (known: {known});"
            " a worker records the entries of its schedule file when it starts"
        )
    print(f"schedule entry {_text(name, 200)} {'paused' if paused else 'resumed'}")
    return 0


def _retry(store: SqliteStore, job_id: int) -> int:
    if not store.retry(job_id, now=SystemClock().realtime()):
        row = store.get(job_id)
        state = "does not exist" if row is None else f"is {row.status.value}, not failed"
        print(f"error: job {job_id} {state}", file=sys.stderr)
        return 1
    print(f"job {job_id} re-queued")
    return 0


def _health(store: SqliteStore, host: str | None, lease: float) -> int:
    """Exit 0 with one line on stdout if `host`'s workers heartbeat, else 1 with it on stderr."""
    verdict = check_host(
        store.list_workers(),
        this_host() if host is None else host,
        now=SystemClock().realtime(),
        lease=lease,
    )
    print(
        f"{'ok' if verdict.ok else 'unhealthy'}: {verdict.reason}",
        file=None if verdict.ok else sys.stderr,
    )
    return 0 if verdict.ok else 1


def configure_logging(level: str | None, fmt: str | None) -> None:
    """Warnings (e.g. no worker could be woken) as one plain line each on stderr, or JSON.

    Raises:
        ConfigError: an unknown level or format.
    """
    settings = resolve_logging(
        level=level, fmt=fmt, environ=process_environ(), default_level=DEFAULT_CLI_LOG_LEVEL
    )
    cli.configure_logging(settings, "queue", text_format="%(levelname)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configure_logging(args.log_level, args.log_format)
        settings = resolve_queue(
            db=args.db,
            socket_dir=args.socket_dir,
            workers=args.workers,
            environ=process_environ(),
        )
        import_modules(args.imports)
        if args.command == "push":
            return _push(args, settings.db_path, settings.socket_dir, settings.total_workers)
        # stats and list only read: open with mode=ro so they never write to the file, and
        # refuse one that is not a queue database instead of giving it our schema.
        if args.command in ("retry", "pause", "resume"):
            store = SqliteStore.open_existing(settings.db_path)
        else:
            store = SqliteStore.open_readonly(settings.db_path)
        try:
            if args.command == "stats":
                return _stats(store)
            if args.command == "list":
                return _list(store, args.status, args.limit)
            if args.command == "workers":
                return _workers(store, resolve_lease(process_environ()))
            if args.command == "health":
                return _health(store, args.host, resolve_lease(process_environ()))
            if args.command == "schedules":
                return _schedules(store)
            if args.command in ("pause", "resume"):
                return _pause(store, args.name, args.command == "pause")
            return _retry(store, args.id)
        finally:
            store.close()
    except (ConfigError, UsageError, TransportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
