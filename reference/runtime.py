"""`Runtime` and `Worker`: the composition every worker is built from, real or simulated.

Layer 4. `Runtime` is a frozen bundle of the seams (clock, rng, registry, offload,
counters, observer, and for the queue a store and a transport); `Worker` builds the
scheduler and the queue consumer from one. The simulator constructs exactly these with
its own adapters: that is what "the same runtime code" means in practice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reference.config import DEFAULT_CONCURRENCY
from reference.consumer import Consumer, QueueWiring
from reference.observe import NULL_OBSERVER
from reference.records import LogEvent
from reference.row_scheduler import RowScheduler
from reference.runner import Runner, Slots
from reference.scheduler import Scheduler

if TYPE_CHECKING:
    import random
    from collections.abc import Sequence

    from reference.clock import Clock
    from reference.counters import Counters
    from reference.observe import Observer
    from reference.registry import Registry
    from reference.runner import Offload
    from reference.schedule import ScheduleEntry
    from reference.store import ScheduleStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Runtime:
    """The seams one worker runs on."""

    clock: Clock
    rng: random.Random
    registry: Registry
    offload: Offload
    counters: Counters
    observer: Observer = NULL_OBSERVER


class Worker:
    """One worker: its schedule entries and, if wired, the queue consumer, on one loop.

    With a `schedules` store, `entries` is the whole schedule and each tick is fired from
    its row by whichever worker claims it (`RowScheduler`); without one, `entries` are
    this worker's shard (`schedule.entries_for`), fired from memory (`Scheduler`).
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        index: int,
        entries: Sequence[ScheduleEntry] = (),
        concurrency: int = DEFAULT_CONCURRENCY,
        queue: QueueWiring | None = None,
        schedules: ScheduleStore | None = None,
    ) -> None:
        self.runtime = runtime
        self.index = index
        self.slots = Slots(concurrency, on_change=runtime.counters.set_capacity)
        self.runner = Runner(
            clock=runtime.clock,
            offload=runtime.offload,
            counters=runtime.counters,
            observer=runtime.observer,
            worker=index,
        )
        self.scheduler: Scheduler
        if schedules is not None:
            self.scheduler = RowScheduler(
                entries,
                store=schedules,
                index=index,
                clock=runtime.clock,
                rng=runtime.rng,
                runner=self.runner,
                slots=self.slots,
                counters=runtime.counters,
                observer=runtime.observer,
            )
        else:
            self.scheduler = Scheduler(
                entries,
                clock=runtime.clock,
                rng=runtime.rng,
                runner=self.runner,
                slots=self.slots,
                counters=runtime.counters,
                observer=runtime.observer,
            )
        self.queue = queue
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Begin a graceful stop: no new runs; running jobs finish or time out."""
        if not self._stopping.is_set():
            logger.info(
                "worker %d stopping: waiting for running jobs",
                self.index,
                extra={"event": LogEvent.WORKER_STOPPING, "worker": self.index},
            )
            self.runtime.observer.emit(LogEvent.WORKER_STOPPING, worker=self.index)
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        """Run until `stop()`, then wait for every run in flight; every task is owned here."""
        consumer = None
        if self.queue is not None:
            consumer = Consumer(
                self.queue,
                index=self.index,
                clock=self.runtime.clock,
                rng=self.runtime.rng,
                registry=self.runtime.registry,
                observer=self.runtime.observer,
                slots=self.slots,
                runner=self.runner,
            )
            # Before "started": a worker refused for a live socket must not look started.
            await consumer.open()
        logger.info(
            "worker %d started: %d schedule entries, concurrency %d, queue %s",
            self.index,
            len(self.scheduler.states),
            self.slots.size,
            "on" if self.queue else "off",
            extra={"event": LogEvent.WORKER_STARTED, "worker": self.index},
        )
        self.runtime.observer.emit(LogEvent.WORKER_STARTED, worker=self.index)
        async with asyncio.TaskGroup() as tasks:
            if self.scheduler.states:
                tasks.create_task(self.scheduler.run(self._stopping, tasks), name="scheduler")
            if consumer is not None:
                tasks.create_task(consumer.run(self._stopping, tasks), name="consumer")
            await self._stopping.wait()
        self.runner.close()
        logger.info(
            "worker %d stopped",
            self.index,
            extra={"event": LogEvent.WORKER_STOPPED, "worker": self.index},
        )
        self.runtime.observer.emit(LogEvent.WORKER_STOPPED, worker=self.index)

    def __repr__(self) -> str:
        return f"Worker(index={self.index}, {self.slots!r}, stopping={self.stopping})"
