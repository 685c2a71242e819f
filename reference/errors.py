"""The whole exception tree of the project.

Owns every error class users may catch; imports nothing from the package.

    BackgroundError(Exception)
    ├── ConfigError(BackgroundError, ValueError)         .entry, .key — CLI prints it, exits 2
    ├── InvalidOptionError(BackgroundError, ValueError)  unknown option key
    ├── OptionTypeError(BackgroundError, TypeError)      wrong option type
    ├── PayloadError(BackgroundError, TypeError)         non-JSON argument; nothing stored
    ├── UnknownJobError(BackgroundError, LookupError)    name not in the registry
    ├── NotConfiguredError(BackgroundError, RuntimeError)  enqueue before configure()
    ├── StoreError ── StoreLockedError, StoreCorruptError, StoreUnusableError
    ├── TransportError ── SocketInUseError
    └── MetricsFileError(BackgroundError, ValueError)  metrics file missing or not ours
"""

from __future__ import annotations


class BackgroundError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(BackgroundError, ValueError):
    """A schedule file or setting is invalid; names the entry and key at fault."""

    def __init__(self, message: str, *, entry: str | None = None, key: str | None = None) -> None:
        self.entry = entry
        self.key = key
        self.detail = message
        where = []
        if entry is not None:
            where.append(f"schedule entry {entry!r}")
        if key is not None:
            where.append(f"key {key!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class InvalidOptionError(BackgroundError, ValueError):
    """A job option key is unknown, or its value is out of range."""


class OptionTypeError(BackgroundError, TypeError):
    """A job option has the wrong type."""


class PayloadError(BackgroundError, TypeError):
    """A job argument cannot be stored as JSON; nothing was enqueued."""


class UnknownJobError(BackgroundError, LookupError):
    """A job name is not a registered `Job` subclass."""


class NotConfiguredError(BackgroundError, RuntimeError):
    """A job was enqueued before `reference.queue.configure()` ran."""


class StoreError(BackgroundError):
    """The job store failed; the operation did not take effect."""


class StoreLockedError(StoreError):
    """The database stayed locked by another connection beyond the busy timeout."""


class StoreCorruptError(StoreError):
    """The database file is not a usable SQLite database."""


class StoreUnusableError(StoreError):
    """The store stopped working for good (deleted, replaced, read-only or corrupt): a worker
    on it exits rather than warn forever."""


class TransportError(BackgroundError):
    """The wake-up transport could not be set up."""


class SocketInUseError(TransportError):
    """Another live process already listens on this wake-up socket."""


class MetricsFileError(BackgroundError, ValueError):
    """The metrics file is missing, unreadable, or not a metrics file of this layout."""
