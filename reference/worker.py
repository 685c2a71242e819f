"""`python -m reference.worker`: the supervisor, or one worker with `--worker-index`.

Layer 4 (composition root). `main(argv) -> int` parses, resolves settings, validates the
whole schedule before any worker starts, then runs the supervisor or one worker. It keeps
no module state: `python -m` runs this file as `__main__`, a second copy of the module.
Exit status: 0 after a graceful stop, 2 for bad usage or configuration, 1 for a failure;
a worker also exits 3 when its queue database is missing or corrupt, which tells its
supervisor that a restart will not help (`reference.supervisor` lists the codes).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import random
import sys
from contextlib import ExitStack
from typing import TYPE_CHECKING

from reference.allocator import keep_freed_heap
from reference.cli import OneLineParser, add_logging_options, add_version, configure_logging
from reference.clock import SystemClock
from reference.config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DB_PATH,
    DEFAULT_LOG_LEVEL,
    DEFAULT_SOCKET_DIR,
    DEFAULT_WORKERS,
    WorkerSettings,
    default_metrics_path,
    process_environ,
    resolve_logging,
    resolve_worker,
)
from reference.counters import NullCounters
from reference.errors import (
    BackgroundError,
    ConfigError,
    StoreCorruptError,
    StoreError,
    StoreUnusableError,
)
from reference.metrics import METRICS_SUFFIX
from reference.offload import ThreadOffload
from reference.records import LogEvent
from reference.registry import default_registry
from reference.runtime import Runtime, Worker
from reference.schedule import ScheduleEntry, load_schedule
from reference.supervisor import (
    EXIT_UNUSABLE,
    Supervisor,
    ignore_stop_signals,
    install_stop_handlers,
    python_argv,
    stop_when_parent_dies,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence
    from typing import Any

    from reference.counters import Counters

logger = logging.getLogger("reference.worker")

# How often a supervised worker checks that its supervisor is still its parent: one cheap
# getppid() a second, the fallback where the kernel's parent-death signal is unavailable.
PARENT_CHECK_INTERVAL = 1.0
# At exit, how long tasks still running get to end after their cancellation (see
# run_worker_loop): only job runs abandoned for ignoring cancellation are ever still there.
LEFTOVER_GRACE = 1.0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m reference.worker",
        description="Run scheduled and queued jobs: a supervisor of N workers, or one worker.",
    )
    add_version(parser)
    parser.add_argument(
        "--schedule",
        metavar="PATH",
        help="schedule YAML file (env SCHEDULE_PATH; default: none, serve the queue only)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=f"worker processes (env BACKGROUND_FORKS; default: {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="K",
        help=f"jobs at once per worker (env LIMIT_JOB_COUNT; default: {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--db",
        metavar="PATH",
        help=f"queue SQLite file (env QUEUE_DB_PATH; default: {DEFAULT_DB_PATH})",
    )
    parser.add_argument(
        "--socket-dir",
        metavar="DIR",
        help=f"wake-up socket dir (env QUEUE_SOCKET_DIR; default: {DEFAULT_SOCKET_DIR})",
    )
    parser.add_argument(
        "--metrics",
        metavar="PATH",
        help=f"metrics file, or 'off' (env METRICS_PATH; default: the database path plus "
        f"{METRICS_SUFFIX}, e.g. {default_metrics_path()})",
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE so its Job subclasses are registered (repeatable)",
    )
    parser.add_argument("--worker-index", type=int, metavar="I", help="run only this worker (1..N)")
    add_logging_options(parser, default_level=DEFAULT_LOG_LEVEL)
    # Internal: the supervisor passes its pid, and the worker stops when that parent is gone.
    parser.add_argument("--supervisor-pid", type=int, help=argparse.SUPPRESS)
    return parser


def import_modules(modules: Sequence[str]) -> None:
    """Import each `--import` module so its jobs register.

    Raises:
        ConfigError: a module cannot be imported.
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any import-time error is a configuration error here
            raise ConfigError(f"cannot import {name!r}: {exc}", key="import") from exc


def _counters(settings: WorkerSettings, index: int, stack: ExitStack) -> Counters:
    if settings.metrics_path is None:
        return NullCounters()
    from reference.metrics import open_metrics

    segment = open_metrics(settings.metrics_path, index, settings.workers)
    stack.callback(segment.close)
    return segment.counters


async def watch_parent(parent: int, index: int, on_gone: Callable[[], None]) -> None:
    """Call `on_gone` once this process's parent is no longer `parent` (it died; re-parented)."""
    while True:
        if os.getppid() != parent:
            logger.warning(
                "worker %d: its supervisor is gone; stopping",
                index,
                extra={"event": LogEvent.WORKER_STOPPING, "worker": index},
            )
            on_gone()
            return
        await asyncio.sleep(PARENT_CHECK_INTERVAL)


async def serve(
    settings: WorkerSettings,
    entries: Sequence[ScheduleEntry],
    index: int,
    *,
    supervisor_pid: int | None = None,
) -> int:
    """Run worker `index` until SIGTERM/SIGINT (or its supervisor's death); return its status."""
    if settings.heap_trim_threshold is not None:
        keep_freed_heap(settings.heap_trim_threshold)
    with ExitStack() as stack:
        runtime = Runtime(
            clock=SystemClock(),
            rng=random.Random(),
            registry=default_registry,
            offload=ThreadOffload(),
            counters=_counters(settings, index, stack),
        )
        queue = None
        if settings.serves_queue(index):
            from reference.wiring import open_queue_wiring

            queue = open_queue_wiring(settings, index, stack)
        # The jobs this worker runs enqueue through a producer of its own (its own
        # connection), with no configure() in the job's code.
        from reference.queue import install, reset

        # Under a supervisor the database exists (it made it); never create an empty one.
        install(settings.queue, create=supervisor_pid is None)
        stack.callback(reset)
        # Schedule entries are rows of the store (every worker loads them all; placement
        # decides who tries first), so two supervisors on one database fire a tick once.
        schedules = None
        if entries:
            from reference.wiring import open_schedule_store

            schedules = open_schedule_store(settings, stack)
        worker = Worker(
            runtime,
            index=index,
            entries=entries,
            concurrency=settings.concurrency,
            queue=queue,
            schedules=schedules,
        )
        install_stop_handlers(asyncio.get_running_loop(), worker.stop)
        try:
            if supervisor_pid is None:
                await worker.run()
            else:
                async with asyncio.TaskGroup() as tasks:
                    watch = tasks.create_task(
                        watch_parent(supervisor_pid, index, worker.stop), name="parent-watch"
                    )
                    try:
                        await worker.run()
                    finally:
                        watch.cancel()
        finally:
            ignore_stop_signals()
    return 0


async def supervise(settings: WorkerSettings, argv: Sequence[str]) -> int:
    """Run the supervisor of workers 1..N; return 0 after a graceful stop."""
    from reference.wiring import check_sockets_free, prepare_store

    prepare_store(settings)  # the schema exists before any worker opens the file
    check_sockets_free(settings)  # a live socket: another supervisor serves this dir

    pid = str(os.getpid())

    def worker_argv(index: int) -> list[str]:
        return python_argv(
            "reference.worker", [*argv, "--worker-index", str(index), "--supervisor-pid", pid]
        )

    supervisor = Supervisor(
        worker_argv,
        range(1, settings.workers + 1),
        clock=SystemClock(),
        stop_grace=settings.stop_grace,
    )
    install_stop_handlers(asyncio.get_running_loop(), supervisor.stop)
    return await supervisor.run()


def run_worker_loop(main: Coroutine[Any, Any, int]) -> int:
    """`asyncio.run(main)`, except that it gives up on tasks that ignore cancellation.

    `asyncio.run` cancels every task left at the end and then waits for all of them, so
    one job abandoned for swallowing its cancellation (`reference.runner`) would hold the
    worker, and its supervisor's stop, for as long as that job likes. Leftovers get
    `LEFTOVER_GRACE` seconds after their cancellation, then the process exits past them.
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            leftovers = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.wait(leftovers, timeout=LEFTOVER_GRACE))
            stuck = [task for task in leftovers if not task.done()]
            if stuck:
                logger.warning(
                    "exiting past %d abandoned job run(s) that ignore cancellation",
                    len(stuck),
                    extra={"event": LogEvent.WORKER_STOPPED},
                )
                for task in stuck:  # they will never be awaited: no "never retrieved" noise
                    task._log_destroy_pending = False  # type: ignore[attr-defined]
            else:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(args_list)
    tag = "supervisor" if args.worker_index is None else f"worker {args.worker_index}"
    try:
        logs = resolve_logging(level=args.log_level, fmt=args.log_format, environ=process_environ())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(logs, tag)
    supervised = args.worker_index is not None and args.supervisor_pid is not None
    if supervised and not _tie_to_supervisor(args.supervisor_pid):
        return 0
    settings: WorkerSettings | None = None
    try:
        settings = resolve_worker(
            schedule=args.schedule,
            workers=args.workers,
            concurrency=args.concurrency,
            db=args.db,
            socket_dir=args.socket_dir,
            metrics=args.metrics,
            imports=args.imports,
            worker_index=args.worker_index,
            environ=process_environ(),
        )
        import_modules(settings.imports)
        entries: list[ScheduleEntry] = []
        if settings.schedule_path is not None:
            entries = load_schedule(settings.schedule_path, total_workers=settings.workers)
        if settings.worker_index is not None:
            if supervised:
                _check_database_exists(settings)
            return run_worker_loop(
                serve(
                    settings,
                    entries,
                    settings.worker_index,
                    supervisor_pid=args.supervisor_pid,
                )
            )
        return asyncio.run(supervise(settings, args_list))
    except BackgroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _exit_status([exc], settings, supervised)
    except BaseExceptionGroup as group:
        # A worker's task group wraps what its tasks raise (a live socket at listen, a
        # store that cannot recover): still one line, unless something else is in there.
        errors = _background_errors(group)
        if errors is None:
            raise
        print(f"error: {'; '.join(dict.fromkeys(str(e) for e in errors))}", file=sys.stderr)
        return _exit_status(errors, settings, supervised)


def _tie_to_supervisor(pid: int) -> bool:
    """Die with supervisor `pid`; False if it is already gone (this worker should not start).

    The parent-death signal only covers a parent that dies after it is set; a supervisor
    killed while this process was still starting has re-parented it already.
    """
    stop_when_parent_dies()
    if os.getppid() != pid:
        logger.warning("supervisor %d is gone before this worker started; exiting", pid)
        return False
    return True


def _check_database_exists(settings: WorkerSettings) -> None:
    """Refuse to serve a queue database that vanished under a running supervisor.

    The supervisor created the file before starting any worker, so a missing one was
    deleted or moved; opening it would create an empty queue no producer writes to.

    Raises:
        StoreError: the database file does not exist.
    """
    db_path = settings.queue.db_path
    if not os.path.exists(db_path):  # every worker's jobs enqueue into it, not only consumers
        raise StoreError(
            f"queue database {db_path!r} does not exist (deleted or moved while the "
            "supervisor ran?); not creating an empty one"
        )


def _exit_status(
    errors: Sequence[BackgroundError], settings: WorkerSettings | None, supervised: bool
) -> int:
    """2 for configuration errors, 3 (supervised) for an unusable database, else 1."""
    if all(isinstance(e, ConfigError) for e in errors):
        return 2
    if supervised and settings is not None:
        db_path = settings.queue.db_path
        for exc in errors:
            if isinstance(exc, StoreCorruptError | StoreUnusableError) or (
                isinstance(exc, StoreError) and not os.path.exists(db_path)
            ):
                return EXIT_UNUSABLE
    return 1


def _background_errors(group: BaseExceptionGroup[BaseException]) -> list[BackgroundError] | None:
    """The leaf errors of `group` if every one is a `BackgroundError`, else None."""
    leaves: list[BackgroundError] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            nested = _background_errors(exc)
            if nested is None:
                return None
            leaves.extend(nested)
        elif isinstance(exc, BackgroundError):
            leaves.append(exc)
        else:
            return None
    return leaves


if __name__ == "__main__":
    raise SystemExit(main())
