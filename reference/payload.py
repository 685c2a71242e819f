"""Job arguments as stored JSON: the payload limits and the arity message, in one place.

Layer 1 (domain): imports `errors` and `job` only. The producer checks every enqueue with
these, and the schedule file's `args` key is held to the very same rules at load, so an
entry can never store what a worker could not decode.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from reference.errors import PayloadError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from reference.job import Job

__all__ = ["MAX_ARGS_BYTES", "MAX_ARGS_DEPTH", "MAX_INT_BITS", "arity_error", "encode_args"]

# json.dumps with any non-default argument builds a new encoder on every call; this one
# is built once (the same output: compact separators, every other setting the default).
_COMPACT = json.JSONEncoder(separators=(",", ":"))

# Payload limits, checked at enqueue so that whatever is stored, a worker can decode: json's
# C decoder recurses once per nesting level (about 1,000 deep exhausts the interpreter's
# stack guard), and int <-> str conversion refuses more than 4,300 digits.
MAX_ARGS_DEPTH = 100  # nesting of lists and dicts, the argument list itself included
MAX_ARGS_BYTES = 1024 * 1024  # the encoded JSON (ASCII: non-ASCII text is \u-escaped)
MAX_INT_BITS = 14_000  # about 4,200 decimal digits


def encode_args(args: Sequence[object]) -> str:
    """JSON text of `args`, refusing anything that would not come back the same.

    Raises:
        PayloadError: an argument is not plain JSON (names its position).
    """
    if not args:
        return "[]"
    for i, value in enumerate(args):
        problem = _not_json(value, 2)
        if problem is not None:
            raise PayloadError(
                f"argument {i} ({type(value).__name__}) is not JSON: {problem}; job arguments "
                "must be JSON values (str, int, float, bool, None, list, dict with str keys)"
            )
    text = _COMPACT.encode(list(args))
    if len(text) > MAX_ARGS_BYTES:
        raise PayloadError(
            f"job arguments are {len(text):,} bytes as JSON; the limit is {MAX_ARGS_BYTES:,}"
            " (store large data elsewhere and pass a reference)"
        )
    return text


def _not_json(value: object, depth: int) -> str | None:
    """Why `value` would not survive a JSON round trip unchanged, or None if it would.

    A type walk rather than dumps-then-loads: it is the hot path of every enqueue, and it
    names the offending part (a tuple comes back a list, an int key comes back a str).
    `depth` is the nesting level of `value`; the walk stops at MAX_ARGS_DEPTH, so it never
    recurses deeper than a worker's decoder would have to.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return None
    if kind is int:
        if value.bit_length() > MAX_INT_BITS:  # type: ignore[attr-defined]
            return f"an int of more than {MAX_INT_BITS:,} bits"
        return None
    if kind is float:
        return None if math.isfinite(value) else f"{value!r} has no JSON form"  # type: ignore[arg-type]
    if kind is list or kind is dict:
        if depth > MAX_ARGS_DEPTH:
            return f"nested more than {MAX_ARGS_DEPTH} levels deep"
        if kind is list:
            for item in value:  # type: ignore[attr-defined]
                problem = _not_json(item, depth + 1)
                if problem is not None:
                    return problem
            return None
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                return f"dict key {_short(key)} is not a str"
            problem = _not_json(item, depth + 1)
            if problem is not None:
                return problem
        return None
    return f"a {kind.__name__} value"


def _short(value: object) -> str:
    """`repr(value)`, cut to a length an error line can carry."""
    if isinstance(value, int) and value.bit_length() > 200:
        return "<huge int>"  # repr() of it may take seconds, or refuse (4,300 digits)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def arity_error(cls: type[Job], given: int, least: int, most: float) -> str:
    """The TypeError text for `given` arguments to a perform taking `least`..`most`."""
    where = f"{cls.__qualname__}.perform()"
    if most < least:
        return f"{where} has a required keyword-only argument; jobs take positional ones only"
    if least == most:
        want = f"{least}"
    elif most == math.inf:
        want = f"at least {least}"
    else:
        want = f"{least} to {most:g}"
    return f"{where} takes {want} argument(s), {given} given; nothing was stored"
