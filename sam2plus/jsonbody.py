"""A request body, read within a deadline -> its JSON object, bounded before it is parsed and checked once after.

Reading (`read_body`): the whole body must arrive within BODY_GRACE_SECONDS plus its size at
BODY_MIN_RATE, else a 408 naming `body`, so that a client dribbling a large body (one the front
passes on as it arrives) cannot hold a thread, or one of the front's large-body slots, for long.
A body the answer did not need (refused for its size, or unauthenticated) is read and discarded
after the answer within DISCARD_SECONDS (`discard_body`): closing on unread bytes makes the kernel
reset the connection, and the client, or the front relaying it, then loses the answer.

Before parsing: the body must be UTF-8, and its arrays, objects and commas are counted in its
bytes (`count_items`, three `bytes.count` passes): each costs the parsed body up to about 100
bytes (an empty object is 64 bytes and a list slot, a short string 50 and a slot), so
MAX_JSON_ITEMS bounds what the body becomes in memory whatever its shape, while a base64
image, which has none of these characters, costs its own size. After parsing, in one place
for every route and field: the nesting (MAX_JSON_DEPTH) and text that cannot be encoded (a
lone surrogate such as ``"\\ud800"``, named by its JSON path), so no field handler meets either.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time

from .errors import RequestError, describe

__all__ = [
    "BODY_GRACE_SECONDS",
    "BODY_MIN_RATE",
    "DISCARD_SECONDS",
    "body_seconds",
    "count_items",
    "discard_body",
    "first_bad_text",
    "nesting_exceeds",
    "parse_json_body",
    "read_body",
    "refuse_bad_text",
]

BODY_GRACE_SECONDS = 10.0  # what any body may take, however small (the front's `timeout http-request`)
BODY_MIN_RATE = 128 << 10  # bytes per second a body must average beyond that: 1 Mbit/s
DISCARD_SECONDS = 5.0  # reading an unneeded body after the answer: 128 MiB at 27 MB/s
_CHUNK = 1 << 20

# Only a \u escape can make a surrogate once the body is strict UTF-8: found, the parsed body is walked.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def body_seconds(expected: int) -> float:
    """Seconds a body of `expected` bytes may take to arrive: BODY_GRACE_SECONDS plus its size at BODY_MIN_RATE."""
    return BODY_GRACE_SECONDS + expected / BODY_MIN_RATE


def read_body(stream, sock: socket.socket | None, seconds: float) -> bytes:
    """The whole body from `stream` (werkzeug's, bounded by Content-Length or MAX_REQUEST_BYTES),
    arrived within `seconds`; else a 408 naming `body`. At the deadline a watchdog shuts the reading
    side of `sock` (gunicorn's), which wakes the read however the server loops over the socket;
    without a socket only the time between reads is checked."""
    cut = threading.Event()
    watchdog = threading.Timer(seconds, _stop_reading, (sock, cut)) if sock is not None else None
    if watchdog is not None:
        watchdog.daemon = True
        watchdog.start()
    started = time.monotonic()
    parts, received = [], 0
    try:
        while True:
            try:
                chunk = stream.read(_CHUNK)
            except Exception:  # werkzeug turns the cut socket's end of data into ClientDisconnected
                if cut.is_set():
                    raise _late(received, seconds) from None
                raise
            if cut.is_set() or time.monotonic() - started > seconds:
                raise _late(received, seconds)
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)
            received += len(chunk)
    finally:
        if watchdog is not None:
            watchdog.cancel()


def _stop_reading(sock: socket.socket, cut: threading.Event) -> None:
    cut.set()
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:  # closed meanwhile
        pass


def _late(received: int, seconds: float) -> RequestError:
    return RequestError(
        "body",
        f"did not arrive within {seconds:.0f} s ({received} bytes read): a body gets "
        f"{BODY_GRACE_SECONDS:g} s plus 1 s per {BODY_MIN_RATE >> 10} KiB of its size",
        408,
    )


def discard_body(stream, sock: socket.socket | None, seconds: float = DISCARD_SECONDS) -> int:
    """Read and drop what is left of a request body (`stream`: the server's own input, which ends
    with the body) for up to `seconds`; the bytes dropped. Needs `sock` to bound the reads; without
    it nothing is read."""
    if sock is None:
        return 0
    deadline = time.monotonic() + seconds
    kept = sock.gettimeout()
    dropped = 0
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            chunk = stream.read(_CHUNK)
            if not chunk:
                break
            dropped += len(chunk)
    except (OSError, ValueError):  # timed out, reset, or the body was malformed: the server closes
        pass
    finally:
        _restore_timeout(sock, kept)
    return dropped


def _restore_timeout(sock: socket.socket, timeout: float | None) -> None:
    try:
        sock.settimeout(timeout)
    except OSError:  # closed meanwhile
        pass


def count_items(data: bytes) -> int:
    """Arrays, objects and commas in `data` (also those inside strings: an upper bound of the
    parsed values and containers, counted without parsing)."""
    return data.count(b"{") + data.count(b"[") + data.count(b",")


def parse_json_body(data: bytes, max_items: int, max_depth: int) -> dict:
    """The JSON object of a request body, within MAX_JSON_ITEMS and MAX_JSON_DEPTH, its text all
    encodable; anything else is a RequestError naming `body` (or the JSON path of bad text)."""
    items = count_items(data)
    if items > max_items:
        raise RequestError(
            "body",
            f"{items} arrays, objects and commas exceed MAX_JSON_ITEMS={max_items}, the most one "
            "request body may hold (each costs up to ~100 bytes of memory once parsed)",
            413,
        )
    try:
        text = data.decode("utf-8-sig")  # strict: encoded surrogates and other encodings are refused here
        body = json.loads(text)
    except RecursionError:  # Python's parser stops at its recursion limit, long before the body's end
        body = None
        too_deep = True
    except ValueError as exc:
        raise RequestError("body", f"must be a JSON object; this is not valid JSON ({_json_problem(exc)})") from None
    else:
        too_deep = nesting_exceeds(body, max_depth)
    if too_deep:
        raise RequestError("body", f"nested deeper than MAX_JSON_DEPTH={max_depth} levels of arrays and objects")
    if not isinstance(body, dict):
        raise RequestError("body", f"must be a JSON object, got {describe(body)}")
    if _SURROGATE_ESCAPE.search(text):
        refuse_bad_text(body)
    return body


def refuse_bad_text(value, root: str = "") -> None:
    """Raise a 400 naming the JSON path (under `root`) of the first text in `value` that cannot be encoded."""
    found = first_bad_text(value)
    if found is not None:
        where, text = found
        index = _SURROGATE.search(text).start()
        raise RequestError(
            _join(root, where),
            f"text that is not valid Unicode (a lone surrogate {ascii(text[index])} at character {index}); "
            "every string must be encodable as UTF-8",
        )


def _join(root: str, where: str) -> str:
    if not root:
        return where or "body"
    return root + where if where.startswith("[") or not where else f"{root}.{where}"


def first_bad_text(value) -> tuple[str, str] | None:
    """(JSON path, the string) of the first key or string in `value` holding a lone surrogate
    (``tasks[0].data.image``; "" for `value` itself), or None; in document order, without recursion."""
    stack = [(value, None, None)]  # (item, parent entry, key or index in the parent)
    while stack:
        entry = stack.pop()
        item = entry[0]
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return _path(entry), item
        elif isinstance(item, dict):
            for key in item:
                if _SURROGATE.search(key):
                    return _path((key, entry, key)), key
            stack.extend((child, entry, key) for key, child in reversed(item.items()))  # popped in order
        elif isinstance(item, list):
            stack.extend((item[index], entry, index) for index in range(len(item) - 1, -1, -1))
    return None


def _path(entry) -> str:
    parts = []
    while entry is not None and entry[1] is not None:
        key = entry[2]
        # a key is written escaped: the path goes into messages, and the bad text may be the key
        parts.append(f"[{key}]" if isinstance(key, int) else "." + (key if key.isprintable() else ascii(key)[1:-1]))
        entry = entry[1]
    return "".join(reversed(parts)).removeprefix(".")


def nesting_exceeds(value, limit: int) -> bool:
    """Whether `value` (parsed JSON) nests arrays and objects more than `limit` levels deep; stops
    at the first container past the limit, without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return False


def _json_problem(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at character {exc.pos}"
    return "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else type(exc).__name__
