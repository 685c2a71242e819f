"""Example jobs: what `make run` schedules, and what you can push from another shell.

    python -m reference.queue --import examples.jobs push examples.jobs.SendEmail '[42, "welcome"]'
"""

from __future__ import annotations

import asyncio
import logging
import time

from reference import Job, current_worker

logger = logging.getLogger(__name__)


class Heartbeat(Job):
    """Logs a line; scheduled every 10 seconds."""

    async def perform(self) -> None:
        logger.info("heartbeat from worker %s", current_worker())


class NightlyReport(Job):
    """A cron job: a blocking `def perform` runs in a thread."""

    options = {"timeout": 120}

    def perform(self) -> None:
        time.sleep(0.2)  # stands in for blocking work (a report query)
        logger.info("nightly report built on worker %s", current_worker())


class SendEmail(Job):
    """A queued job with retries and exponential backoff."""

    options = {"timeout": 30, "retry": 3, "retry_delay": 2, "backoff": "exponential"}

    async def perform(self, user_id: int, template: str) -> None:
        await asyncio.sleep(0.05)  # stands in for an SMTP call
        logger.info("sent %r to user %s from worker %s", template, user_id, current_worker())


class Flaky(Job):
    """Fails on purpose, to show retries and `last_error` in `python -m reference.queue list`."""

    options = {"retry": 2, "retry_delay": 1, "backoff": "linear"}

    async def perform(self, reason: str = "boom") -> None:
        raise RuntimeError(reason)
