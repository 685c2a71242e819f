"""`JobOptions`: per-job timeout and retry policy, their validation, merging and backoff.

Pure: no I/O and no clock reads; jitter draws from the `random.Random` it is handed.
SPEC: the call site wins over the class level, and `None` keeps the class value; unknown
keys raise `ValueError`, wrong types `TypeError`, at enqueue.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from reference.errors import InvalidOptionError, OptionTypeError

if TYPE_CHECKING:
    import random
    from collections.abc import Mapping

Backoff = Literal["fixed", "linear", "exponential"]
BACKOFFS: tuple[Backoff, ...] = ("fixed", "linear", "exponential")

DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRY_DELAY = 1.0
# A run that ended with its worker's death (os._exit, a segfault, the OOM killer) counts as
# a crash; after this many the job ends `failed` instead of taking down every next worker.
DEFAULT_MAX_CRASHES = 3
# Exponential backoff doubles; cap it so a large retry count cannot schedule a job decades out.
MAX_RETRY_DELAY = 24 * 3600.0
# Counts are stored as JSON and compared with SQLite integers: keep them well inside int64.
MAX_COUNT = 1_000_000


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Timeout and retry policy of one job; build with `JobOptions.parse` to validate."""

    timeout: float = DEFAULT_TIMEOUT
    retry: int = 0
    retry_delay: float = DEFAULT_RETRY_DELAY
    backoff: Backoff = "fixed"
    jitter: float | None = None  # None: 0.5 for exponential, else 0 (SPEC)
    max_crashes: int = DEFAULT_MAX_CRASHES

    @property
    def effective_jitter(self) -> float:
        if self.jitter is not None:
            return self.jitter
        return 0.5 if self.backoff == "exponential" else 0.0

    def merged(self, overrides: Mapping[str, object] | None) -> JobOptions:
        """Return these options with `overrides` applied; a `None` value keeps ours."""
        if not overrides:
            return self
        changes = _validate(overrides)
        return replace(self, **changes) if changes else self

    @classmethod
    def parse(cls, raw: Mapping[str, object] | None) -> JobOptions:
        """Validate a user-supplied mapping (class `options` or call-site `options=`)."""
        return cls().merged(raw)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys) of every field, as stored with each job."""
        fields = {
            "backoff": self.backoff,
            "jitter": self.jitter,
            "max_crashes": self.max_crashes,
            "retry": self.retry,
            "retry_delay": self.retry_delay,
            "timeout": self.timeout,
        }
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> JobOptions:
        """Read options back from the store; re-validated, since the file is outside our control.

        Cached by text: most jobs of a class share one options string, and the result is
        immutable.
        """
        return _from_json(text)

    def retry_delay_for(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before the retry that follows failed run number `attempt` (1-based).

        fixed: d; linear: d * attempt; exponential: d * 2 ** (attempt - 1); then scaled by a
        uniform factor in [1 - jitter, 1 + jitter] and capped at one day.
        """
        if attempt < 1:
            raise ValueError("attempt counts runs started, so it is at least 1")
        base = self.retry_delay
        if self.backoff == "linear":
            base *= attempt
        elif self.backoff == "exponential":
            base *= 2.0 ** min(attempt - 1, 62)
        jitter = self.effective_jitter
        if jitter:
            base *= rng.uniform(1.0 - jitter, 1.0 + jitter)
        return min(max(base, 0.0), MAX_RETRY_DELAY)


def _number(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OptionTypeError(f"option {key!r} must be a number, not {type(value).__name__}")
    number = float(value)
    # NaN slips past every range check below (all comparisons are False), and neither NaN
    # nor infinity is JSON, which is how options are stored.
    if not math.isfinite(number):
        raise InvalidOptionError(f"option {key!r} must be a finite number, not {number!r}")
    return number


def _validate(raw: Mapping[str, object]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _FIELDS:
            raise InvalidOptionError(
                f"unknown job option {key!r}; known options: {', '.join(sorted(_FIELDS))}"
            )
        if value is None:
            continue
        if key in ("timeout", "retry_delay", "jitter"):
            number = _number(key, value)
            if key == "timeout" and not number > 0:
                raise InvalidOptionError("option 'timeout' must be > 0")
            if key == "retry_delay" and number < 0:
                raise InvalidOptionError("option 'retry_delay' must be >= 0")
            if key == "jitter" and not 0.0 <= number <= 1.0:
                raise InvalidOptionError("option 'jitter' must be between 0 and 1")
            changes[key] = number
        elif key in ("retry", "max_crashes"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise OptionTypeError(f"option {key!r} must be an int, not {type(value).__name__}")
            low = 0 if key == "retry" else 1
            if not low <= value <= MAX_COUNT:
                raise InvalidOptionError(f"option {key!r} must be between {low} and {MAX_COUNT}")
            changes[key] = value
        else:  # backoff
            if not isinstance(value, str):
                raise OptionTypeError(f"option 'backoff' must be a str, not {type(value).__name__}")
            if value not in BACKOFFS:
                raise InvalidOptionError(
                    f"option 'backoff' must be one of {', '.join(BACKOFFS)}, not {value!r}"
                )
            changes[key] = value
    return changes


_FIELDS = frozenset(JobOptions.__dataclass_fields__)


@functools.lru_cache(maxsize=256)
def _from_json(text: str) -> JobOptions:
    raw = json.loads(text) if text else {}
    if not isinstance(raw, dict):
        raise OptionTypeError("stored options must be a JSON object")
    return JobOptions.parse(raw)
