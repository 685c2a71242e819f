"""Cost of one wake-up attempt: `UnixTransport.try_send` per outcome and `Waker.wake_one`.

Run: `python -m bench.wake_bench [--batches 2000] [--workers 4]`. Each sample times a batch of
calls with `perf_counter_ns` (batches of 10 where a listener's queue must not fill, draining
untimed between batches) and reports the median per call in µs, next to a bare `sendto`
baseline. The machine measured about 12 µs per non-blocking one-byte sendto.
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import statistics
import tempfile
import time
from typing import TYPE_CHECKING

from reference.transport import SendResult
from reference.unix_transport import UnixTransport
from reference.waker import Waker, socket_address
from sim.fabric import Fabric

if TYPE_CHECKING:
    from collections.abc import Callable

# Below the ~11-datagram receive queue, so every timed send in a batch is DELIVERED.
DELIVERED_BATCH = 10
OTHER_BATCH = 100


def median_us(
    call: Callable[[], object], batch: int, batches: int, reset: Callable[[], object]
) -> float:
    """Median µs per `call()` over `batches` timed batches, running `reset()` untimed between."""
    samples: list[float] = []
    for _ in range(batches):
        reset()
        t0 = time.perf_counter_ns()
        for _ in range(batch):
            call()
        samples.append((time.perf_counter_ns() - t0) / batch / 1000.0)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    """Print the median cost per wake-up attempt for each case."""
    parser = argparse.ArgumentParser(prog="python -m bench.wake_bench", description=__doc__)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    base = tempfile.mkdtemp(prefix="wb-")
    transport = UnixTransport()
    listeners = []
    try:
        addresses = {i: socket_address(base, i) for i in range(args.workers)}
        listeners = [transport.listen_now(a) for a in addresses.values()]
        live = addresses[0]
        missing = f"{base}/missing.sock"
        stale = f"{base}/stale.sock"
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dead.bind(stale)
        dead.close()
        full = f"{base}/full.sock"
        full_listener = transport.listen_now(full)
        while transport.try_send(full, b"\x00") is SendResult.DELIVERED:
            pass

        def drain_all() -> None:
            for listener in listeners:
                listener.drain()

        bare = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bare.setblocking(False)
        waker = Waker(transport, addresses, random.Random(0))
        fabric = Fabric()
        fabric_listener = fabric.listen_now("/sim/w0.sock")
        n = args.batches
        rows = [
            (
                "bare sendto, live (baseline)",
                median_us(lambda: bare.sendto(b"\x00", live), DELIVERED_BATCH, n, drain_all),
            ),
            (
                "try_send -> DELIVERED (live)",
                median_us(lambda: transport.try_send(live, b"\x00"), DELIVERED_BATCH, n, drain_all),
            ),
            (
                "try_send -> PENDING (queue full)",
                median_us(lambda: transport.try_send(full, b"\x00"), OTHER_BATCH, n, drain_all),
            ),
            (
                "try_send -> MISSING (no file)",
                median_us(lambda: transport.try_send(missing, b"\x00"), OTHER_BATCH, n, drain_all),
            ),
            (
                "try_send -> REFUSED (stale file)",
                median_us(lambda: transport.try_send(stale, b"\x00"), OTHER_BATCH, n, drain_all),
            ),
            (
                f"Waker.wake_one, {args.workers} live (happy)",
                median_us(waker.wake_one, DELIVERED_BATCH, n, drain_all),
            ),
            (
                "Fabric.try_send -> DELIVERED (sim)",
                median_us(
                    lambda: fabric.try_send("/sim/w0.sock", b"\x00"),
                    DELIVERED_BATCH,
                    n,
                    fabric_listener.drain,
                ),
            ),
        ]
        bare.close()
        full_listener.close()
        print(f"wake-up cost per call, median of {n} batches:")
        for name, us in rows:
            print(f"  {name:<38} {us:8.2f} µs")
    finally:
        for listener in listeners:
            listener.close()
        transport.close()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
