"""`ThreadOffload`: runs a sync `perform` in its own thread (the only importer of `threading`).

Layer 3 (adapter). A thread per run rather than a pool: a run that times out is abandoned
(Python cannot kill a thread), and an abandoned thread must not hold a pool slot that the
next job needs. The abandoned thread is a daemon, so it never blocks process exit; its
result, if it ever finishes, is dropped. The job's context (`current_worker()`) is copied in.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)


def _settle(fut: asyncio.Future[object], result: object, exc: BaseException | None) -> None:
    if fut.done():  # the run timed out and was abandoned
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class ThreadOffload:
    """Runs each blocking callable in a new daemon thread."""

    __slots__ = ("_started",)

    def __init__(self) -> None:
        self._started = 0

    async def run(self, fn: Callable[[], object]) -> object:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[object] = loop.create_future()
        ctx = contextvars.copy_context()

        def target() -> None:
            result: object = None
            error: BaseException | None = None
            try:
                result = ctx.run(fn)
            except BaseException as exc:  # handed to the awaiting task, which decides
                error = exc
            try:
                loop.call_soon_threadsafe(_settle, fut, result, error)
            except RuntimeError:  # the loop closed while an abandoned run went on
                logger.debug("abandoned sync job finished after its loop closed")

        self._started += 1
        thread = threading.Thread(target=target, name=f"job-{self._started}", daemon=True)
        thread.start()
        return await fut

    def __repr__(self) -> str:
        return f"ThreadOffload(started={self._started})"
