"""Poison jobs for the real-process tests of the job boundary (issue: poison jobs).

Each appends "<tag> <pid>" to the ledger named by its first argument before misbehaving, so
a test can count how many times it ran and in which process.
"""

from __future__ import annotations

import asyncio
import os
import sys

from reference import Job
from tests.integration.jobs_for_tests import append_line


def _stamp(ledger: str, tag: str) -> None:
    append_line(ledger, f"{tag} {os.getpid()}")


class KillsWorker(Job):
    """Takes its worker process down, as a segfault or the OOM killer would."""

    async def perform(self, ledger: str) -> None:
        _stamp(ledger, "kill")
        os._exit(1)


class Raises(Job):
    """Raises what the worker's old boundary let through (or failed to record)."""

    async def perform(self, ledger: str, kind: str) -> None:
        _stamp(ledger, kind)
        if kind == "exit":
            sys.exit(3)
        if kind == "interrupt":
            raise KeyboardInterrupt
        raise OSError("cannot open " + os.fsdecode(b"caf\xe9.txt"))  # a lone surrogate


class SyncExits(Job):
    """A blocking perform (in the worker's thread) that calls sys.exit()."""

    def perform(self, ledger: str) -> None:
        _stamp(ledger, "sync-exit")
        sys.exit("bye")


class IgnoresCancel(Job):
    """Swallows its timeout's cancellation and goes on for a minute."""

    options = {"timeout": 1}

    async def perform(self, ledger: str) -> None:
        _stamp(ledger, "stubborn")
        loop = asyncio.get_running_loop()
        end = loop.time() + 60.0
        while loop.time() < end:
            try:
                await asyncio.sleep(end - loop.time())
            except asyncio.CancelledError:
                _stamp(ledger, "cancel-ignored")
