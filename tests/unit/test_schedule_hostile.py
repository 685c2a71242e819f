"""Hostile schedule files (issue 12): each fails fast as one `ConfigError` naming the entry and
key, never as a traceback, a spinning worker or a worker that dies at start."""

from __future__ import annotations

import os
import re
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

import reference.schedule as schedule
from reference.errors import ConfigError
from reference.schedule import (
    CRON_HORIZON_YEARS,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_NODES,
    MAX_SECONDS,
    MIN_EVERY,
    ScheduleEntry,
    load_schedule,
    parse_schedule,
)
from tests.unit.fixture_jobs import Tick

TICK = "tests.unit.fixture_jobs.Tick"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
# Longest message a hostile value may produce: the path of the file plus a few clipped bits.
SHORT = 400

# The classic "billion laughs": 9 levels of 9 aliases, 9**9 (387 million) strings expanded.
BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.fixture
def tmp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temp dir named s0, s1, ...: the default one holds the test's name, and a message
    naming the file would then contain words the assertions look for ("recursive")."""
    return tmp_path_factory.mktemp("s")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schedule.yml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, *, now: datetime = NOW) -> list[ScheduleEntry]:
    return load_schedule(write(tmp_path, text), total_workers=3, now=now)


def config_error(tmp_path: Path, text: str, *, now: datetime = NOW) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, now=now)
    assert len(str(info.value)) < SHORT + len(str(tmp_path)), str(info.value)[:2000]
    assert "\n" not in str(info.value)
    return info.value


@pytest.fixture(params=["libyaml", "pure-python"])
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on both YAML paths: libyaml's C parser and PyYAML's pure-Python one."""
    if request.param == "pure-python":
        monkeypatch.setattr(schedule, "_Loader", schedule._PureLoader)
    elif schedule._C_PARSER is None:
        pytest.skip("PyYAML is built without libyaml")
    return str(request.param)


# --- a cron expression that never fires --------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "0 0 31 2 *",  # 31 February
        "0 0 30 2 *",
        "0 0 31 4,6,9,11 *",
        "* * * * * 0 2020",  # a year field in the past
        "0 0 1 1 * 0 2099",  # beyond croniter's 50-year search
        "0 0 1 1 * 0 2040",  # fires, but more than CRON_HORIZON_YEARS away
    ],
)
def test_cron_that_does_not_fire_within_the_horizon_is_rejected(tmp_path: Path, expr: str) -> None:
    err = config_error(tmp_path, f"c:\n  class: {TICK}\n  cron: '{expr}'\n")
    assert (err.entry, err.key) == ("c", "cron")
    assert f"does not fire within {CRON_HORIZON_YEARS} years of 2026-12-01" in str(err)


@pytest.mark.parametrize(
    ("now", "first"),
    [
        (NOW, "2028-02-29"),
        # The longest gap there is: no 29 February in 2100, so 2096 -> 2104 (7 years ahead).
        (datetime(2097, 3, 1, tzinfo=UTC), "2104-02-29"),
    ],
)
def test_leap_day_cron_is_accepted(tmp_path: Path, now: datetime, first: str) -> None:
    (entry,) = load(tmp_path, f"leap:\n  class: {TICK}\n  cron: '0 0 29 2 *'\n", now=now)
    assert entry.cron is not None
    assert entry.cron.next_after(now).date().isoformat() == first


def test_cron_with_a_year_field_within_the_horizon_is_accepted(tmp_path: Path) -> None:
    (entry,) = load(tmp_path, f"once:\n  class: {TICK}\n  cron: '0 0 1 1 * 0 2030'\n")
    assert entry.cron_expr == "0 0 1 1 * 0 2030"


def test_very_long_cron_is_rejected_before_croniter(tmp_path: Path) -> None:
    expr = ",".join(["1"] * 100_000) + " * * * *"  # croniter takes ~1 s on this
    err = config_error(tmp_path, f"c:\n  class: {TICK}\n  cron: '{expr}'\n")
    assert (err.entry, err.key) == ("c", "cron")
    assert "characters long" in str(err)


def test_entries_with_the_same_cron_share_one_schedule_checked_once() -> None:
    data = {f"e{i}": {"class": "x.Y", "cron": "0 3 * * *"} for i in range(3)}
    data["berlin"] = {"class": "x.Y", "cron": "0 3 * * *", "timezone": "Europe/Berlin"}
    entries = parse_schedule(
        data, total_workers=1, source="<t>", load_class=lambda _: Tick, now=NOW
    )
    assert entries[0].cron is entries[1].cron is entries[2].cron
    assert entries[3].cron is not entries[0].cron


# --- every / timeout: minimum, range, finiteness --------------------------------------------


def test_every_below_min_every_is_rejected(tmp_path: Path) -> None:
    assert MIN_EVERY == 0.1
    err = config_error(tmp_path, f"spin:\n  class: {TICK}\n  every: 1.0e-9\n")
    assert (err.entry, err.key) == ("spin", "every")
    assert "at least 0.1 seconds (MIN_EVERY" in str(err)
    assert "1e-09" in str(err)


def test_every_at_min_every_and_at_the_maximum_is_accepted(tmp_path: Path) -> None:
    low, high = load(
        tmp_path,
        f"low:\n  class: {TICK}\n  every: 0.1\n"
        f"high:\n  class: {TICK}\n  every: {int(MAX_SECONDS)}\n  timeout: {int(MAX_SECONDS)}\n",
    )
    assert (low.every, high.every, high.timeout) == (0.1, MAX_SECONDS, MAX_SECONDS)


HUGE_INT = "1" + "0" * 400  # 10**400: a YAML int too big for a float


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("every", HUGE_INT, "at most 31,536,000 seconds (one year)"),
        ("timeout", HUGE_INT, "at most 31,536,000 seconds (one year)"),
        ("every", "-" + HUGE_INT, "at least 0.1 seconds"),
        ("every", "1.0e+400", "finite"),  # YAML reads it as inf
        ("every", "1.0e+308", "at most 31,536,000 seconds"),
        ("timeout", ".inf", "finite"),
        ("timeout", "-.inf", "finite"),
        ("timeout", ".nan", "finite"),
        ("timeout", "31536001", "at most 31,536,000 seconds"),
        ("timeout", "true", "must be a number of seconds, not bool"),
        ("every", "0x7fffffffffffffffffffffffffffffffffffffff", "at most"),
    ],
)
def test_non_finite_or_out_of_range_seconds_are_rejected(
    tmp_path: Path, key: str, value: str, needle: str
) -> None:
    body = {"every": "60", key: value}
    text = f"e:\n  class: {TICK}\n" + "".join(f"  {k}: {v}\n" for k, v in body.items())
    err = config_error(tmp_path, text)
    assert (err.entry, err.key) == ("e", key)
    assert needle in str(err)


def test_int_over_pythons_digit_limit_is_a_config_error(tmp_path: Path) -> None:
    # int() refuses more than 4,300 digits with a ValueError; that must not escape raw.
    err = config_error(tmp_path, f"e:\n  class: {TICK}\n  every: 1{'0' * 5000}\n")
    assert (err.entry, err.key) == ("e", "every")
    assert "a number of 5,001 characters" in str(err)
    assert "line 3, column 10" in str(err)


def test_impossible_timestamp_is_a_config_error(tmp_path: Path) -> None:
    err = config_error(tmp_path, f"e:\n  class: {TICK}\n  every: 2020-13-45\n")
    assert (err.entry, err.key) == ("e", "every")
    assert "cannot read '2020-13-45' as timestamp: month must be in 1..12" in str(err)


def test_parse_schedule_rejects_a_huge_python_int_too() -> None:
    with pytest.raises(ConfigError, match="at most") as info:
        parse_schedule(
            {"e": {"class": "x.Y", "every": 10**400}},
            total_workers=1,
            source="<t>",
            load_class=lambda _: Tick,
        )
    assert (info.value.entry, info.value.key) == ("e", "every")
    assert len(str(info.value)) < SHORT


# --- nesting depth --------------------------------------------------------------------------


@pytest.mark.usefixtures("loader")
def test_deep_nesting_is_rejected(tmp_path: Path) -> None:
    err = config_error(tmp_path, "e: " + "[" * 10_000 + "\n")
    assert "line 1" in str(err)
    # Ours, or libyaml's own limit (1,000 levels), which its scanner meets first here.
    assert re.search(f"nested deeper than {MAX_DEPTH} levels|exceeded maximum nesting", str(err))


@pytest.mark.usefixtures("loader")
def test_nesting_beyond_max_depth_is_rejected_naming_entry_and_key(tmp_path: Path) -> None:
    inner = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    err = config_error(tmp_path, f"e:\n  class: {TICK}\n  every: {inner}\n")
    assert (err.entry, err.key) == ("e", "every")
    assert f"nested deeper than {MAX_DEPTH} levels" in str(err)


@pytest.mark.usefixtures("loader")
def test_nesting_through_merge_aliases_counts_as_expanded(tmp_path: Path) -> None:
    # Each entry merges the previous one: the chain is as deep as it is long once expanded.
    text = f"a0: &a0 {{class: {TICK}, every: 1}}\n" + "".join(
        f"a{i}: &a{i} {{<<: *a{i - 1}}}\n" for i in range(1, 3 * MAX_DEPTH)
    )
    err = config_error(tmp_path, text)
    assert err.key == "<<"
    assert f"nested deeper than {MAX_DEPTH} levels" in str(err)


# --- aliases --------------------------------------------------------------------------------


@pytest.mark.usefixtures("loader")
def test_billion_laughs_is_rejected_by_node_count(tmp_path: Path) -> None:
    err = config_error(tmp_path, BILLION_LAUGHS + f"e:\n  class: {TICK}\n  every: *i\n")
    assert f"more than {MAX_NODES:,} YAML nodes" in str(err)
    assert "lol" not in str(err)


@pytest.mark.usefixtures("loader")
def test_billion_laughs_as_a_value_names_entry_and_key(tmp_path: Path) -> None:
    # The same bomb, its anchors defined inside the value of `every`.
    items = "".join(f"    - {line.split(': ', 1)[1]}\n" for line in BILLION_LAUGHS.splitlines())
    err = config_error(tmp_path, f"e:\n  class: {TICK}\n  every:\n{items}")
    assert (err.entry, err.key) == ("e", "every")
    assert f"more than {MAX_NODES:,} YAML nodes" in str(err)


def test_an_expanded_value_is_shown_clipped(tmp_path: Path) -> None:
    # Four levels (9**4 = 6,561 strings) pass the YAML bounds; the entry check then sees a
    # big list, and its message shows a few characters of it, not the expansion.
    items = "".join(f"    - {line.split(': ', 1)[1]}\n" for line in BILLION_LAUGHS.splitlines()[:4])
    err = config_error(tmp_path, f"e:\n  class: {TICK}\n  every:\n{items}")
    assert (err.entry, err.key) == ("e", "every")
    assert "must be a number of seconds, not list [[" in str(err)
    assert str(err).count("lol") <= 10


def test_recursive_alias_is_rejected(tmp_path: Path) -> None:
    err = config_error(tmp_path, f"e:\n  class: {TICK}\n  every: &a [*a]\n")
    assert (err.entry, err.key) == ("e", "every")
    assert "an alias inside its own anchor (recursive)" in str(err)


def test_ordinary_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    defaults, hourly = load(
        tmp_path,
        f"""\
        defaults: &defaults
          class: {TICK}
          every: 60
          timeout: 5
        hourly:
          <<: *defaults
          every: 3600
        """,
    )
    assert (defaults.every, defaults.timeout) == (60.0, 5.0)
    assert (hourly.every, hourly.timeout, hourly.job_class) == (3600.0, 5.0, Tick)


# --- sizes and messages ---------------------------------------------------------------------


def test_file_over_max_file_bytes_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "big.yml"
    with path.open("w") as f:
        f.write(f"e:\n  class: {TICK}\n  every: 60\n")
        line = "#" * 1023 + "\n"
        f.write(line * (MAX_FILE_BYTES // len(line) + 1))
    with pytest.raises(ConfigError, match="is larger than 16 MiB") as info:
        load_schedule(path, total_workers=1, now=NOW)
    assert (info.value.entry, info.value.key) == (None, None)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_endless_non_regular_file_is_rejected() -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        load_schedule("/dev/zero", total_workers=1, now=NOW)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_is_rejected_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "schedule.yml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_schedule(fifo, total_workers=1, now=NOW)


def test_long_entry_names_and_keys_are_clipped_in_messages(tmp_path: Path) -> None:
    name = "n" * 10_000
    err = config_error(tmp_path, f"? {name}\n: class: {TICK}\n  every: 0\n")
    assert err.key == "every"
    assert err.entry is not None
    assert err.entry.startswith("nnn")
    assert len(err.entry) <= 200
    err = config_error(tmp_path, f"e:\n  class: {TICK}\n  every: 5\n  ? {'k' * 10_000}\n  : 1\n")
    assert err.entry == "e"
    assert err.key is not None
    assert len(err.key) <= 200


def test_long_class_path_is_clipped(tmp_path: Path) -> None:
    err = config_error(tmp_path, f"e:\n  class: {'a.' * 5000}X\n  every: 5\n")
    assert (err.entry, err.key) == ("e", "class")


# --- a large schedule -----------------------------------------------------------------------


def test_100k_entry_schedule_loads_importing_its_class_once(tmp_path: Path) -> None:
    """100,000 interval entries load in a few seconds (see the README for the figures):
    the job class is imported once per file, not once per entry."""
    path = tmp_path / "big.yml"
    path.write_text(
        "".join(f"job_{i:06d}:\n  class: {TICK}\n  every: 60\n" for i in range(100_000))
    )
    calls: list[str] = []

    def load_class(dotted: str) -> type[Tick]:
        calls.append(dotted)
        return Tick

    entries = load_schedule(path, total_workers=4, load_class=load_class, now=NOW)
    assert calls == [TICK]
    assert len(entries) == 100_000
    assert entries[-1].name == "job_099999"
    assert {e.worker for e in entries} == {1, 2, 3, 4}
