"""Jobs that misbehave toward their worker, for the supervision tests (tests/integration).

Imported by `python -m reference.worker --import tests.integration.stubborn_jobs`. Kept apart
from `jobs_for_tests.py` (shared) because these change the worker process itself.
"""

from __future__ import annotations

import asyncio
import os
import signal

from reference import Job


class IgnoresStop(Job):
    """Makes its worker ignore SIGTERM/SIGINT, notes that in the ledger, then sleeps an hour.

    Its worker can then neither stop gracefully nor be stopped by a signal it can catch:
    only the supervisor's stop grace (SIGKILL) ends it.
    """

    options = {"timeout": 3600}

    async def perform(self, ledger: str) -> None:
        # An async job runs in the worker's main thread, where signal.signal() is allowed.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"ignoring {os.getpid()}\n".encode())
        finally:
            os.close(fd)
        await asyncio.sleep(3600)
