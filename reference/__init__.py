"""asyncio-native cron, interval and durable SQLite job-queue runtime.

The public surface: `Job`, the error classes and `current_worker()`. Importing this
package does nothing else: no I/O, no environment reads, no threads.
"""

from __future__ import annotations

from reference.errors import (
    BackgroundError,
    ConfigError,
    InvalidOptionError,
    MetricsFileError,
    NotConfiguredError,
    OptionTypeError,
    PayloadError,
    SocketInUseError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreUnusableError,
    TransportError,
    UnknownJobError,
)
from reference.job import Job, current_worker

__version__ = "0.1.0.dev0"

__all__ = [
    "BackgroundError",
    "ConfigError",
    "InvalidOptionError",
    "Job",
    "MetricsFileError",
    "NotConfiguredError",
    "OptionTypeError",
    "PayloadError",
    "SocketInUseError",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "StoreUnusableError",
    "TransportError",
    "UnknownJobError",
    "__version__",
    "current_worker",
]
