"""`InlineOffload`: the simulator's stand-in for threads.

A sync `perform` runs inline on the loop thread and takes zero virtual time, so the run is
deterministic (SIMULATION.md: real threads gave six different traces in thirty runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


class InlineOffload:
    """Runs a blocking callable inline; counts the calls."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, fn: Callable[[], object]) -> object:
        self.calls += 1
        return fn()

    def __repr__(self) -> str:
        return f"InlineOffload(calls={self.calls})"
