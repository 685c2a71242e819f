"""Short forms of the worker-side store calls for tests: claim only, or record one outcome.

`WorkerStore.claim` records outcomes and claims in one call; most tests want one half.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reference.records import Settlement

if TYPE_CHECKING:
    from reference.records import JobRow
    from reference.store import WorkerStore

T0 = 1_700_000_000.0  # POSIX seconds the contract tests start at
LEASE = 30.0


def claim(
    store: WorkerStore,
    owner: str = "w1",
    *,
    now: float = T0,
    lease: float = LEASE,
    limit: int = 1,
) -> list[JobRow]:
    """Claim up to `limit` due jobs for `owner`, recording nothing."""
    return store.claim(owner, now=now, lease=lease, limit=limit)[1]


def record(
    store: WorkerStore,
    job_id: int,
    attempt: int,
    *,
    owner: str = "w1",
    now: float = T0,
    error: str | None = None,
    retry_at: float | None = None,
) -> bool:
    """Record one run's outcome (claiming nothing); True if it was accepted."""
    (ok,), rows = store.claim(
        owner, now=now, lease=LEASE, limit=0, settle=[Settlement(job_id, attempt, error, retry_at)]
    )
    assert rows == []
    return ok
