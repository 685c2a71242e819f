"""Scale pinned example counts by the active hypothesis profile (`long` = 20x)."""

from __future__ import annotations

import os

LONG = os.environ.get("HYPOTHESIS_PROFILE", "ci") == "long"


def scaled(n: int) -> int:
    """`n` examples under the CI profile, twenty times as many under `long`."""
    return n * 20 if LONG else n
