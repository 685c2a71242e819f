"""The schedule file: YAML -> validated `list[ScheduleEntry]`.

Layer 1: imports layer 0 (errors, triggers, sharding) and `registry`/`job`; never the engine,
the queue or the adapters. The whole file is validated before anything is returned, so a bad
file never starts a half-configured worker; every failure is a `ConfigError` naming the entry
and key. Stricter than the seed on purpose: duplicate entry names or keys (YAML would keep
the last one silently) and `timezone` on an `every` entry (it would be ignored) are errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from reference.errors import ConfigError
from reference.job import Job
from reference.registry import load_job_class
from reference.sharding import worker_for
from reference.triggers import CronSchedule

DEFAULT_TIMEOUT = 30.0
KNOWN_KEYS = ("class", "every", "cron", "timezone", "timeout", "worker")

LoadClass = Callable[[str], type[Job]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleEntry:
    """One validated schedule entry, already assigned to a worker."""

    name: str
    job_class: type[Job]
    every: float | None = None
    cron: CronSchedule | None = None
    timezone: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    worker: int

    def __post_init__(self) -> None:
        if (self.every is None) == (self.cron is None):
            raise ValueError("a ScheduleEntry has exactly one of every / cron")

    @property
    def cron_expr(self) -> str | None:
        """The cron expression as written in the file, or None for interval entries."""
        return self.cron.expr if self.cron is not None else None


def load_schedule(
    path: str | Path, *, total_workers: int, load_class: LoadClass = load_job_class
) -> list[ScheduleEntry]:
    """Read, parse and validate the schedule file at `path`.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, or any entry is invalid.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"schedule file {source} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read schedule file {source}: {exc}") from exc
    data = _parse_yaml(text, source)
    return parse_schedule(data, total_workers=total_workers, source=source, load_class=load_class)


def parse_schedule(
    data: object, *, total_workers: int, source: str, load_class: LoadClass = load_job_class
) -> list[ScheduleEntry]:
    """Validate already-parsed YAML `data` (from `source`, for messages) into entries.

    Raises:
        ConfigError: the first problem found, in file order.
    """
    if isinstance(total_workers, bool) or not isinstance(total_workers, int) or total_workers < 1:
        raise ConfigError(f"the number of workers must be an int >= 1, got {total_workers!r}")
    if data is None or (isinstance(data, Mapping) and not data):
        raise ConfigError(f"schedule file {source} is empty: it defines no entries")
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"schedule file {source} must be a mapping of entry names to entries, "
            f"not a {_type_name(data)}"
        )
    return [
        _parse_entry(name, body, total_workers, source, load_class) for name, body in data.items()
    ]


def entries_for(entries: list[ScheduleEntry], worker_index: int) -> list[ScheduleEntry]:
    """Return the entries assigned to worker `worker_index` (1-based), in file order."""
    return [entry for entry in entries if entry.worker == worker_index]


def _parse_yaml(text: str, source: str) -> object:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _reject_duplicates(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"schedule file {source} is not valid YAML{where}: {problem}") from exc
    finally:
        loader.dispose()


def _reject_duplicates(root: yaml.Node, source: str) -> None:
    """Fail on a repeated entry name, or a repeated key inside one entry."""
    if not isinstance(root, yaml.MappingNode):
        return
    names: set[str] = set()
    for key_node, value_node in root.value:
        name = str(key_node.value)
        if name in names:
            line = key_node.start_mark.line + 1
            raise ConfigError(f"duplicate entry name at line {line} of {source}", entry=name)
        names.add(name)
        if isinstance(value_node, yaml.MappingNode):
            keys: set[str] = set()
            for inner, _ in value_node.value:
                key = str(inner.value)
                if key in keys:
                    line = inner.start_mark.line + 1
                    raise ConfigError(
                        f"key given twice (line {line} of {source})", entry=name, key=key
                    )
                keys.add(key)


def _parse_entry(
    raw_name: object, body: object, total_workers: int, source: str, load_class: LoadClass
) -> ScheduleEntry:
    if not isinstance(raw_name, str) or not raw_name:
        raise ConfigError(
            f"entry names must be non-empty strings, got {_type_name(raw_name)} {raw_name!r} "
            f"in {source} (quote it in YAML)",
            entry=str(raw_name),
        )
    name = raw_name

    def fail(key: str | None, message: str) -> ConfigError:
        return ConfigError(f"{message} (in {source})", entry=name, key=key)

    if not isinstance(body, Mapping):
        raise fail(None, f"must be a mapping with a 'class' key, not {_type_name(body)}")
    for key in body:
        if key not in KNOWN_KEYS:
            raise fail(str(key), f"unknown key; known keys are {', '.join(KNOWN_KEYS)}")

    job_class = _job_class(body.get("class"), load_class, fail)

    every, cron_expr = body.get("every"), body.get("cron")
    if (every is None) == (cron_expr is None):
        both = "both" if every is not None else "neither"
        raise fail("every", f"needs exactly one of every / cron, got {both}")
    timezone = body.get("timezone")
    tz: ZoneInfo | None = None
    if timezone is not None:
        if every is not None:
            raise fail("timezone", "only applies to cron entries; remove it or use cron")
        tz = _zone(timezone, fail)

    interval: float | None = None
    cron: CronSchedule | None = None
    if every is not None:
        interval = _positive_number(every, "every", fail)
    else:
        if not isinstance(cron_expr, str):
            raise fail("cron", f"must be a cron expression string, not {_type_name(cron_expr)}")
        try:
            cron = CronSchedule(cron_expr, tz)
        except ValueError as exc:
            raise fail("cron", str(exc)) from exc

    timeout = DEFAULT_TIMEOUT
    if "timeout" in body:
        timeout = _positive_number(body["timeout"], "timeout", fail)

    pin = body.get("worker")
    if pin is not None and (
        isinstance(pin, bool) or not isinstance(pin, int) or not 1 <= pin <= total_workers
    ):
        raise fail(
            "worker", f"must be an int in 1..{total_workers} (the worker count), got {pin!r}"
        )
    return ScheduleEntry(
        name=name,
        job_class=job_class,
        every=interval,
        cron=cron,
        timezone=timezone,
        timeout=timeout,
        worker=worker_for(name, total_workers, pin),
    )


def _job_class(
    dotted: object, load_class: LoadClass, fail: Callable[[str | None, str], ConfigError]
) -> type[Job]:
    if dotted is None:
        raise fail("class", "missing: give the dotted path of a reference.Job subclass")
    if not isinstance(dotted, str):
        raise fail("class", f"must be a dotted path string, not {_type_name(dotted)}")
    try:
        cls = load_class(dotted)
    except TypeError as exc:
        raise fail("class", f"{dotted!r} is not a reference.Job subclass: {exc}") from exc
    except LookupError as exc:
        raise fail("class", f"cannot load {dotted!r}: {exc}") from exc
    except Exception as exc:
        # Importing the operator's module runs its code; whatever that raises is still a
        # configuration problem of this entry, and must not become a traceback.
        raise fail("class", f"importing {dotted!r} failed: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Job)) or cls is Job:
        raise fail("class", f"{dotted!r} is not a reference.Job subclass")
    return cls


def _zone(name: object, fail: Callable[[str | None, str], ConfigError]) -> ZoneInfo:
    if not isinstance(name, str):
        raise fail("timezone", f"must be an IANA zone name string, not {_type_name(name)}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise fail(
            "timezone", f"unknown time zone {name!r} (use an IANA name such as 'Europe/Berlin')"
        ) from exc


def _positive_number(
    value: object, key: str, fail: Callable[[str | None, str], ConfigError]
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(key, f"must be a number of seconds, not {_type_name(value)} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise fail(key, f"must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__
