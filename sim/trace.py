"""The simulator's trace: an append-only record of what the runtime did, in virtual time.

Canonical formatting (virtual time in ns, host, event, sorted fields) makes a run's trace
byte-identical for a given seed; its sha256 is the determinism oracle. Records are stored
raw and formatted only when printed or hashed, so a long run pays little for tracing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from reference.observe import Field
    from reference.records import LogEvent


@dataclass(frozen=True, slots=True)
class Record:
    """One traced event: virtual nanoseconds, host index (0 = the world), event, fields."""

    ns: int
    host: int
    event: str
    fields: dict[str, Field]

    def get(self, key: str) -> Field:
        return self.fields.get(key)

    def line(self) -> str:
        parts = " ".join(f"{k}={_fmt(v)}" for k, v in sorted(self.fields.items()))
        seconds, frac = divmod(self.ns, 1_000_000_000)
        return f"{seconds:>6}.{frac:09d} h{self.host} {self.event}{' ' if parts else ''}{parts}"


def _fmt(value: Field) -> str:
    if isinstance(value, float):
        return repr(round(value, 9))
    return str(value)


class Trace:
    """Collects records from every host; `now_ns` reads the virtual loop's time."""

    __slots__ = ("_now_ns", "records")

    def __init__(self, now_ns: Callable[[], int]) -> None:
        self._now_ns = now_ns
        self.records: list[Record] = []

    def emit(self, host: int, event: str, fields: dict[str, Field]) -> None:
        self.records.append(Record(self._now_ns(), host, event, fields))

    def of(self, *events: str) -> Iterator[Record]:
        """Records of the given events, in order."""
        wanted = set(events)
        return (r for r in self.records if r.event in wanted)

    def lines(self) -> Iterator[str]:
        return (r.line() for r in self.records)

    def digest(self) -> str:
        h = hashlib.sha256()
        for line in self.lines():
            h.update(line.encode())
            h.update(b"\n")
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"Trace({len(self.records)} records)"


class HostObserver:
    """A reference `Observer` that writes one host's events into the world trace."""

    __slots__ = ("_host", "_trace")

    def __init__(self, trace: Trace, host: int) -> None:
        self._trace = trace
        self._host = host

    def emit(self, event: LogEvent, /, **fields: Field) -> None:
        self._trace.emit(self._host, event.value, fields)

    def __repr__(self) -> str:
        return f"HostObserver(host={self._host})"
