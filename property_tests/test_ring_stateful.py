"""A stateful model of the wake-up ring: the real `Waker` over the in-memory `Fabric`.

Rules bring workers up, crash them (file left: refused), remove their files (missing),
fill their queues (pending) and drain them, then wake one or hand a wake-up on. The model
is a plain dict of states; after every wake the report must match it: one attempt when
the first choice can be woken, the ring walked in order past unavailable workers only,
nobody tried twice, a live worker woken whenever one exists.
"""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from property_tests.profiles import scaled
from reference.transport import SendResult
from reference.waker import Waker, decode_hops, socket_address
from sim.fabric import Fabric, FabricListener

N = 5
WORKERS = st.integers(min_value=1, max_value=N)
UP = "up"
CRASHED = "crashed"
GONE = "gone"


class RingMachine(RuleBasedStateMachine):
    @initialize(seed=st.integers(min_value=0, max_value=2**32 - 1))
    def start(self, seed: int) -> None:
        self.fabric = Fabric(capacity=3)
        self.addresses = {i: socket_address("/ring", i) for i in range(1, N + 1)}
        self.waker = Waker(self.fabric, self.addresses, random.Random(seed))
        self.state: dict[int, str] = dict.fromkeys(self.addresses, GONE)
        self.listeners: dict[int, FabricListener] = {}
        self.queued: dict[int, int] = dict.fromkeys(self.addresses, 0)

    @rule(i=WORKERS)
    def bring_up(self, i: int) -> None:
        if self.state[i] == UP:
            return
        self.listeners[i] = self.fabric.listen_now(self.addresses[i])
        self.state[i] = UP
        self.queued[i] = 0

    @rule(i=WORKERS)
    def crash(self, i: int) -> None:
        if self.state[i] == UP:
            self.fabric.crash(self.addresses[i])
            self.state[i] = CRASHED

    @rule(i=WORKERS)
    def remove_file(self, i: int) -> None:
        self.fabric.remove(self.addresses[i])
        self.state[i] = GONE

    @rule(i=WORKERS)
    def drain(self, i: int) -> None:
        if self.state[i] == UP:
            self.listeners[i].drain()
            self.queued[i] = 0

    def _expected(self, i: int) -> SendResult:
        if self.state[i] == GONE:
            return SendResult.MISSING
        if self.state[i] == CRASHED:
            return SendResult.REFUSED
        return SendResult.PENDING if self.queued[i] >= 3 else SendResult.DELIVERED

    def _check(self, order: list[int], report_attempts: list[tuple[int, SendResult]]) -> None:
        tried = [i for i, _ in report_attempts]
        assert len(set(tried)) == len(tried), "a worker was tried twice"
        assert tried == order[: len(tried)], "the ring was not walked in order"
        for k, (i, result) in enumerate(report_attempts):
            assert result is self._expected(i), (i, result, self.state[i])
            if result.woke:
                assert k == len(report_attempts) - 1, "kept trying after waking someone"
                if result is SendResult.DELIVERED:
                    self.queued[i] += 1
            else:
                assert k < len(report_attempts) - 1 or len(tried) == len(order)

    @rule()
    def wake_one(self) -> None:
        report = self.waker.wake_one()
        attempts = list(report.attempts)
        start = attempts[0][0]
        ring = sorted(self.addresses)
        order = ring[ring.index(start) :] + ring[: ring.index(start)]
        live = [i for i in ring if self.state[i] == UP]
        self._check(order, attempts)
        if live:
            assert report.woken in live
            if self.state[start] == UP:
                assert len(attempts) == 1, "more than one attempt on the happy path"
        else:
            assert report.woken is None
            assert len(attempts) == N

    @rule(i=WORKERS, hops=st.integers(min_value=0, max_value=N - 1))
    def pass_on(self, i: int, hops: int) -> None:
        report = self.waker.pass_on(i, hops)
        if hops == 0:
            assert report.attempts == ()
            assert report.woken is None
            return
        ring = sorted(self.addresses)
        order = [j for j in ring if j > i] + [j for j in ring if j < i]
        attempts = list(report.attempts)
        assert i not in [j for j, _ in attempts], "handed the wake-up back to its sender"
        self._check(order, attempts)
        if report.woken is not None and self.state[report.woken] == UP:
            payloads = [r.payload for r in self.fabric.sends if r.result.woke]
            assert decode_hops(payloads[-1]) == hops - 1

    @invariant()
    def queues_match_the_model(self) -> None:
        if not hasattr(self, "listeners"):
            return
        for i, listener in self.listeners.items():
            if self.state[i] == UP:
                assert listener.queued == self.queued[i]


RingMachine.TestCase.settings = settings(
    max_examples=scaled(100), stateful_step_count=40, deadline=None
)
TestRing = RingMachine.TestCase
