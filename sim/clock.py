"""`SimClock`, the simulator's `reference.clock.Clock`, and `SkewProgram`, its wall-clock offsets.

Monotonic time is the running loop's (virtual) time plus the shared `MONOTONIC_BASE`; wall
time is computed as `epoch + loop time + skew`, never fed back into the loop. Imports only
`reference.clock` from the package; never reads the real clock.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from reference.clock import MONOTONIC_BASE

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Iterable

__all__ = ["SimClock", "SkewProgram"]

_PPM = 1_000_000


@dataclass(frozen=True, slots=True, init=False)
class SkewProgram:
    """An immutable program of wall-clock offsets over virtual time.

    `steps` are `(at_virtual_seconds, offset_seconds)` pairs with strictly increasing
    instants: from `at` on (inclusive) the wall clock reads `offset` seconds away from
    `epoch + virtual time`, which expresses NTP steps forward (positive) and back
    (negative). Before the first step the offset is 0. `drift_ppm` adds a linear drift
    that accumulates from the latest step (or from 0.0), so a step also models an NTP
    correction that cancels the drift accumulated so far:

        skew(t) = offset_k + drift_ppm * 1e-6 * (t - at_k)
    """

    steps: tuple[tuple[float, float], ...]
    drift_ppm: float
    _instants: tuple[float, ...] = field(repr=False, compare=False)

    def __init__(self, steps: Iterable[tuple[float, float]] = (), drift_ppm: float = 0.0) -> None:
        """Validate and freeze the steps; raise ValueError if unordered or not finite."""
        frozen = tuple((float(at), float(offset)) for at, offset in steps)
        for at, offset in frozen:
            if not (math.isfinite(at) and math.isfinite(offset)) or at < 0.0:
                raise ValueError(f"skew step ({at!r}, {offset!r}) must be finite with at >= 0")
        for (prev, _), (at, _) in itertools.pairwise(frozen):
            if at <= prev:
                raise ValueError(f"skew step instants must strictly increase: {prev!r} then {at!r}")
        if not math.isfinite(drift_ppm):
            raise ValueError(f"drift_ppm must be finite, got {drift_ppm!r}")
        object.__setattr__(self, "steps", frozen)
        object.__setattr__(self, "drift_ppm", float(drift_ppm))
        object.__setattr__(self, "_instants", tuple(at for at, _ in frozen))

    def offset_at(self, virtual_seconds: float) -> float:
        """Return the wall-clock offset in seconds at virtual time `virtual_seconds`."""
        index = bisect.bisect_right(self._instants, virtual_seconds) - 1
        at, offset = self.steps[index] if index >= 0 else (0.0, 0.0)
        if self.drift_ppm:
            offset += self.drift_ppm * (virtual_seconds - at) / _PPM
        return offset


class SimClock:
    """A `Clock` on the given loop's virtual time, with an epoch and optional skew.

    `monotonic()` is `loop.time() + MONOTONIC_BASE` and never goes backwards;
    `realtime()` is `epoch + loop.time() + skew(loop.time())` and may step backwards under a
    negative skew step; `wall()` is `realtime()` as an aware UTC datetime.
    """

    __slots__ = ("_epoch", "_epoch_seconds", "_loop", "_skew")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        epoch: datetime,
        skew: SkewProgram | None = None,
    ) -> None:
        """Bind to `loop` (read directly, never via get_event_loop); `epoch` must be aware."""
        if epoch.tzinfo is None or epoch.utcoffset() is None:
            raise ValueError(f"epoch must be a timezone-aware datetime, got {epoch!r}")
        self._loop = loop
        self._epoch = epoch.astimezone(UTC)
        self._epoch_seconds = self._epoch.timestamp()
        self._skew = skew

    @property
    def epoch(self) -> datetime:
        """The wall time (UTC) at virtual time 0.0, before skew."""
        return self._epoch

    @property
    def skew(self) -> SkewProgram | None:
        """The skew program, if any."""
        return self._skew

    def monotonic(self) -> float:
        """Return the loop's virtual time plus the shared non-zero `MONOTONIC_BASE`."""
        return self._loop.time() + MONOTONIC_BASE

    def realtime(self) -> float:
        """Return simulated POSIX seconds: epoch + virtual time + skew."""
        now = self._loop.time()
        if self._skew is None:
            return self._epoch_seconds + now
        return self._epoch_seconds + now + self._skew.offset_at(now)

    def wall(self) -> datetime:
        """Return `realtime()` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.realtime(), UTC)

    def __repr__(self) -> str:
        return (
            f"SimClock(t={self._loop.time():.9f}, epoch={self._epoch.isoformat()}, "
            f"skew={self._skew!r})"
        )
