"""`WorkerSettings`: argv > environment > defaults, resolved once.

The only reader of `os.environ` in the package. Everything below receives values as
arguments; nothing reads the environment later (STYLE 4.7).
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def process_environ() -> Mapping[str, str]:
    """A snapshot of this process's environment, for CLIs resolving their fallbacks."""
    return dict(os.environ)
