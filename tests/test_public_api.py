"""Pin the public surface: `reference.__all__` changes only on purpose."""

from __future__ import annotations

import reference

EXPECTED = {
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
}


def test_all_is_pinned() -> None:
    assert set(reference.__all__) == EXPECTED


def test_every_name_in_all_exists() -> None:
    for name in reference.__all__:
        assert hasattr(reference, name), name


def test_errors_derive_from_the_builtins_the_spec_names() -> None:
    assert issubclass(reference.ConfigError, ValueError)
    assert issubclass(reference.InvalidOptionError, ValueError)
    assert issubclass(reference.OptionTypeError, TypeError)
    assert issubclass(reference.PayloadError, TypeError)
    assert issubclass(reference.UnknownJobError, LookupError)
    assert issubclass(reference.NotConfiguredError, RuntimeError)
    for name in reference.__all__:
        obj = getattr(reference, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, reference.BackgroundError), name
