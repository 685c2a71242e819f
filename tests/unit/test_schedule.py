"""Schedule file loading: one test per validation error, plus round trips and sharding."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest

from reference.errors import ConfigError
from reference.schedule import (
    ScheduleEntry,
    entries_for,
    load_schedule,
    parse_schedule,
)
from reference.sharding import shard_for
from reference.triggers import CronSchedule
from tests.unit.fixture_jobs import Report, Tick

if TYPE_CHECKING:
    from pathlib import Path

TICK = "tests.unit.fixture_jobs.Tick"
REPORT = "tests.unit.fixture_jobs.Report"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schedule.yml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, total_workers: int = 3) -> list[ScheduleEntry]:
    return load_schedule(write(tmp_path, text), total_workers=total_workers)


def config_error(tmp_path: Path, text: str, total_workers: int = 3) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, total_workers)
    return info.value


# --- valid files -------------------------------------------------------------------------


def test_examples_like_file_round_trip(tmp_path: Path) -> None:
    entries = load(
        tmp_path,
        f"""\
        sync_products:            # every minute
          class: {TICK}
          every: 60
        daily_report:
          class: {REPORT}
          cron: "0 3 * * *"
          timezone: Europe/Berlin
          timeout: 120
          worker: 1
        """,
    )
    assert entries == [
        ScheduleEntry(
            name="sync_products",
            job_class=Tick,
            every=60.0,
            worker=shard_for("sync_products", 3),
        ),
        ScheduleEntry(
            name="daily_report",
            job_class=Report,
            cron=CronSchedule("0 3 * * *", ZoneInfo("Europe/Berlin")),
            timezone="Europe/Berlin",
            timeout=120.0,
            worker=1,
        ),
    ]
    assert entries[0].timeout == 30.0
    assert entries[0].cron_expr is None
    assert entries[1].cron_expr == "0 3 * * *"
    assert isinstance(entries[0].every, float)


def test_cron_without_timezone_uses_local_zone(tmp_path: Path) -> None:
    (entry,) = load(tmp_path, f"nightly:\n  class: {TICK}\n  cron: '@daily'\n")
    assert entry.cron == CronSchedule("@daily", None)
    assert entry.timezone is None


def test_fractional_every_and_timeout(tmp_path: Path) -> None:
    (entry,) = load(tmp_path, f"fast:\n  class: {TICK}\n  every: 0.5\n  timeout: 2.5\n")
    assert (entry.every, entry.timeout) == (0.5, 2.5)


def test_sharding_and_pins(tmp_path: Path) -> None:
    names = ["sync_products", "daily_report", "cleanup", "send_digest", "heartbeat"]
    body = "".join(f"{n}:\n  class: {TICK}\n  every: 10\n" for n in names)
    body += f"pinned:\n  class: {TICK}\n  every: 10\n  worker: 5\n"
    entries = load_schedule(write(tmp_path, body), total_workers=5)
    expected = {n: shard_for(n, 5) for n in names} | {"pinned": 5}
    assert {e.name: e.worker for e in entries} == expected
    # Literal spot checks of the Ruby-compatible assignment (see test_sharding's table).
    assert expected["sync_products"] == 5
    assert expected["cleanup"] == 4
    for index in range(1, 6):
        assert [e.name for e in entries_for(entries, index)] == [
            e.name for e in entries if e.worker == index
        ]
    assert sum(len(entries_for(entries, i)) for i in range(1, 6)) == len(entries)


def test_single_worker_gets_everything(tmp_path: Path) -> None:
    entries = load(tmp_path, f"a:\n  class: {TICK}\n  every: 1\n", total_workers=1)
    assert entries_for(entries, 1) == entries


def test_parse_schedule_accepts_parsed_data_and_custom_loader() -> None:
    seen: list[str] = []

    def load_class(dotted: str) -> type[Tick]:
        seen.append(dotted)
        return Tick

    entries = parse_schedule(
        {"a": {"class": "x.Y", "every": 5}},
        total_workers=2,
        source="<test>",
        load_class=load_class,
    )
    assert seen == ["x.Y"]
    assert entries[0].job_class is Tick


def test_entry_requires_exactly_one_trigger() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ScheduleEntry(name="x", job_class=Tick, worker=1)


# --- file-level errors ------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yml"
    with pytest.raises(ConfigError) as info:
        load_schedule(path, total_workers=1)
    err = info.value
    assert (err.entry, err.key) == (None, None)
    assert str(path) in str(err)
    assert "does not exist" in str(err)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_schedule(tmp_path, total_workers=1)  # a directory
    assert (info.value.entry, info.value.key) == (None, None)


def test_invalid_yaml_reports_line_and_column(tmp_path: Path) -> None:
    err = config_error(tmp_path, "a: 1\n---\nb: 2\n")
    assert (err.entry, err.key) == (None, None)
    assert "not valid YAML at line 2, column 1: expected a single document" in str(err)


def test_invalid_yaml_inside_an_entry_names_entry_and_key(tmp_path: Path) -> None:
    err = config_error(tmp_path, f"a:\n  class: {TICK}\n  every: [1, 2\n")
    assert (err.entry, err.key) == ("a", "every")
    assert "not valid YAML: " in str(err)
    assert "(line 4, column 1 of " in str(err)


def test_unsafe_yaml_tag_is_rejected(tmp_path: Path) -> None:
    err = config_error(tmp_path, "a: !!python/object:os.system {}\n")
    # A constructor error is placed in its entry, with line and column.
    assert (err.entry, err.key) == ("a", None)
    assert "could not determine a constructor" in str(err)
    assert "line 1, column 4" in str(err)


@pytest.mark.parametrize("text", ["", "# all commented out\n", "{}\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    err = config_error(tmp_path, text)
    assert (err.entry, err.key) == (None, None)
    assert "is empty" in str(err)


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    err = config_error(tmp_path, f"- class: {TICK}\n  every: 1\n")
    assert (err.entry, err.key) == (None, None)
    assert "must be a mapping" in str(err)
    assert "not a list" in str(err)


def test_bad_total_workers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="number of workers"):
        load_schedule(write(tmp_path, f"a:\n  class: {TICK}\n  every: 1\n"), total_workers=0)


# --- entry-level errors -----------------------------------------------------------------


def test_entry_name_must_be_a_string(tmp_path: Path) -> None:
    err = config_error(tmp_path, f"123:\n  class: {TICK}\n  every: 1\n")
    assert (err.entry, err.key) == ("123", None)
    assert "int" in str(err)
    assert "quote" in str(err)


def test_duplicate_entry_name(tmp_path: Path) -> None:
    err = config_error(
        tmp_path, f"a:\n  class: {TICK}\n  every: 1\na:\n  class: {TICK}\n  every: 2\n"
    )
    assert (err.entry, err.key) == ("a", None)
    assert "duplicate entry name at line 4" in str(err)


def test_duplicate_key_in_entry(tmp_path: Path) -> None:
    err = config_error(tmp_path, f"a:\n  class: {TICK}\n  every: 1\n  every: 2\n")
    assert (err.entry, err.key) == ("a", "every")
    assert "given twice" in str(err)


@pytest.mark.parametrize("body", ["some string", "", "[1, 2]"])
def test_entry_not_a_mapping(tmp_path: Path, body: str) -> None:
    err = config_error(tmp_path, f"a: {body}\n")
    assert (err.entry, err.key) == ("a", None)
    assert "must be a mapping" in str(err)


def test_unknown_key_lists_known_keys(tmp_path: Path) -> None:
    err = config_error(tmp_path, f"a:\n  class: {TICK}\n  every: 1\n  timout: 5\n")
    assert (err.entry, err.key) == ("a", "timout")
    assert "class, every, cron, timezone, timeout, worker" in str(err)


def test_missing_class(tmp_path: Path) -> None:
    err = config_error(tmp_path, "a:\n  every: 1\n")
    assert (err.entry, err.key) == ("a", "class")
    assert "missing" in str(err)


def test_class_not_a_string(tmp_path: Path) -> None:
    err = config_error(tmp_path, "a:\n  class: 12\n  every: 1\n")
    assert (err.entry, err.key) == ("a", "class")
    assert "dotted path" in str(err)


def test_class_module_not_importable(tmp_path: Path) -> None:
    err = config_error(tmp_path, "a:\n  class: no_such_pkg_xyz.Job\n  every: 1\n")
    assert (err.entry, err.key) == ("a", "class")
    assert "no_such_pkg_xyz" in str(err)


def test_class_attribute_missing(tmp_path: Path) -> None:
    err = config_error(tmp_path, "a:\n  class: tests.unit.fixture_jobs.Nope\n  every: 1\n")
    assert (err.entry, err.key) == ("a", "class")
    assert "no attribute 'Nope'" in str(err)


def test_class_not_dotted(tmp_path: Path) -> None:
    err = config_error(tmp_path, "a:\n  class: Tick\n  every: 1\n")
    assert (err.entry, err.key) == ("a", "class")
    assert "dotted path" in str(err)


@pytest.mark.parametrize(
    "dotted",
    ["tests.unit.fixture_jobs.NotAJob", "tests.unit.fixture_jobs.NOT_A_CLASS", "reference.job.Job"],
)
def test_class_not_a_job_subclass(tmp_path: Path, dotted: str) -> None:
    err = config_error(tmp_path, f"a:\n  class: {dotted}\n  every: 1\n")
    assert (err.entry, err.key) == ("a", "class")
    assert "is not a reference.Job subclass" in str(err)


def test_class_module_raising_on_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "mods"
    pkg.mkdir()
    (pkg / "broken_sched_mod.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(pkg))
    err = config_error(tmp_path, "a:\n  class: broken_sched_mod.X\n  every: 1\n")
    assert (err.entry, err.key) == ("a", "class")
    assert "boom at import" in str(err)


def test_custom_loader_returning_non_job_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"not a reference\.Job subclass") as info:
        parse_schedule(
            {"a": {"class": "x.Y", "every": 1}},
            total_workers=1,
            source="<test>",
            load_class=lambda _: int,  # type: ignore[arg-type,return-value]
        )
    assert (info.value.entry, info.value.key) == ("a", "class")


def test_both_every_and_cron(tmp_path: Path) -> None:
    err = config_error(tmp_path, f"a:\n  class: {TICK}\n  every: 1\n  cron: '* * * * *'\n")
    assert (err.entry, err.key) == ("a", "every")
    assert "exactly one of every / cron, got both" in str(err)


def test_neither_every_nor_cron(tmp_path: Path) -> None:
    err = config_error(tmp_path, f"a:\n  class: {TICK}\n")
    assert (err.entry, err.key) == ("a", "every")
    assert "got neither" in str(err)


@pytest.mark.parametrize("value", ["'60'", "true", "[60]"])
def test_every_not_a_number(tmp_path: Path, value: str) -> None:
    err = config_error(tmp_path, f"a:\n  class: {TICK}\n  every: {value}\n")
    assert (err.entry, err.key) == ("a", "every")
    assert "must be a number of seconds" in str(err)


@pytest.mark.parametrize("value", ["0", "-5", "0.0999"])
def test_every_below_the_minimum(tmp_path: Path, value: str) -> None:
    err = config_error(tmp_path, f"a:\n  class: {TICK}\n  every: {value}\n")
    assert (err.entry, err.key) == ("a", "every")
    assert "at least 0.1 seconds (MIN_EVERY" in str(err)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_every_not_finite(tmp_path: Path, value: str) -> None:
    err = config_error(tmp_path, f"a:\n  class: {TICK}\n  every: {value}\n")
    assert (err.entry, err.key) == ("a", "every")
    assert "must be a finite number of seconds" in str(err)


def test_cron_invalid(tmp_path: Path) -> None:
    err = config_error(tmp_path, f"a:\n  class: {TICK}\n  cron: '61 * * * *'\n")
    assert (err.entry, err.key) == ("a", "cron")
    assert "invalid cron expression '61 * * * *'" in str(err)
    assert "out of range" in str(err)


def test_cron_not_a_string(tmp_path: Path) -> None:
    err = config_error(tmp_path, f"a:\n  class: {TICK}\n  cron: 5\n")
    assert (err.entry, err.key) == ("a", "cron")
    assert "string" in str(err)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe", "../etc", "''", "5"])
def test_timezone_unknown(tmp_path: Path, zone: str) -> None:
    err = config_error(tmp_path, f"a:\n  class: {TICK}\n  cron: '0 3 * * *'\n  timezone: {zone}\n")
    assert (err.entry, err.key) == ("a", "timezone")
    assert "zone" in str(err)


def test_timezone_on_interval_entry(tmp_path: Path) -> None:
    err = config_error(tmp_path, f"a:\n  class: {TICK}\n  every: 5\n  timezone: UTC\n")
    assert (err.entry, err.key) == ("a", "timezone")
    assert "only applies to cron" in str(err)


@pytest.mark.parametrize("value", ["0", "-1", "'30'", "false", "~"])
def test_timeout_not_positive_number(tmp_path: Path, value: str) -> None:
    err = config_error(tmp_path, f"a:\n  class: {TICK}\n  every: 5\n  timeout: {value}\n")
    assert (err.entry, err.key) == ("a", "timeout")
    assert "seconds" in str(err)


@pytest.mark.parametrize("value", ["0", "4", "-1", "1.0", "'1'", "true"])
def test_worker_out_of_range_or_not_int(tmp_path: Path, value: str) -> None:
    err = config_error(tmp_path, f"a:\n  class: {TICK}\n  every: 5\n  worker: {value}\n")
    assert (err.entry, err.key) == ("a", "worker")
    assert "1..3" in str(err)


def test_first_error_wins_and_nothing_is_returned(tmp_path: Path) -> None:
    err = config_error(
        tmp_path,
        f"ok:\n  class: {TICK}\n  every: 1\nbad:\n  class: {TICK}\n  every: 0\nworse:\n  nope: 1\n",
    )
    assert (err.entry, err.key) == ("bad", "every")


def test_message_names_entry_key_and_source(tmp_path: Path) -> None:
    err = config_error(tmp_path, f"a:\n  class: {TICK}\n  every: -1\n")
    text = str(err)
    assert text.startswith("schedule entry 'a', key 'every': ")
    assert str(tmp_path / "schedule.yml") in text


def test_a_perform_that_needs_arguments_is_a_config_error_not_a_failure_every_tick() -> None:
    """Entries pass no arguments; such a class used to fail with TypeError at every fire."""
    with pytest.raises(ConfigError) as info:
        parse_schedule(
            {"tick": {"class": "tests.integration.jobs_for_tests.Record", "every": 5}},
            total_workers=1,
            source="s.yml",
        )
    assert info.value.entry == "tick"
    assert info.value.key == "class"
    assert "cannot be called with no arguments" in str(info.value)
    assert "ledger" in str(info.value)


# -- args, queue, priority, misfire_grace (SPEC Part 2) -----------------------------------

RECORD = "tests.integration.jobs_for_tests.Record"


def _one(body: dict[str, object]) -> ScheduleEntry:
    (entry,) = parse_schedule({"e": body}, total_workers=1, source="s.yml")
    return entry


def _bad(body: dict[str, object]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_schedule({"e": body}, total_workers=1, source="s.yml")
    return info.value


def test_new_keys_default_and_parse() -> None:
    plain = _one({"class": TICK, "every": 5})
    assert (plain.args, plain.args_json, plain.queue, plain.priority, plain.misfire_grace) == (
        (),
        "[]",
        "default",
        0,
        60.0,
    )
    full = _one(
        {
            "class": RECORD,
            "every": 5,
            "args": ["/tmp/ledger", "t"],
            "queue": "low",
            "priority": -3,
            "misfire_grace": 0,
        }
    )
    assert (full.args, full.args_json, full.queue, full.priority, full.misfire_grace) == (
        ("/tmp/ledger", "t"),
        '["/tmp/ledger","t"]',
        "low",
        -3,
        0.0,
    )


def test_spec_names_the_trigger_so_a_changed_entry_is_noticed() -> None:
    assert _one({"class": TICK, "every": 5}).spec == "every 5.0"
    cron = _one({"class": TICK, "cron": "0 3 * * *", "timezone": "Europe/Berlin"})
    assert cron.spec == "cron 0 3 * * * Europe/Berlin"


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        ({"args": "x"}, "args", "must be a list"),
        ({"args": [float("nan")]}, "args", "not JSON"),
        ({"args": [{1: 2}]}, "args", "not a str"),
        ({"args": [1, 2, 3]}, "args", "takes 1 to 2 argument(s), args gives 3"),
        ({"args": []}, "args", "cannot be called with no arguments"),
        ({"queue": ""}, "queue", "non-empty string"),
        ({"queue": 3}, "queue", "non-empty string"),
        ({"priority": True}, "priority", "must be an int"),
        ({"priority": 2**40}, "priority", "must be an int"),
        ({"misfire_grace": -1}, "misfire_grace", ">= 0"),
        ({"misfire_grace": "soon"}, "misfire_grace", "number of seconds"),
    ],
)
def test_bad_new_keys_are_config_errors_naming_the_key(
    body: dict[str, object], key: str, words: str
) -> None:
    err = _bad({"class": RECORD, "every": 5, "args": ["/tmp/l"], **body})
    assert (err.entry, err.key) == ("e", key)
    assert words in str(err)
