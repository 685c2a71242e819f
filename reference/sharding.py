"""Which worker runs a schedule entry: the crc32 rule of the Ruby gem, and pins.

Layer 0: pure, stdlib only; imports nothing from the package. The assignment is a
compatibility contract (the same names land on the same workers as with async-background),
pinned by golden tests in tests/unit/test_sharding.py — never change the formula.
"""

from __future__ import annotations

import zlib


def shard_for(name: str, total_workers: int) -> int:
    """Return the 1-based worker for entry `name`: `crc32(utf-8 name) % total + 1`."""
    if isinstance(total_workers, bool) or not isinstance(total_workers, int) or total_workers < 1:
        raise ValueError(f"total_workers must be an int >= 1, got {total_workers!r}")
    return zlib.crc32(name.encode()) % total_workers + 1


def worker_for(name: str, total_workers: int, pin: int | None) -> int:
    """Return `pin` if given (checked to be in 1..total_workers), else `shard_for(name, ...)`."""
    worker = shard_for(name, total_workers)
    if pin is None:
        return worker
    if isinstance(pin, bool) or not isinstance(pin, int) or not 1 <= pin <= total_workers:
        raise ValueError(f"worker pin must be an int in 1..{total_workers}, got {pin!r}")
    return pin
