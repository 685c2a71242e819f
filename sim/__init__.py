"""The deterministic simulator: the real runtime on virtual time, an in-memory socket
fabric and real SQLite files, driven by one seed. Depends on `reference`, never the reverse.
"""

from __future__ import annotations

from sim.scenario import Check, Outcome, Scenario, run_scenario
from sim.world import World

__all__ = ["Check", "Outcome", "Scenario", "World", "run_scenario"]
