"""`JobOptions`: defaults, merging, validation errors and the retry-delay arithmetic."""

from __future__ import annotations

import math
import random

import pytest

from reference.errors import InvalidOptionError, OptionTypeError
from reference.options import DEFAULT_RETRY_DELAY, DEFAULT_TIMEOUT, MAX_RETRY_DELAY, JobOptions


def test_defaults() -> None:
    opts = JobOptions()
    assert (opts.timeout, opts.retry, opts.retry_delay, opts.backoff, opts.jitter) == (
        DEFAULT_TIMEOUT,
        0,
        DEFAULT_RETRY_DELAY,
        "fixed",
        None,
    )
    assert DEFAULT_TIMEOUT == 30.0
    assert JobOptions.parse(None) == opts
    assert JobOptions.parse({}) == opts


def test_merge_call_site_wins_and_none_keeps_class_value() -> None:
    cls_opts = JobOptions.parse({"timeout": 120, "retry": 5, "retry_delay": 10})
    merged = cls_opts.merged({"timeout": 30, "retry": None, "backoff": "linear"})
    assert merged.timeout == 30.0
    assert merged.retry == 5  # None keeps the class value
    assert merged.retry_delay == 10.0
    assert merged.backoff == "linear"
    assert cls_opts.merged(None) is cls_opts
    assert cls_opts.merged({}) is cls_opts
    assert cls_opts.merged({"timeout": None}) is cls_opts


def test_ints_become_floats_for_seconds() -> None:
    opts = JobOptions.parse({"timeout": 5, "retry_delay": 2, "jitter": 1})
    assert isinstance(opts.timeout, float)
    assert isinstance(opts.retry_delay, float)
    assert opts.jitter == 1.0


def test_json_round_trip() -> None:
    opts = JobOptions.parse({"timeout": 2.5, "retry": 3, "backoff": "exponential", "jitter": 0.1})
    assert JobOptions.from_json(opts.to_json()) == opts
    assert JobOptions.from_json("") == JobOptions()
    with pytest.raises(OptionTypeError):
        JobOptions.from_json("[1, 2]")
    with pytest.raises(InvalidOptionError):
        JobOptions.from_json('{"priority": 1}')


def test_unknown_key_is_value_error_naming_it() -> None:
    with pytest.raises(InvalidOptionError, match="'priority'") as info:
        JobOptions.parse({"priority": 1})
    assert isinstance(info.value, ValueError)
    # Even with a None value: a typo must not pass silently.
    with pytest.raises(ValueError, match="'retires'"):
        JobOptions().merged({"retires": None})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("timeout", "30"),
        ("timeout", True),
        ("retry_delay", False),
        ("retry_delay", [1]),
        ("jitter", "0.5"),
        ("jitter", True),
        ("retry", 1.0),
        ("retry", True),
        ("retry", "3"),
        ("backoff", 1),
        ("backoff", b"fixed"),
    ],
)
def test_wrong_types_are_type_errors(key: str, value: object) -> None:
    with pytest.raises(OptionTypeError, match=repr(key)) as info:
        JobOptions.parse({key: value})
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("timeout", 0),
        ("timeout", -1),
        ("retry", -1),
        ("retry_delay", -0.5),
        ("jitter", -0.1),
        ("jitter", 1.5),
        ("backoff", "quadratic"),
        ("timeout", math.nan),
        ("timeout", math.inf),
        ("retry_delay", math.nan),
        ("retry_delay", math.inf),
        ("jitter", math.nan),
    ],
)
def test_out_of_range_values_are_value_errors(key: str, value: object) -> None:
    with pytest.raises(InvalidOptionError, match=repr(key)):
        JobOptions.parse({key: value})


def test_boundaries_accepted() -> None:
    opts = JobOptions.parse({"retry": 0, "retry_delay": 0, "jitter": 0, "timeout": 0.001})
    assert opts.retry_delay == 0.0
    assert JobOptions.parse({"jitter": 1}).jitter == 1.0


def test_stored_options_are_valid_json() -> None:
    import json

    text = JobOptions.parse({"timeout": 1e9, "retry_delay": 1e9}).to_json()
    # Strict JSON: no NaN/Infinity tokens can ever be written.
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_fixed_backoff() -> None:
    opts = JobOptions.parse({"retry_delay": 7})
    rng = random.Random(1)
    assert [opts.retry_delay_for(a, rng) for a in (1, 2, 5)] == [7.0, 7.0, 7.0]


def test_linear_backoff() -> None:
    opts = JobOptions.parse({"retry_delay": 3, "backoff": "linear"})
    rng = random.Random(1)
    assert [opts.retry_delay_for(a, rng) for a in (1, 2, 3, 10)] == [3.0, 6.0, 9.0, 30.0]


def test_exponential_backoff_without_jitter() -> None:
    opts = JobOptions.parse({"retry_delay": 2, "backoff": "exponential", "jitter": 0})
    rng = random.Random(1)
    assert [opts.retry_delay_for(a, rng) for a in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]


def test_default_jitter_only_for_exponential() -> None:
    assert JobOptions.parse({"backoff": "exponential"}).effective_jitter == 0.5
    assert JobOptions.parse({"backoff": "fixed"}).effective_jitter == 0.0
    assert JobOptions.parse({"backoff": "linear"}).effective_jitter == 0.0
    assert JobOptions.parse({"backoff": "exponential", "jitter": 0.2}).effective_jitter == 0.2
    assert JobOptions.parse({"backoff": "fixed", "jitter": 0.3}).effective_jitter == 0.3


def test_exponential_default_jitter_bounds_with_seeded_rng() -> None:
    opts = JobOptions.parse({"retry_delay": 10, "backoff": "exponential"})
    rng = random.Random(42)
    for attempt in range(1, 6):
        base = 10.0 * 2 ** (attempt - 1)
        for _ in range(200):
            delay = opts.retry_delay_for(attempt, rng)
            assert 0.5 * base <= delay <= 1.5 * base
    # The same seed gives the same delays.
    a = [opts.retry_delay_for(3, random.Random(5)) for _ in range(3)]
    assert a == [a[0]] * 3
    expected = 40.0 * random.Random(5).uniform(0.5, 1.5)
    assert a[0] == pytest.approx(expected)


def test_explicit_jitter_on_fixed_backoff() -> None:
    opts = JobOptions.parse({"retry_delay": 100, "jitter": 0.1})
    rng = random.Random(3)
    delays = [opts.retry_delay_for(1, rng) for _ in range(500)]
    assert all(90.0 <= d <= 110.0 for d in delays)
    assert min(delays) < 95.0 < 105.0 < max(delays)  # actually spread, not constant


def test_delay_is_capped_at_one_day() -> None:
    opts = JobOptions.parse({"retry_delay": 3600, "backoff": "exponential", "jitter": 0})
    rng = random.Random(0)
    assert opts.retry_delay_for(5, rng) == 16 * 3600.0
    assert opts.retry_delay_for(6, rng) == MAX_RETRY_DELAY
    assert opts.retry_delay_for(10_000, rng) == MAX_RETRY_DELAY
    linear = JobOptions.parse({"retry_delay": 1e6, "backoff": "linear"})
    assert linear.retry_delay_for(3, rng) == MAX_RETRY_DELAY


def test_attempt_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        JobOptions().retry_delay_for(0, random.Random(0))
