"""The one way a value from a request reaches the log: `logtext(value)`.

A log record is one line: a request value written raw could end it and start a forged one
(a newline), recolour a terminal (ANSI escapes), fail a log handler that encodes (a lone
surrogate) or flood the log (megabytes). `logtext` renders any value as a bounded line of
printable text: strings repr-quoted, JSON values as ASCII JSON, exceptions as their type and
message; whatever it returns has no character that `str.isprintable` refuses. `tests/regular/
test_logtext.py` checks every logging call of the backend passes request values through it.
"""

from __future__ import annotations

import json
from itertools import islice

__all__ = ["LIMIT", "logtext"]

LIMIT = 200  # characters of a value kept in the log; longer ones are cut and say their length


def logtext(value: object, limit: int = LIMIT) -> str:
    """`value` as one bounded line of printable text for a log message."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} characters)"
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {_printable(str(value)[: limit + 1], limit)}"
    if value is None or isinstance(value, (bool, int, float)):
        text = _number(value)
    elif isinstance(value, (dict, list, tuple)):
        text = "".join(islice(_encoder.iterencode(value), limit + 1))  # never the whole of a large value
    else:
        return _printable(str(value)[: limit + 1], limit)
    return text if len(text) <= limit else text[:limit] + "..."


_encoder = json.JSONEncoder(ensure_ascii=True, default=repr)


def _number(value: object) -> str:
    try:
        return repr(value)
    except ValueError:  # an int past Python's digit limit for str()
        return f"<int of {value.bit_length()} bits>"


def _printable(text: str, limit: int) -> str:
    escaped = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text[:limit])
    return escaped + ("..." if len(text) > limit else "")
