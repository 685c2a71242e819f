"""What the command-line tools share: one-line usage errors, `--version`, and log set-up.

Layer 4. `python -m reference.worker` and `python -m reference.queue` build their parsers
from here and configure logging through `configure_logging` (STYLE 4.6: only the CLIs add
handlers). Log lines are text by default, or one JSON object per line with `--log-format
json`, carrying the structured fields the runtime puts in `extra=` (`event`, `worker`, ...).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NoReturn

from reference import __version__
from reference.config import DEFAULT_LOG_FORMAT, LOG_FORMATS, LOG_LEVELS

if TYPE_CHECKING:
    from reference.config import LogSettings

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process_tag)s] %(name)s: %(message)s"
# Every attribute a plain LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, exit 2 (SPEC: Command line)."""

    def error(self, message: str) -> NoReturn:
        if len(message) > 300:
            message = message[:300] + "..."
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_version(parser: argparse.ArgumentParser) -> None:
    """Add `--version`, printing the package version (`reference.__version__`)."""
    parser.add_argument("--version", action="version", version=f"reference {__version__}")


def add_logging_options(parser: argparse.ArgumentParser, *, default_level: str) -> None:
    """Add `--log-level` and `--log-format`; None when not given, so the env can fill in."""
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        help=f"one of {', '.join(LOG_LEVELS)}, any case "
        f"(env QUEUE_LOG_LEVEL; default: {default_level})",
    )
    parser.add_argument(
        "--log-format",
        metavar="FORMAT",
        help=f"{' or '.join(LOG_FORMATS)}: json is one object per line "
        f"(env QUEUE_LOG_FORMAT; default: {DEFAULT_LOG_FORMAT})",
    )


class ProcessTag(logging.Filter):
    """Tags every record with the process that wrote it ('worker N', 'supervisor', 'queue').

    A separate attribute, not `worker`: records carry `extra={"worker": ...}` for their
    structured fields, and the tag must say which process wrote the line.
    """

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_tag = self.tag
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, process, message, then the extras.

    The extras are whatever the call put in `extra=` (`event`, `worker`, `job_id`, `entry`,
    ...), so a field the runtime adds later shows up without a change here. A traceback is
    one `exception` string, so a record is always exactly one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        tag = getattr(record, "process_tag", None)
        if tag is not None:
            line["process"] = tag
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key != "process_tag" and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(settings: LogSettings, tag: str, *, text_format: str = TEXT_FORMAT) -> None:
    """Send every log record to stderr, as text (`text_format`) or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if settings.format == "json" else logging.Formatter(text_format)
    handler.setFormatter(formatter)
    handler.addFilter(ProcessTag(tag))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
