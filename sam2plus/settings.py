"""Per-project extra_params, validated on write and re-validated on read, in one of two stores.

SETTINGS_URL chooses: blank (the default) or `sqlite:///path` is a SQLite file (under MODEL_DIR
by default), which the gunicorn workers of one host share and which keeps the settings across
restarts; `postgresql://user:password@host:port/db` is a PostgreSQL database that every replica
behind a balancer shares (docs/scaling-out.md). Both mean the same: the last write of a project
wins, and what is read is validated again before a click uses it.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

from .errors import RequestError, describe
from .jsonbody import nesting_exceeds
from .params import ExtraParams, parse_extra_params
from .watchdog import WATCHDOG, Watch

__all__ = [
    "BUSY_TIMEOUT",
    "MAX_SETTINGS_BYTES",
    "POSTGRES_SCHEMES",
    "SETTINGS_TIMEOUT",
    "PostgresSettingsStore",
    "SettingsStore",
    "SettingsUnavailable",
    "Store",
    "open_settings",
    "parse_stored",
    "redact_url",
    "settings_url_problem",
]

BUSY_TIMEOUT = 30.0  # seconds a write waits for another process's write lock (then: 503, try again)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite:///"
SQLITE_FILE = "sam2plus-settings.sqlite3"
SETTINGS_TIMEOUT = 3.0  # seconds a PostgreSQL read or write may take before a click falls back to its cached settings
CACHED_PROJECTS = 4096  # projects whose last read settings a process keeps for PostgreSQL outages
POOL = 4  # PostgreSQL connections per process, each used by one query at a time
MAX_SETTINGS_BYTES = 1 << 20  # a project's settings as JSON text; real ones are well under 10 KB
STORED_JSON_DEPTH = 64  # nesting of stored settings (as MAX_JSON_DEPTH's default for request bodies)
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 10, 5, 3  # seconds, seconds, probes: a gone peer in 25 s
_SCHEMA = "CREATE TABLE IF NOT EXISTS project_params (project TEXT PRIMARY KEY, extra_params TEXT NOT NULL, updated {})"


class SettingsUnavailable(RuntimeError):
    """The settings store cannot be reached and this process holds nothing for the project: a 503 to retry."""


class Store(Protocol):
    """What the backend needs of a settings store."""

    def save(self, project: str, params: ExtraParams) -> None:
        """Store a project's params (the last write wins)."""

    def load(self, project: str) -> ExtraParams:
        """The project's params, validated again; stock params for a project never set up."""


def open_settings(url: str | None, model_dir: str | Path, timeout: float = SETTINGS_TIMEOUT) -> Store:
    """The store SETTINGS_URL names (see the module's docstring); SQLite in `model_dir` when blank.
    A PostgreSQL read or write takes `timeout` seconds at most (SETTINGS_TIMEOUT)."""
    if url and url.startswith(POSTGRES_SCHEMES):
        return PostgresSettingsStore(url, timeout)
    if url:
        path = Path(url.removeprefix(SQLITE_SCHEME))  # sqlite:////abs/file -> /abs/file
        return SettingsStore(path.parent, path.name)
    return SettingsStore(model_dir)


def settings_url_problem(url: str | None) -> str | None:
    """What is wrong with the form of SETTINGS_URL (one line, password as ***), or None."""
    if not url or url.startswith(POSTGRES_SCHEMES):
        return None
    if url.startswith(SQLITE_SCHEME) and len(url) > len(SQLITE_SCHEME):
        return None
    return (
        f"SETTINGS_URL={redact_url(url)!r} must be blank (SQLite in MODEL_DIR), sqlite:////absolute/file.sqlite3 "
        "or postgresql://user:password@host:port/database"
    )


def redact_url(url: str) -> str:
    """The URL for messages, its password (in the user part or a `password=` parameter) as ***."""
    url = re.sub(r"(?<=://)([^/?#@:]*):[^/?#@]*@", r"\1:***@", url)
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", url)


class SettingsStore:
    """The SQLite store: one file, shared by the processes of one host."""

    def __init__(self, model_dir: str | Path, name: str = SQLITE_FILE):
        self.path = Path(model_dir) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA.format("REAL NOT NULL"))

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)

    def save(self, project: str, params: ExtraParams) -> None:
        """Store a project's params (the last write wins)."""
        with self._connect() as db:
            db.execute(
                "INSERT INTO project_params VALUES (?, ?, ?) ON CONFLICT(project) DO UPDATE "
                "SET extra_params = excluded.extra_params, updated = excluded.updated",
                (project, json.dumps(params.source), time.time()),
            )

    def load(self, project: str) -> ExtraParams:
        """The project's params; stock params for a project never set up."""
        with self._connect() as db:
            row = db.execute("SELECT extra_params FROM project_params WHERE project = ?", (project,)).fetchone()
        return parse_stored(project, row[0]) if row else ExtraParams()


class PostgresSettingsStore:
    """The PostgreSQL store (psycopg 3), shared by every replica.

    A few connections per process (`POOL`), each taken by one query at a time and made again
    after a failure; each new connection creates the schema if it is missing. Every read or write
    is bounded by `timeout` seconds (SETTINGS_TIMEOUT): waiting for a free connection, connecting,
    PostgreSQL's statement and lock timeouts, and the watchdog cutting a connection whose server
    stopped answering (TCP keepalives find a peer that is gone). No lock is held across network
    I/O, so a stalled database never holds the clicks of projects this process read before.
    While the database cannot be reached, or does not answer in time, a read gives what this
    process last read or wrote for the project (never the stock params in its place) and
    otherwise raises SettingsUnavailable, as does every write. A stored value past
    MAX_SETTINGS_BYTES is never sent to the process.
    """

    def __init__(self, url: str, timeout: float = SETTINGS_TIMEOUT):
        self.url = url
        self.timeout = timeout
        self._idle: list = []  # connections not in use
        self._slots = threading.BoundedSemaphore(POOL)
        self._lock = threading.Lock()  # guards _idle and _cache, never held across I/O
        self._cache: OrderedDict[str, str | None] = OrderedDict()  # project -> last stored JSON text (or None)

    def prepare(self) -> None:
        """Connect and create the schema now (the start-up check); raises SettingsUnavailable."""
        self._run(lambda cursor: None)
        self.close()

    def close(self) -> None:
        """Close this process's idle connections (a later call makes new ones)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def save(self, project: str, params: ExtraParams) -> None:
        """Store a project's params (the last write wins)."""
        text = json.dumps(params.source)
        if len(text.encode()) > MAX_SETTINGS_BYTES:
            raise RequestError(
                "extra_params", f"are more than MAX_SETTINGS_BYTES={MAX_SETTINGS_BYTES} bytes as JSON", 413
            )
        self._run(
            lambda cursor: cursor.execute(
                "INSERT INTO project_params VALUES (%s, %s, now()) ON CONFLICT (project) DO UPDATE "
                "SET extra_params = excluded.extra_params, updated = excluded.updated",
                (project, text),
            )
        )
        self._remember(project, text)

    def load(self, project: str) -> ExtraParams:
        """The project's params, validated again; stock params for a project never set up."""
        try:
            row = self._run(
                lambda cursor: cursor.execute(
                    "SELECT octet_length(extra_params), CASE WHEN octet_length(extra_params) <= %s "
                    "THEN extra_params END FROM project_params WHERE project = %s",
                    (MAX_SETTINGS_BYTES, project),
                ).fetchone()
            )
        except SettingsUnavailable:
            with self._lock:
                if project not in self._cache:
                    raise
                self._cache.move_to_end(project)
                text = self._cache[project]
        else:
            if row is not None and row[1] is None:
                raise RequestError(
                    stored_field(project),
                    f"are {row[0]} bytes, more than MAX_SETTINGS_BYTES={MAX_SETTINGS_BYTES}; "
                    "POST /setup with the project's extra_params to replace them",
                    422,
                )
            text = row[1] if row else None
            self._remember(project, text)
        return parse_stored(project, text) if text is not None else ExtraParams()

    def _remember(self, project: str, text: str | None) -> None:
        with self._lock:
            self._cache[project] = text
            self._cache.move_to_end(project)
            while len(self._cache) > CACHED_PROJECTS:
                self._cache.popitem(last=False)

    def _run(self, step):
        """`step(cursor)` on a connection of this process, within `timeout`. A kept connection that
        fails (PostgreSQL restarted since) is replaced once at once; a failure on a new one, and a
        timeout on any, is raised as SettingsUnavailable. Every step may be repeated (a read, an upsert)."""
        import psycopg  # only a PostgreSQL store needs it

        end = time.monotonic() + self.timeout
        if not self._slots.acquire(timeout=self.timeout):
            raise SettingsUnavailable(self._late("every connection of this process is busy"))
        try:
            while True:
                connection = self._take()
                kept = connection is not None
                try:
                    if connection is None:
                        connection = _connect(psycopg, self.url, self.timeout, end - time.monotonic())
                    result = _within(connection, end, step)
                except (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable):
                    if connection is not None:  # PostgreSQL's own timeouts: the connection is fine
                        self._give(connection)
                    raise SettingsUnavailable(self._late("a statement or lock timed out")) from None
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    if connection is not None:
                        connection.close()
                    late = time.monotonic() >= end
                    if not kept or late:
                        raise SettingsUnavailable(
                            self._late("no answer") if late else unreachable(self.url, exc)
                        ) from None
                else:
                    self._give(connection)
                    return result
        finally:
            self._slots.release()

    def _take(self):
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if not connection.closed:
                    return connection
        return None

    def _give(self, connection) -> None:
        with self._lock:
            self._idle.append(connection)

    def _late(self, what: str) -> str:
        return (
            f"the settings database SETTINGS_URL={redact_url(self.url)} did not answer within "
            f"SETTINGS_TIMEOUT={self.timeout:g} s ({what})"
        )


def _within(connection, end: float, step):
    """`step(cursor)` on `connection`, its socket shut down by the watchdog a second after `end`
    (PostgreSQL's statement and lock timeouts, at `end`, come first while the server answers)."""
    sock = socket.socket(fileno=os.dup(connection.pgconn.socket))
    try:
        with WATCHDOG.watching(Watch(max(end - time.monotonic(), 0.0) + 1.0)) as watch:
            watch.arm(sock)
            try:
                with connection.cursor() as cursor:
                    return step(cursor)
            finally:
                watch.disarm()
    finally:
        sock.close()


def _connect(psycopg, url: str, seconds: float, left: float):
    """An autocommit connection, made within `left` seconds, with statement and lock timeouts of
    `seconds`, TCP keepalives, and the schema in place (two replicas starting at once: the advisory
    lock makes one create the table and the other see it)."""
    milliseconds = max(1, int(seconds * 1000))
    connection = psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=max(2, math.ceil(left)),  # libpq's least is 2 s
        options=f"-c statement_timeout={milliseconds} -c lock_timeout={milliseconds}",
        keepalives=1,
        keepalives_idle=KEEPALIVE_IDLE,
        keepalives_interval=KEEPALIVE_INTERVAL,
        keepalives_count=KEEPALIVE_COUNT,
        tcp_user_timeout=(KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT) * 1000,
    )
    try:
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(7190511)")
            cursor.execute(_SCHEMA.format("TIMESTAMPTZ NOT NULL"))
    except BaseException:
        connection.close()
        raise
    return connection


def stored_field(project: str) -> str:
    """How errors name a project's stored settings."""
    return f"extra_params stored for project {describe(project)}"


def parse_stored(project: str, text: str) -> ExtraParams:
    """A project's stored settings, validated again: JSON of at most STORED_JSON_DEPTH levels that
    parses as extra_params; a 422 naming the stored settings otherwise (never a 500)."""
    field = stored_field(project)
    again = "POST /setup with the project's extra_params to replace them"
    try:
        value = json.loads(text)
    except RecursionError:
        value = None
        deep = True
    except ValueError as exc:
        raise RequestError(field, f"are not JSON ({type(exc).__name__}); {again}", 422) from None
    else:
        deep = nesting_exceeds(value, STORED_JSON_DEPTH)
    if deep:
        raise RequestError(field, f"nest deeper than {STORED_JSON_DEPTH} levels; {again}", 422)
    return parse_extra_params(value)


def unreachable(url: str, exc: BaseException) -> str:
    """One line saying the database at `url` refused or did not answer, password hidden."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    password = re.search(r"://[^/?#@:]*:([^/?#@]*)@", url)
    if password and password.group(1):
        reason = reason.replace(password.group(1), "***")
    return f"the settings database SETTINGS_URL={redact_url(url)} cannot be used: {reason[:300]}"
