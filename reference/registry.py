"""`Registry`: job names to `Job` subclasses.

`resolve()` never imports: a name read from the database runs only if the class was
registered by importing its module on purpose (SPEC: never imported from what the database
says). `load_job_class()` serves only the trusted schedule-file path, which names a dotted
class the operator wrote.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from reference.errors import UnknownJobError

if TYPE_CHECKING:
    from reference.job import Job


def job_name(cls: type) -> str:
    """The registered name of a job class: `module.QualName` (huey's rule)."""
    return f"{cls.__module__}.{cls.__qualname__}"


class Registry:
    """Maps job names to classes; one per runtime, `default_registry` for the user API."""

    __slots__ = ("_classes",)

    def __init__(self) -> None:
        self._classes: dict[str, type[Job]] = {}

    def register(self, cls: type[Job]) -> type[Job]:
        """Register `cls` under its dotted name; re-registering a name replaces it."""
        self._classes[job_name(cls)] = cls
        return cls

    def resolve(self, name: str) -> type[Job]:
        """Return the class registered as `name`.

        Raises:
            UnknownJobError: no such class was registered in this process.
        """
        try:
            return self._classes[name]
        except KeyError:
            raise UnknownJobError(
                f"unknown job {name!r}: no Job subclass of that name is registered in this "
                "process (import its module with --import)"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __len__(self) -> int:
        return len(self._classes)

    def __repr__(self) -> str:
        return f"Registry({len(self._classes)} jobs)"


default_registry = Registry()


def load_job_class(dotted: str) -> type[Job]:
    """Import `package.module.Class` for the schedule file and check it is a `Job`.

    Raises:
        LookupError: the module or attribute does not exist.
        TypeError: the attribute is not a `Job` subclass.
    """
    from reference.job import Job  # local: job.py imports this module

    module_name, _, attr = dotted.rpartition(".")
    if not module_name or not attr:
        raise LookupError(f"{dotted!r} is not a dotted path like 'package.module.Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LookupError(f"cannot import module {module_name!r}: {exc}") from exc
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise LookupError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not (isinstance(obj, type) and issubclass(obj, Job)) or obj is Job:
        raise TypeError(f"{dotted!r} is not a subclass of reference.Job")
    return obj
