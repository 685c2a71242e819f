"""Job classes that the schedule tests name by dotted path (tests.unit.fixture_jobs.X)."""

from __future__ import annotations

from reference.job import Job


class Tick(Job):
    """An async job with nothing to do."""

    async def perform(self) -> None:
        return None


class Report(Job):
    """A sync job with nothing to do."""

    def perform(self) -> None:
        return None


class NotAJob:
    """A class that is not a Job."""


NOT_A_CLASS = 42
