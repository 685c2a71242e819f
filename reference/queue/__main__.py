"""`python -m reference.queue`: push, stats, list and retry against the queue database.

Layer 4 (CLI). Errors print one line to stderr with no traceback: exit 2 for bad usage or
input (unknown job, bad JSON, bad option), 1 for a failed operation (missing or corrupt
database, a locked one, an id that is not failed).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from reference.clock import SystemClock
from reference.config import process_environ, resolve_queue
from reference.errors import BackgroundError, ConfigError, StoreError, UnknownJobError
from reference.records import JobStatus
from reference.registry import default_registry
from reference.sqlite_store import SqliteStore
from reference.worker import import_modules

if TYPE_CHECKING:
    from collections.abc import Sequence

    from reference.records import JobRow


class UsageError(BackgroundError):
    """Bad input on the command line (exit 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reference.queue", description="Enqueue and inspect queued jobs."
    )
    parser.add_argument("--db", help="queue SQLite file (env QUEUE_DB_PATH)")
    parser.add_argument("--socket-dir", help="wake-up socket dir (env QUEUE_SOCKET_DIR)")
    parser.add_argument("--workers", type=int, help="worker count (env BACKGROUND_FORKS)")
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE so its Job subclasses are known (repeatable)",
    )
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
        "--in", dest="delay", type=float, metavar="SECONDS", help="run this many seconds from now"
    )
    when.add_argument(
        "--at", dest="at", metavar="ISO8601", help="run at this time (naive = local time)"
    )
    push.add_argument("--options", metavar="JSON", help="call-site options as a JSON object")
    sub.add_parser("stats", help="counts by status and the oldest pending job's age")
    lst = sub.add_parser("list", help="list jobs, newest first")
    lst.add_argument("--status", choices=[s.value for s in JobStatus])
    lst.add_argument("--limit", type=int, default=50)
    retry = sub.add_parser("retry", help="re-queue a failed job")
    retry.add_argument("id", type=int)
    return parser


def _json(text: str, what: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON ({exc.msg} at column {exc.colno})") from None


def _job_class(name: str, imports: Sequence[str]) -> type:
    try:
        return default_registry.resolve(name)
    except UnknownJobError:
        module = name.rpartition(".")[0]
        hint = f" (did you mean --import {module}?)" if module and module not in imports else ""
        raise UsageError(
            f"unknown job {name!r}: no such Job subclass is registered{hint}"
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
    if args.delay is not None and not math.isfinite(args.delay):
        # float() accepts "nan" and "inf": NaN reached SQLite as NULL (a NOT NULL store
        # error, exit 1) and inf parked the job forever.
        raise UsageError(f"--in must be a finite number of seconds, not {args.delay}")
    run_at = None
    if args.at is not None:
        try:
            run_at = datetime.fromisoformat(args.at).timestamp()
        except ValueError:
            raise UsageError(f"--at {args.at!r} is not an ISO 8601 date-time") from None
    producer = configure(db, socket_dir, workers, create=False)
    try:
        job_id = producer.enqueue(
            cls, tuple(values), options=options, delay=args.delay, run_at=run_at
        )
    except (TypeError, ValueError) as exc:  # PayloadError, option errors
        raise UsageError(str(exc)) from None
    finally:
        reset()
    print(job_id)
    return 0


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _stats(store: SqliteStore) -> int:
    stats = store.stats()
    for status in JobStatus:
        print(f"{status.value:<8} {getattr(stats, status.value)}")
    oldest = stats.oldest_pending_run_at
    if oldest is None:
        print("oldest pending: -")
    else:
        age = SystemClock().realtime() - oldest
        state = f"due {age:.1f} s ago" if age >= 0 else f"due in {-age:.1f} s"
        print(f"oldest pending: {_when(oldest)} ({state})")
    return 0


def _row_line(row: JobRow) -> str:
    error = (row.last_error or "").replace("\n", " ")
    if len(error) > 60:
        error = error[:57] + "..."
    return (
        f"{row.id:>6}  {row.status.value:<7}  {row.attempts:>3}  {_when(row.run_at):<19}  "
        f"{row.name}  {error}"
    ).rstrip()


def _list(store: SqliteStore, status: str | None, limit: int) -> int:
    rows = store.list_jobs(None if status is None else JobStatus(status), limit=limit)
    print(f"{'id':>6}  {'status':<7}  {'try':>3}  {'run at':<19}  job  last error")
    for row in rows:
        print(_row_line(row))
    return 0


def _retry(store: SqliteStore, job_id: int) -> int:
    if not store.retry(job_id, now=SystemClock().realtime()):
        row = store.get(job_id)
        state = "does not exist" if row is None else f"is {row.status.value}, not failed"
        print(f"error: job {job_id} {state}", file=sys.stderr)
        return 1
    print(f"job {job_id} re-queued")
    return 0


def configure_logging() -> None:
    """Warnings (e.g. no worker could be woken) as one plain line each on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        settings = resolve_queue(
            db=args.db,
            socket_dir=args.socket_dir,
            workers=args.workers,
            environ=process_environ(),
        )
        import_modules(args.imports)
        if args.command == "push":
            return _push(args, settings.db_path, settings.socket_dir, settings.total_workers)
        store = SqliteStore.open_existing(settings.db_path)
        try:
            if args.command == "stats":
                return _stats(store)
            if args.command == "list":
                return _list(store, args.status, args.limit)
            return _retry(store, args.id)
        finally:
            store.close()
    except (ConfigError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
