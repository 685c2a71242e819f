"""Judging peers: which worker processes are gone, so their running jobs may be re-queued.

Layer 1 (domain): pure logic over `WorkerRow`s; no I/O, no clock reads (times are passed
in). A consumer keeps one `PeerWatch` and asks it each maintenance pass which live-looking
rows belong to dead owners. An owner is dead when

* the probe says it is gone for sure: on this host, its pid no longer exists (a restarted
  worker recovers its predecessor's jobs at once, as the old index-based recovery did); or
* its `heartbeat_at` has stayed the same for `lease` seconds of *this observer's*
  monotonic time. The peer's heartbeat value is read only as a token that changes, never
  compared with our clock: neither skew between hosts nor a wall-clock step on either side
  can make a live owner look dead, and a fresh observer must watch for a whole lease
  before it judges a silent peer (a stall that long, or a crash, is what justifies a
  second run).

Rows already marked stopped are not judged: the owner released its jobs itself (a
graceful stop) or a peer already re-queued them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from reference.records import WorkerRow

# "Gone for sure?" True only when the owner's process certainly no longer exists; False
# when it may exist or cannot be checked (another host), which leaves it to the heartbeat.
Probe = Callable[["WorkerRow"], bool]


def never_gone(_row: WorkerRow) -> bool:
    """The probe for owners nobody can check: only their heartbeat can say."""
    return False


class PeerWatch:
    """Remembers how long each peer's heartbeat has looked the same to this observer."""

    __slots__ = ("_gone", "_lease", "_me", "_seen")

    def __init__(self, me: str, *, lease: float, gone: Probe = never_gone) -> None:
        self._me = me
        self._lease = lease
        self._gone = gone
        self._seen: dict[str, tuple[float, float]] = {}  # owner -> (heartbeat_at, since)

    def dead(self, rows: Sequence[WorkerRow], *, monotonic: float) -> list[str]:
        """The owners among `rows` (live-looking, not this one) judged dead now."""
        dead: list[str] = []
        seen: dict[str, tuple[float, float]] = {}
        for row in rows:
            if row.stopped_at is not None or row.owner == self._me:
                continue
            if self._gone(row):
                dead.append(row.owner)
                continue
            beat, since = self._seen.get(row.owner, (row.heartbeat_at, monotonic))
            if beat != row.heartbeat_at:
                beat, since = row.heartbeat_at, monotonic
            if monotonic - since >= self._lease:
                dead.append(row.owner)
            else:
                seen[row.owner] = (beat, since)
        self._seen = seen  # owners that left the table (or died) are forgotten
        return dead

    def __repr__(self) -> str:
        return f"PeerWatch(me={self._me!r}, watching={len(self._seen)})"
