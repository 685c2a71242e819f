"""The procrastinate app the benchmark's producer and workers load (`bench.procrastinate_app.app`).

Owns the `App` (a `PsycopgConnector` on `bench.services.PG_DSN`) and its two tasks; every
worker option stays procrastinate's default.
"""

from __future__ import annotations

import time

from procrastinate import App, PsycopgConnector

from bench.services import PG_DSN
from bench.stamp import write_stamp

app = App(connector=PsycopgConnector(conninfo=PG_DSN))


@app.task(name="noop")
def noop() -> None:
    """Do nothing: W1 and W2 measure the queue, not the job."""


@app.task(name="stamp")
def stamp(ledger: str, enqueued_at: float) -> None:
    """Record this job's start next to its enqueue time (W3)."""
    write_stamp(ledger, enqueued_at, time.time())
