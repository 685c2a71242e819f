"""Fault injection around the real `SqliteStore`: seeded, two-level (BUGGIFY) store faults.

Owns `FaultPlan` (which named site fails, and when), the connection factory and store
factory that plug it into `SqliteStore(connect=..., fault_hook=...)`, and `LockHolder` (a
second connection holding the write lock). Faults are statement-level SQLite errors, never
interrupts: SQLite rolls an interrupted transaction back by itself, which would hide the
0.6.0 bug. Imports `reference`, never the other way round.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from reference.sqlite_store import SqliteStore

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Mapping

    from reference.store import Store

# Sites SqliteStore reports through `fault_hook`, plus "commit", which `faulty_connect`
# raises from the connection itself when the store executes COMMIT.
STORE_SITES = (
    "enqueue",
    "enqueue_many.after_begin",
    "enqueue_many.before_commit",
    "fetch.after_begin",
    "fetch.statement",
    "fetch.before_commit",
    "commit",
    "heartbeat",
    "renew",
    "recover.after_begin",
    "recover.before_commit",
    "stop.after_begin",
    "stop.before_commit",
    "purge",
    "retry",
)
# The sites the 0.6.1 fetch-rollback regression lives at: errors inside BEGIN ... COMMIT of
# a claim (with the outcomes recorded in the same transaction).
FETCH_SITES = (
    "fetch.after_begin",
    "fetch.statement",
    "fetch.before_commit",
    "commit",
)


class FaultKind(StrEnum):
    """What an injected fault looks like to the store."""

    ERROR = "error"  # a statement error: the store raises StoreError
    LOCKED = "locked"  # "database is locked": the store raises StoreLockedError


@dataclass(frozen=True, slots=True)
class Injection:
    """One fault that fired: the site, its kind, and the how-many-th call at that site."""

    site: str
    kind: FaultKind
    call: int


class FaultPlan:
    """Decide, per call, whether a store fault site fails; remember what fired.

    Two levels, after FoundationDB's BUGGIFY: at construction each site with a non-zero
    rate is activated with probability `activation` (once per seed); an active site then
    fires on each call with its rate. Inactive sites draw no randomness, so adding a site
    does not perturb the rest of a seed's run.

    Args:
        rng: the world's child RNG for store faults; the only source of randomness here.
        rates: site -> per-call firing probability (see `STORE_SITES`).
        activation: probability that a listed site is active for this seed.
        kinds: site -> FaultKind; unlisted sites raise plain statement errors.
        on_inject: called with each `Injection` as it fires (the simulator's trace).
    """

    def __init__(
        self,
        rng: random.Random,
        rates: Mapping[str, float],
        *,
        activation: float = 1.0,
        kinds: Mapping[str, FaultKind] | None = None,
        on_inject: Callable[[Injection], None] | None = None,
    ) -> None:
        self._rng = rng
        self._kinds = dict(kinds or {})
        self.on_inject = on_inject
        self.enabled = True
        self.injected: list[Injection] = []
        self._calls: dict[str, int] = {}
        # Sorted so activation draws do not depend on the mapping's insertion order.
        self.rates: dict[str, float] = {
            site: rate
            for site, rate in sorted(rates.items())
            if rate > 0 and rng.random() < activation
        }

    @classmethod
    def swarm(
        cls,
        rng: random.Random,
        sites: tuple[str, ...] = STORE_SITES,
        *,
        max_rate: float = 0.2,
        activation: float = 0.5,
        on_inject: Callable[[Injection], None] | None = None,
    ) -> FaultPlan:
        """Sample a rate per site (VOPR swarm testing), then activate sites as usual."""
        rates = {site: rng.uniform(0.0, max_rate) for site in sites}
        return cls(rng, rates, activation=activation, on_inject=on_inject)

    def quiesce(self) -> None:
        """Stop injecting (the liveness phase: faults end, the system must converge)."""
        self.enabled = False

    def check(self, site: str) -> None:
        """Raise the site's fault if it fires on this call; otherwise return."""
        rate = self.rates.get(site)
        if rate is None or not self.enabled:
            return
        call = self._calls.get(site, 0) + 1
        self._calls[site] = call
        if self._rng.random() >= rate:
            return
        injection = Injection(site, self._kinds.get(site, FaultKind.ERROR), call)
        self.injected.append(injection)
        if self.on_inject is not None:
            self.on_inject(injection)
        raise _error_for(injection)

    __call__ = check

    def __repr__(self) -> str:
        return (
            f"<FaultPlan active={sorted(self.rates)} injected={len(self.injected)}"
            f" enabled={self.enabled}>"
        )


def _error_for(injection: Injection) -> sqlite3.OperationalError:
    if injection.kind is FaultKind.LOCKED:
        return sqlite3.OperationalError("database is locked")
    return sqlite3.OperationalError(f"sim fault at {injection.site} (call {injection.call})")


class FaultyConnection(sqlite3.Connection):
    """A real connection whose COMMIT can fail before it runs (site "commit")."""

    plan: FaultPlan | None = None

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        """Execute `sql`, first consulting the plan when it is a COMMIT."""
        if self.plan is not None and sql == "COMMIT":
            self.plan.check("commit")
        return super().execute(sql, parameters)


def faulty_connect(plan: FaultPlan) -> Callable[[str], sqlite3.Connection]:
    """A connection factory for `SqliteStore(connect=...)` whose connections obey `plan`."""

    def connect(path: str) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, factory=FaultyConnection)
        conn.plan = plan
        return conn

    return connect


def open_faulty_store(path: str, plan: FaultPlan, *, busy_timeout_ms: int = 0) -> SqliteStore:
    """A real SqliteStore wired to `plan` at every site.

    `busy_timeout_ms` defaults to 0 (SIMULATION 3.5): a real wait would block the virtual
    loop in wall time, so contention surfaces at once as `StoreLockedError`.
    """
    return SqliteStore(
        path, connect=faulty_connect(plan), fault_hook=plan, busy_timeout_ms=busy_timeout_ms
    )


def faulty_store_factory(
    path: str, plan: FaultPlan, *, busy_timeout_ms: int = 0
) -> Callable[[int], Store]:
    """An `open_store(host_index)` for sim hosts: one faulty connection per host."""

    def open_store(_host: int) -> Store:
        return open_faulty_store(path, plan, busy_timeout_ms=busy_timeout_ms)

    return open_store


class LockHolder:
    """A second connection that takes and holds the write lock (models lock contention)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn = sqlite3.connect(path, isolation_level=None, timeout=0)

    @property
    def held(self) -> bool:
        """True while this holder owns the write lock."""
        return self._conn.in_transaction

    def acquire(self) -> bool:
        """Take the write lock if it is free right now; True on success."""
        if self._conn.in_transaction:
            return True
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False
        return True

    def release(self) -> None:
        """Give the lock back (rolling back: the holder never writes)."""
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        """Release and close; idempotent."""
        with contextlib.suppress(sqlite3.ProgrammingError):  # already closed
            self.release()
        self._conn.close()

    def __repr__(self) -> str:
        return f"<LockHolder path={self._path!r} held={self.held}>"
