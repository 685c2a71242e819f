"""The metrics record layout and the `Counters` written by one worker.

Pure: works over any writable buffer (an mmap in production, a bytearray in the
simulator). `metrics.py` owns the shared file; this module owns the bytes of one segment.
Each worker writes only its own segment, one aligned 8-byte field at a time, with no lock;
readers in other processes may see a segment mid-update but never a torn field.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

# One segment per worker, 128 bytes (two cache lines) so workers never share a line.
SEGMENT_SIZE = 128
_LAYOUT = struct.Struct("<qqqqqqddq")  # 72 bytes used; the rest is reserved
FIELDS = (
    "total_runs",
    "total_successes",
    "total_failures",
    "total_timeouts",
    "total_skips",
    "active_jobs",
    "last_run_at",
    "last_duration_ms",
    "free_slots",
)
_OFFSET = {name: i * 8 for i, name in enumerate(FIELDS)}
_INT = struct.Struct("<q")
_FLOAT = struct.Struct("<d")


class Outcome(StrEnum):
    """How one run ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One worker's counters as read at one moment."""

    worker: int
    total_runs: int
    total_successes: int
    total_failures: int
    total_timeouts: int
    total_skips: int
    active_jobs: int
    last_run_at: float
    last_duration_ms: float
    free_slots: int  # concurrency slots free at the last change (set_capacity)

    @classmethod
    def unpack(cls, worker: int, data: bytes | memoryview, offset: int = 0) -> Snapshot:
        values = _LAYOUT.unpack_from(data, offset)
        return cls(worker, *values)


class Counters(Protocol):
    """What the runner records about every run; `NullCounters` when metrics are off."""

    def started(self, now: float) -> None: ...

    def finished(self, outcome: Outcome, duration_ms: float) -> None: ...

    def skipped(self) -> None: ...

    def set_capacity(self, free_slots: int) -> None: ...


class BufferCounters:
    """Counters stored in `SEGMENT_SIZE` bytes of `buffer` at `offset`."""

    __slots__ = ("_base", "_buf", "worker")

    def __init__(self, buffer: memoryview | bytearray, offset: int, worker: int) -> None:
        if offset < 0 or offset + SEGMENT_SIZE > len(buffer):
            raise ValueError(f"segment at {offset} does not fit a buffer of {len(buffer)} bytes")
        self._buf = buffer if isinstance(buffer, memoryview) else memoryview(buffer)
        self._base = offset
        self.worker = worker

    def _add(self, name: str, delta: int) -> None:
        at = self._base + _OFFSET[name]
        (value,) = _INT.unpack_from(self._buf, at)
        _INT.pack_into(self._buf, at, value + delta)

    def started(self, now: float) -> None:
        self._add("total_runs", 1)
        self._add("active_jobs", 1)
        _FLOAT.pack_into(self._buf, self._base + _OFFSET["last_run_at"], now)

    def finished(self, outcome: Outcome, duration_ms: float) -> None:
        if outcome is Outcome.SUCCESS:
            self._add("total_successes", 1)
        elif outcome is Outcome.FAILURE:
            self._add("total_failures", 1)
        else:
            self._add("total_timeouts", 1)
        self._add("active_jobs", -1)
        _FLOAT.pack_into(self._buf, self._base + _OFFSET["last_duration_ms"], duration_ms)

    def skipped(self) -> None:
        self._add("total_skips", 1)

    def set_capacity(self, free_slots: int) -> None:
        _INT.pack_into(self._buf, self._base + _OFFSET["free_slots"], free_slots)

    def reset(self) -> None:
        """Zero the segment (a worker starting afresh in its slot)."""
        self._buf[self._base : self._base + SEGMENT_SIZE] = bytes(SEGMENT_SIZE)

    def snapshot(self) -> Snapshot:
        return Snapshot.unpack(self.worker, self._buf, self._base)

    def __repr__(self) -> str:
        return f"BufferCounters(worker={self.worker}, offset={self._base})"


class NullCounters:
    """Counters that record nothing: metrics turned off cost one no-op call."""

    __slots__ = ()

    def started(self, now: float) -> None:
        pass

    def finished(self, outcome: Outcome, duration_ms: float) -> None:
        pass

    def skipped(self) -> None:
        pass

    def set_capacity(self, free_slots: int) -> None:
        pass

    def __repr__(self) -> str:
        return "NullCounters()"
