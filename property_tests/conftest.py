"""Hypothesis profiles: `ci` (bounded, the default inside `make test`) and `long`
(`make property-long`, or HYPOTHESIS_PROFILE=long). Suites that pin their own
`@settings` keep them under `ci` and are scaled up by `long`."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "long",
    max_examples=2_000,
    stateful_step_count=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
