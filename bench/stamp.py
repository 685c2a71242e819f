"""What a benchmark job writes: one "<enqueued_at> <started_at>" line in a ledger file.

Owns the ledger's line format on the writing side (`bench.harness` reads it). Imports only
`os`, so a job module stays cheap to import: rq's default worker imports it again in every
freshly forked work horse, and the benchmark must not charge rq for its own plumbing.
"""

from __future__ import annotations

import os


def write_stamp(ledger: str, enqueued_at: float, started_at: float) -> None:
    """Append one "<enqueued_at> <started_at>" line with a single O_APPEND write."""
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{enqueued_at!r} {started_at!r}\n".encode())
    finally:
        os.close(fd)
