"""`Observer`: the structured event channel the simulator's trace listens on.

Layer 0: pure. Runtime code reports what it does (`JOB_STARTED`, `JOB_SKIPPED`, ...) to the
observer it is given; production passes `NullObserver`, the simulator records a trace.
Logs are for people; this channel is the test oracle (STYLE 4.6).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from reference.records import LogEvent

Field = str | int | float | bool | None


class Observer(Protocol):
    """Receives one call per runtime event, with scalar fields only."""

    def emit(self, event: LogEvent, /, **fields: Field) -> None: ...


class NullObserver:
    """Discards every event (production)."""

    __slots__ = ()

    def emit(self, event: LogEvent, /, **fields: Field) -> None:
        pass

    def __repr__(self) -> str:
        return "NullObserver()"


NULL_OBSERVER = NullObserver()
