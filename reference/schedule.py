"""The schedule file: YAML -> validated `list[ScheduleEntry]`.

Layer 1: imports layer 0 (errors, clock, triggers, sharding) and `registry`/`job`; never the
engine, the queue or the adapters. The whole file is validated before anything is returned,
so a bad file never starts a half-configured worker; every failure is a `ConfigError` naming
the entry and key. Stricter than the seed on purpose: duplicate entry names or keys (YAML
would keep the last one silently) and `timezone` on an `every` entry (it would be ignored)
are errors.

Hostile files fail fast with one line, never a traceback or a worker that cannot start:
the file is at most `MAX_FILE_BYTES`; the YAML is bounded while it is composed (at most
`MAX_DEPTH` levels and `MAX_NODES` nodes, aliases counted as what they expand to, so a
"billion laughs" stops after `MAX_NODES`); numbers are finite and in range (`MIN_EVERY`,
`MAX_SECONDS`); a cron expression must fire within `CRON_HORIZON_YEARS`; and no message
shows more than about 60 characters of a value.

Cost: one pass of libyaml's C parser, a Python composer (for the bounds) and PyYAML's safe
constructor, with the cyclic GC paused while the file is loaded and checked; each job class
is imported and each (cron, timezone) checked once per file, not once per entry. Each
worker process loads the file again, so this is paid by the supervisor and by every worker
(about 3 s each for 100,000 entries on the 2-core development machine).

Over 600 lines because the bounded YAML reader (`_read` to `_reject_duplicates`) lives
beside the validation it serves; it is the first thing to move into a module of its own.
"""

from __future__ import annotations

import gc
import math
import os
import reprlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent, ScalarEvent, SequenceStartEvent
from yaml.nodes import MappingNode, ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from reference.clock import SystemClock
from reference.errors import ConfigError, PayloadError
from reference.job import Job, perform_arity
from reference.options import DEFAULT_TIMEOUT  # one default for entries and queue jobs
from reference.payload import encode_args  # the producer's own JSON rules and limits
from reference.registry import load_job_class
from reference.sharding import worker_for
from reference.triggers import CronSchedule, NoNextFireError

if TYPE_CHECKING:
    from datetime import datetime

_C_PARSER: type[Any] | None
try:
    from yaml._yaml import CParser as _C_PARSER
except ImportError:  # PyYAML built without libyaml
    _C_PARSER = None

KNOWN_KEYS = (
    "class",
    "every",
    "cron",
    "timezone",
    "timeout",
    "worker",
    "args",
    "queue",
    "priority",
    "misfire_grace",
)
_KNOWN = frozenset(KNOWN_KEYS)

MIN_EVERY = 0.1
"""The shortest `every` (seconds). The same floor as a cron delay (`MIN_CRON_SLEEP`): an
entry fires at most 10 times a second, so a typo like `every: 1.0e-9` cannot spin a worker
at 100% CPU, while sub-second intervals (the tests use 0.5 s) stay possible."""
MAX_SECONDS = 365 * 86400.0
"""The longest `every` and `timeout`: one year (31,536,000 s). Longer is a typo or an
attempt at "never"; it also keeps every due time and deadline a float far from overflow."""
CRON_HORIZON_YEARS = 10
"""A cron expression must fire within this many years of loading. Without a year field the
longest real gap is 8 years (29 February around 2100), so this rejects only expressions that
never fire ("0 0 31 2 *") or whose year field is past or far off."""
DEFAULT_MISFIRE_GRACE = 60.0
"""How late (seconds) a tick missed while no worker ran may still fire once at start; an
older miss is skipped, logged and counted (SPEC Part 2). Per entry: `misfire_grace`."""
DEFAULT_QUEUE = "default"
MAX_QUEUE_CHARS = 200
MAX_PRIORITY = 2**31 - 1
"""`priority` is an int in -MAX_PRIORITY-1..MAX_PRIORITY (a 32-bit range: plenty, and far
from SQLite's 64-bit limit)."""
MAX_CRON_CHARS = 1000
"""Longer cron expressions are refused: croniter's parse time grows with them."""
MAX_FILE_BYTES = 16 * 1024 * 1024
"""The largest schedule file (16 MiB): about twice a 100,000-entry file."""
MAX_DEPTH = 32
"""The deepest YAML nesting (a schedule needs 3: file, entry, value)."""
MAX_NODES = 2_000_000
"""The most YAML nodes in a file, aliases counted as expanded (100,000 entries are ~700,000)."""
MAX_NUMBER_CHARS = 1000
"""A scalar that YAML reads as an int or float may have at most this many characters, so a
huge literal cannot cost quadratic time to convert (10**400, 401 digits, is still read and
then refused by range with the entry and key named)."""

LoadClass = Callable[[str], type[Job]]
_Fail = Callable[[str | None, str], ConfigError]

_reprs = reprlib.Repr()
_reprs.maxstring = _reprs.maxother = _reprs.maxlong = 60
_reprs.maxlevel, _reprs.maxlist, _reprs.maxdict = 2, 4, 4


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
    args: tuple[object, ...] = ()  # passed to perform(); JSON values, checked at load
    args_json: str = "[]"  # `args` as the producer would store them
    # Recorded on the entry and its `schedules` row for the job-life work that follows;
    # jobs have no queues or priorities yet, so a fire does not use them.
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    misfire_grace: float = DEFAULT_MISFIRE_GRACE

    def __post_init__(self) -> None:
        if (self.every is None) == (self.cron is None):
            raise ValueError("a ScheduleEntry has exactly one of every / cron")

    @property
    def spec(self) -> str:
        """The trigger as text ("every 60.0", "cron 0 3 * * * Europe/Berlin"); a stored row
        whose spec differs belongs to a changed entry, which gets a fresh next fire."""
        if self.every is not None:
            return f"every {self.every!r}"
        return f"cron {self.cron_expr} {self.timezone or 'local'}"

    @property
    def cron_expr(self) -> str | None:
        """The cron expression as written in the file, or None for interval entries."""
        return self.cron.expr if self.cron is not None else None


def load_schedule(
    path: str | Path,
    *,
    total_workers: int,
    load_class: LoadClass = load_job_class,
    now: datetime | None = None,
) -> list[ScheduleEntry]:
    """Read, parse and validate the schedule file at `path`.

    `now` (aware; default the real wall clock) is when cron expressions must fire after.

    Raises:
        ConfigError: the file is missing, unreadable, too large, not YAML, or any entry is
            invalid.
    """
    source = str(path)
    data = _parse_yaml(_read(Path(path), source), source)
    return parse_schedule(
        data, total_workers=total_workers, source=source, load_class=load_class, now=now
    )


def parse_schedule(
    data: object,
    *,
    total_workers: int,
    source: str,
    load_class: LoadClass = load_job_class,
    now: datetime | None = None,
) -> list[ScheduleEntry]:
    """Validate already-parsed YAML `data` (from `source`, for messages) into entries.

    Entries with the same (cron, timezone) share one `CronSchedule`: it is used from one
    event loop, and its cache is valid for any entry with that expression.

    Raises:
        ConfigError: the first problem found, in file order.
    """
    if isinstance(total_workers, bool) or not isinstance(total_workers, int) or total_workers < 1:
        raise ConfigError(f"the number of workers must be an int >= 1, got {_show(total_workers)}")
    if data is None or (isinstance(data, Mapping) and not data):
        raise ConfigError(f"schedule file {source} is empty: it defines no entries")
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"schedule file {source} must be a mapping of entry names to entries, "
            f"not a {_type_name(data)}"
        )
    ctx = _Context(
        total_workers, source, load_class, now if now is not None else SystemClock().wall()
    )
    with _gc_paused():
        return [_parse_entry(name, body, ctx) for name, body in data.items()]


def entries_for(entries: list[ScheduleEntry], worker_index: int) -> list[ScheduleEntry]:
    """Return the entries assigned to worker `worker_index` (1-based), in file order."""
    return [entry for entry in entries if entry.worker == worker_index]


# --- reading and YAML ---------------------------------------------------------------------


def _read(path: Path, source: str) -> str:
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is then refused below).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(fd)
            if not S_ISREG(info.st_mode):
                raise ConfigError(f"cannot read schedule file {source}: not a regular file")
            if info.st_size > MAX_FILE_BYTES:
                raise _too_large(source)
            raw = file.read(MAX_FILE_BYTES + 1)  # bounded even if the file grows meanwhile
    except FileNotFoundError:
        raise ConfigError(f"schedule file {source} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read schedule file {source}: {exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise _too_large(source)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read schedule file {source}: {exc}") from exc


def _too_large(source: str) -> ConfigError:
    return ConfigError(
        f"schedule file {source} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB"
    )


class _BoundedComposer(Composer, Resolver):
    """PyYAML's composer, refusing a document deeper than MAX_DEPTH or larger than MAX_NODES.

    Both are counted as if every alias were expanded, since that is what the constructed
    data (and anything that walks it) sees: a "billion laughs" fails once MAX_NODES is
    passed, in milliseconds, and nesting fails before Python recursion can overflow. A
    recursive alias (an alias inside its own anchor) is refused too. Errors name the
    entry and key being composed. `compose_node` is `Composer.compose_node` with these
    checks, the scalar case inlined and its tag resolution cached (per loader): a large
    schedule repeats the same few scalars ("every", "60", the class) thousands of times.
    """

    source = "<schedule>"

    if TYPE_CHECKING:  # from the parser it is mixed with (libyaml's or PyYAML's)

        def peek_event(self) -> Any: ...
        def get_event(self) -> Any: ...

    def __init__(self) -> None:
        Composer.__init__(self)
        Resolver.__init__(self)
        self._nodes = 0  # nodes so far, each alias counted as its anchor's expanded size
        self._level = 0  # nesting level of the innermost open node (the root is level 1)
        self._reach = 0  # deepest level reached inside the open node, aliases expanded
        self._measured: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, height)
        self._where: list[object] = [None, None]  # the entry name and key being composed
        self._at = 0  # the level being composed (or, between items, of the open collection)
        self._tags: dict[tuple[str, tuple[bool, bool]], str] = {}

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        level = self._at = self._level + 1
        if level in (2, 3):
            # Level 2 is an entry (index: its name node), level 3 a key's value (index:
            # the key node); a key itself comes with index None.
            named = index.value if isinstance(index, ScalarNode) else None
            if level == 2:
                self._where = [named, None]
            else:
                self._where[1] = named
        event = self.peek_event()  # the scanner may fail here: `position` then tells where
        kind = type(event)
        anchor = event.anchor
        if kind is AliasEvent:
            self.get_event()
            if anchor not in self.anchors:
                raise ComposerError(
                    None, None, f"found undefined alias {_clip(anchor)}", event.start_mark
                )
            measured = self._measured.get(anchor)
            if measured is None:  # its anchor is still open
                raise self._refuse("an alias inside its own anchor (recursive)", event.start_mark)
            self._grow(measured[0], level + measured[1] - 1, event.start_mark)
            return self.anchors[anchor]
        self._grow(1, level, event.start_mark)
        if anchor is not None and anchor in self.anchors:
            first = self.anchors[anchor].start_mark.line + 1
            problem = f"found duplicate anchor {_clip(anchor)} (first at line {first})"
            raise ComposerError(None, None, problem, event.start_mark)
        paths = bool(self.yaml_path_resolvers)  # none in a SafeLoader: skip their bookkeeping
        if paths:
            self.descend_resolver(parent, index)
        node: yaml.Node
        if kind is ScalarEvent:
            node = self._scalar(self.get_event())
            if anchor is not None:
                self.anchors[anchor] = node
                self._measured[anchor] = (1, 1)
        else:
            before, outer_reach = self._nodes - 1, self._reach
            self._level = self._reach = level
            try:
                if kind is SequenceStartEvent:
                    node = self.compose_sequence_node(anchor)
                else:
                    node = self.compose_mapping_node(anchor)
            finally:
                self._level = level - 1
            if anchor is not None:
                self._measured[anchor] = (self._nodes - before, self._reach - level + 1)
            self._reach = max(outer_reach, self._reach)
        if paths:
            self.ascend_resolver()
        self._at = level - 1
        return node

    def position(self) -> tuple[str | None, str | None]:
        """The entry and key being composed (None where not inside one), for messages."""
        entry, key = self._where
        return (
            _label(str(entry)) if entry is not None and self._at >= 2 else None,
            _label(str(key)) if key is not None and self._at >= 3 else None,
        )

    def _scalar(self, event: Any) -> ScalarNode:
        tag = event.tag
        if tag is None or tag == "!":
            if self.yaml_path_resolvers:  # a path can change the tag: no cache
                tag = self._resolve(event)
            else:
                key = (event.value, event.implicit)
                tag = self._tags.get(key)
                if tag is None:
                    tag = self._tags[key] = self._resolve(event)
        return ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)

    def _resolve(self, event: Any) -> str:
        tag: str = self.resolve(ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
        return tag

    def _grow(self, nodes: int, reach: int, mark: Any) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise self._refuse(
                f"more than {MAX_NODES:,} YAML nodes (aliases count as what they expand to)",
                mark,
            )
        if reach > MAX_DEPTH:
            raise self._refuse(
                f"nested deeper than {MAX_DEPTH} levels (aliases count as what they expand to)",
                mark,
            )
        if reach > self._reach:
            self._reach = reach

    def _refuse(self, problem: str, mark: Any) -> ConfigError:
        entry, key = self.position()
        where = f"line {mark.line + 1}, column {mark.column + 1} of {self.source}"
        return ConfigError(f"{problem} ({where})", entry=entry, key=key)


def _loader_class(parser: type[Any]) -> type[Any]:
    """A safe loader on `parser` (libyaml's CParser, or PyYAML's pure-Python parser): what
    `yaml.CSafeLoader` / `yaml.SafeLoader` are, with `_BoundedComposer` as the composer."""

    class Loader(_BoundedComposer, parser, SafeConstructor):  # type: ignore[misc]
        def __init__(self, text: str, source: str) -> None:
            parser.__init__(self, text)
            _BoundedComposer.__init__(self)
            SafeConstructor.__init__(self)
            self.source = source
            self._scalars: dict[tuple[str, str], object] = {}

        def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
            # The same result as SafeConstructor's, without its per-node bookkeeping for
            # the scalars a schedule is made of: a str is its text, and an int, float,
            # bool or null is immutable, so one object serves every repeat of its text.
            if node.__class__ is ScalarNode:
                if node.tag == _STR_TAG:
                    return node.value
                if node.tag in _PLAIN_TAGS:
                    key = (node.tag, node.value)
                    if key not in self._scalars:
                        self._scalars[key] = super().construct_object(node, deep)
                    return self._scalars[key]
            return super().construct_object(node, deep)

    for tag in (*_NUMERIC_TAGS, "tag:yaml.org,2002:timestamp"):
        Loader.add_constructor(tag, _checked_scalar(SafeConstructor.yaml_constructors[tag]))
    return Loader


_NUMERIC_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_STR_TAG = "tag:yaml.org,2002:str"
_PLAIN_TAGS = frozenset((*_NUMERIC_TAGS, "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"))


def _checked_scalar(construct: Callable[[Any, ScalarNode], object]) -> Callable[..., object]:
    """Wrap a scalar constructor: a too-long number or a bad value is a YAML error, not a
    raw ValueError ("2020-13-45" as a timestamp, an int past Python's 4,300 digits)."""

    def checked(loader: Any, node: ScalarNode) -> object:
        if node.tag in _NUMERIC_TAGS and len(node.value) > MAX_NUMBER_CHARS:
            raise ConstructorError(
                None,
                None,
                f"a number of {len(node.value):,} characters (at most {MAX_NUMBER_CHARS})",
                node.start_mark,
            )
        try:
            return construct(loader, node)
        except (ValueError, ArithmeticError) as exc:
            raise ConstructorError(
                None,
                None,
                f"cannot read {_show(node.value)} as {node.tag.rpartition(':')[2]}: "
                f"{_clip(str(exc), 100, quote=False)}",
                node.start_mark,
            ) from exc

    return checked


class _PyParser(Reader, Scanner, Parser):
    """PyYAML's pure-Python reader, scanner and parser, as `SafeLoader` has them."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)


_PureLoader = _loader_class(_PyParser)
# libyaml's C scanner and parser when PyYAML has it (yaml.__with_libyaml__); else the same
# loader in pure Python, correct but ~10x slower on a large file.
_Loader = _loader_class(_C_PARSER) if _C_PARSER is not None else _PureLoader


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a file is composed, constructed and checked: that makes
    no garbage cycles, and collections over the ~700,000 young objects of a 100,000-entry
    file (nodes, then data, then entries) took more time than the work itself."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse_yaml(text: str, source: str) -> object:
    loader = None
    node = None
    try:
        with _gc_paused():
            loader = _Loader(text, source)  # the pure-Python reader checks characters here
            node = loader.get_single_node()
            if node is None:
                return None
            _reject_duplicates(node, source)
            return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        if context and not isinstance(exc, ConstructorError):
            problem = f"{context}, {problem}"  # "while scanning a quoted scalar, found ..."
        problem = _clip(problem, 200, quote=False)
        # Name the entry and key: a constructor error by where its node is, a scanner,
        # parser or composer error by what was being composed when it struck.
        if node is not None:
            entry, key = _locate(node, mark)
        else:
            entry, key = loader.position() if loader is not None else (None, None)
        if entry is not None and mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1} of {source}"
            invalid = "" if isinstance(exc, ConstructorError) else "not valid YAML: "
            raise ConfigError(f"{invalid}{problem} ({where})", entry=entry, key=key) from exc
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"schedule file {source} is not valid YAML{where}: {problem}") from exc
    finally:
        if loader is not None:
            loader.dispose()


def _locate(root: yaml.Node | None, mark: yaml.Mark | None) -> tuple[str | None, str | None]:
    """The (entry, key) whose text holds `mark`, for a constructor error's message."""
    if not isinstance(root, MappingNode) or mark is None:
        return None, None
    for name_node, body in root.value:
        if _holds(body, mark):
            entry = _label(str(name_node.value)) if isinstance(name_node, ScalarNode) else None
            if isinstance(body, MappingNode):
                for key_node, value in body.value:
                    if isinstance(key_node, ScalarNode) and _holds(value, mark):
                        return entry, _label(str(key_node.value))
            return entry, None
    return None, None


def _holds(node: yaml.Node, mark: yaml.Mark) -> bool:
    start, end = node.start_mark, node.end_mark
    return (start.line, start.column) <= (mark.line, mark.column) <= (end.line, end.column)


def _reject_duplicates(root: yaml.Node, source: str) -> None:
    """Fail on a repeated entry name, or a repeated key inside one entry."""
    if not isinstance(root, MappingNode):
        return
    names: set[str] = set()
    for key_node, value_node in root.value:
        if not isinstance(key_node, ScalarNode):
            continue  # not a name at all: parse_schedule says so
        name = key_node.value
        if name in names:
            line = key_node.start_mark.line + 1
            raise ConfigError(
                f"duplicate entry name at line {line} of {source}", entry=_label(name)
            )
        names.add(name)
        if isinstance(value_node, MappingNode):
            keys: set[str] = set()
            for inner, _ in value_node.value:
                if not isinstance(inner, ScalarNode):
                    continue
                key = inner.value
                if key in keys:
                    line = inner.start_mark.line + 1
                    raise ConfigError(
                        f"key given twice (line {line} of {source})",
                        entry=_label(name),
                        key=_label(key),
                    )
                keys.add(key)


# --- entries ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Context:
    """What every entry of one file is checked against, and the per-file caches."""

    total_workers: int
    source: str
    load_class: LoadClass
    now: datetime
    classes: dict[str, type[Job]] = field(default_factory=dict)
    crons: dict[tuple[str, str | None], CronSchedule] = field(default_factory=dict)


def _parse_entry(raw_name: object, body: object, ctx: _Context) -> ScheduleEntry:
    if not isinstance(raw_name, str) or not raw_name:
        raise ConfigError(
            f"entry names must be non-empty strings, got {_type_name(raw_name)} "
            f"{_show(raw_name)} in {ctx.source} (quote it in YAML)",
            entry=_label(str(raw_name)),
        )
    name = raw_name

    def fail(key: str | None, message: str) -> ConfigError:
        return ConfigError(f"{message} (in {ctx.source})", entry=_label(name), key=key)

    if not isinstance(body, Mapping):
        raise fail(None, f"must be a mapping with a 'class' key, not {_type_name(body)}")
    for key in body:
        if key not in _KNOWN:
            raise fail(
                _label(str(key)),
                f"unknown key; known keys are {', '.join(KNOWN_KEYS)}",
            )

    job_class = _job_class(body.get("class"), ctx, fail)

    every, cron_expr = body.get("every"), body.get("cron")
    if (every is None) == (cron_expr is None):
        both = "both" if every is not None else "neither"
        raise fail("every", f"needs exactly one of every / cron, got {both}")
    timezone = body.get("timezone")
    if timezone is not None and every is not None:
        raise fail("timezone", "only applies to cron entries; remove it or use cron")

    interval: float | None = None
    cron: CronSchedule | None = None
    if every is not None:
        interval = _seconds(every, "every", fail, minimum=MIN_EVERY)
    else:
        cron = _cron(cron_expr, timezone, ctx, fail)

    timeout = DEFAULT_TIMEOUT
    if "timeout" in body:
        timeout = _seconds(body["timeout"], "timeout", fail, minimum=0.0)

    pin = body.get("worker")
    if pin is not None and (
        isinstance(pin, bool) or not isinstance(pin, int) or not 1 <= pin <= ctx.total_workers
    ):
        raise fail(
            "worker",
            f"must be an int in 1..{ctx.total_workers} (the worker count), got {_show(pin)}",
        )
    args, args_json = _args(body.get("args"), "args" in body, fail)
    queue = body.get("queue", DEFAULT_QUEUE)
    if not isinstance(queue, str) or not queue or len(queue) > MAX_QUEUE_CHARS:
        raise fail(
            "queue",
            f"must be a non-empty string of at most {MAX_QUEUE_CHARS} characters, "
            f"got {_type_name(queue)} {_show(queue)}",
        )
    priority = body.get("priority", 0)
    if (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not -MAX_PRIORITY - 1 <= priority <= MAX_PRIORITY
    ):
        raise fail("priority", f"must be an int (higher runs first), got {_show(priority)}")
    misfire_grace = DEFAULT_MISFIRE_GRACE
    if "misfire_grace" in body:
        raw = body["misfire_grace"]
        if type(raw) in (int, float) and raw <= 0:  # 0: fire only on time; never late
            if raw < 0:
                raise fail("misfire_grace", f"must be a number of seconds >= 0, got {_show(raw)}")
            misfire_grace = 0.0
        else:
            misfire_grace = _seconds(raw, "misfire_grace", fail, minimum=0.0)
    # Last, so a mistake in another key is named first. A perform that cannot take the
    # entry's arguments would fail at every tick instead (SPEC: checked at validation).
    unrunnable = _arity_problem(job_class, len(args))
    if unrunnable is not None:
        key = "args" if "args" in body else "class"
        raise fail(key, f"{_show(body['class'])}: {unrunnable}")
    return ScheduleEntry(
        name=name,
        job_class=job_class,
        every=interval,
        cron=cron,
        timezone=timezone,
        timeout=timeout,
        worker=worker_for(name, ctx.total_workers, pin),
        args=args,
        args_json=args_json,
        queue=queue,
        priority=priority,
        misfire_grace=misfire_grace,
    )


def _args(raw: object, given: bool, fail: _Fail) -> tuple[tuple[object, ...], str]:
    """The `args` key: a YAML list of JSON values, held to the producer's payload rules."""
    if not given:
        return (), "[]"
    if not isinstance(raw, list):
        raise fail("args", f"must be a list of arguments for perform(), not {_type_name(raw)}")
    try:
        return tuple(raw), encode_args(raw)
    except PayloadError as exc:
        raise fail("args", _text(exc)) from exc


def _job_class(dotted: object, ctx: _Context, fail: _Fail) -> type[Job]:
    if dotted is None:
        raise fail("class", "missing: give the dotted path of a reference.Job subclass")
    if not isinstance(dotted, str):
        raise fail("class", f"must be a dotted path string, not {_type_name(dotted)}")
    cached = ctx.classes.get(dotted)
    if cached is not None:
        return cached
    shown = _show(dotted)
    parts = dotted.split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        raise fail("class", f"cannot load {shown}: not a dotted path like 'package.module.Class'")
    try:
        cls = ctx.load_class(dotted)
    except TypeError as exc:
        raise fail("class", f"{shown} is not a reference.Job subclass: {_text(exc)}") from exc
    except LookupError as exc:
        raise fail("class", f"cannot load {shown}: {_text(exc)}") from exc
    except Exception as exc:
        # Importing the operator's module runs its code; whatever that raises is still a
        # configuration problem of this entry, and must not become a traceback.
        raise fail(
            "class", f"importing {shown} failed: {type(exc).__name__}: {_text(exc)}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Job)) or cls is Job:
        raise fail("class", f"{shown} is not a reference.Job subclass")
    ctx.classes[dotted] = cls
    return cls


def _arity_problem(cls: type[Job], given: int) -> str | None:
    """Why `cls().perform(*args)` with `given` arguments cannot be called, or None if it can."""
    least, most, required = perform_arity(cls)
    if least <= given <= most:
        return None
    if given == 0:
        return (
            f"its perform() cannot be called with no arguments (it needs {', '.join(required)});"
            " give them with the args key"
        )
    if most < least:
        return "its perform() has a required keyword-only argument; args are positional"
    want = f"{least}" if least == most else f"{least} to {most:g}"
    if most == math.inf:
        want = f"at least {least}"
    return f"its perform() takes {want} argument(s), args gives {given}"


def _cron(expr: object, timezone: object, ctx: _Context, fail: _Fail) -> CronSchedule:
    if not isinstance(expr, str):
        raise fail("cron", f"must be a cron expression string, not {_type_name(expr)}")
    if timezone is not None and not isinstance(timezone, str):
        raise fail("timezone", f"must be an IANA zone name string, not {_type_name(timezone)}")
    cached = ctx.crons.get((expr, timezone))
    if cached is not None:
        return cached
    if len(expr) > MAX_CRON_CHARS:
        raise fail("cron", f"is {len(expr):,} characters long (at most {MAX_CRON_CHARS})")
    tz = _zone(timezone, fail) if timezone is not None else None
    try:
        cron = CronSchedule(expr, tz)
    except ValueError as exc:
        raise fail("cron", str(exc)) from exc
    try:
        first = cron.next_after(ctx.now)
    except NoNextFireError:
        first = None
    horizon = CRON_HORIZON_YEARS * 365.2425 * 86400
    if first is None or first.timestamp() - ctx.now.timestamp() > horizon:
        after = ctx.now.astimezone(tz).strftime("%Y-%m-%d")
        later = f"; its next run is {first:%Y-%m-%d}" if first is not None else ""
        raise fail(
            "cron",
            f"{_clip(expr)} does not fire within {CRON_HORIZON_YEARS} years of {after}"
            f"{later} (a date that does not exist, such as 31 February, or a past year)",
        )
    ctx.crons[(expr, timezone)] = cron
    return cron


def _zone(name: str, fail: _Fail) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise fail(
            "timezone",
            f"unknown time zone {_show(name)} (use an IANA name such as 'Europe/Berlin')",
        ) from exc


def _seconds(value: object, key: str, fail: _Fail, *, minimum: float) -> float:
    """`value` as seconds in [minimum, MAX_SECONDS]; `minimum` 0 means "> 0"."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(key, f"must be a number of seconds, not {_type_name(value)} {_show(value)}")
    # Compare before any float(): an int such as 10**400 compares exactly but overflows
    # float(), and math.isfinite(int) converts.
    if isinstance(value, float) and not math.isfinite(value):
        raise fail(key, f"must be a finite number of seconds, got {_show(value)}")
    if value > MAX_SECONDS:
        raise fail(
            key, f"must be at most {MAX_SECONDS:,.0f} seconds (one year), got {_show(value)}"
        )
    if minimum == 0 and value <= 0:
        raise fail(key, f"must be a number of seconds > 0, got {_show(value)}")
    if value < minimum:
        raise fail(
            key,
            f"must be at least {minimum:g} seconds (MIN_EVERY: shorter would keep the worker "
            f"busy), got {_show(value)}",
        )
    return float(value)


def _show(value: object) -> str:
    """repr() of `value` for a message, at most about 60 characters, whatever its size."""
    try:
        shown = _reprs.repr(value)
    except Exception:  # a str() over the int digit limit, a broken __repr__
        shown = f"<{_type_name(value)}>"
    return _clip(shown, quote=False)


def _label(name: str) -> str:
    """An entry name or key as `ConfigError` shows it (repr'd there): at most 200 chars."""
    return _clip(name, 200, quote=False)


def _text(exc: BaseException) -> str:
    return _clip(str(exc), 200, quote=False)


def _clip(text: str, limit: int = 60, *, quote: bool = True) -> str:
    """`text` for a one-line message: repr()'d if `quote`, else with its whitespace (newlines
    too) collapsed; cut to `limit` characters."""
    shown = repr(text) if quote else " ".join(text.split())
    return shown if len(shown) <= limit else f"{shown[: limit - 3]}..."


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__
