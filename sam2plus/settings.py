"""Per-project extra_params, validated on write and re-validated on read, in one of two stores.

SETTINGS_URL chooses: blank (the default) or `sqlite:///path` is a SQLite file (under MODEL_DIR
by default), which the gunicorn workers of one host share and which keeps the settings across
restarts; `postgresql://user:password@host:port/db` is a PostgreSQL database that every replica
behind a balancer shares (docs/scaling-out.md). Both mean the same: the last write of a project
wins, and what is read is validated again before a click uses it.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

from .params import ExtraParams, parse_extra_params

__all__ = [
    "BUSY_TIMEOUT",
    "POSTGRES_SCHEMES",
    "PostgresSettingsStore",
    "SettingsStore",
    "SettingsUnavailable",
    "Store",
    "open_settings",
    "redact_url",
    "settings_url_problem",
]

BUSY_TIMEOUT = 30.0  # seconds a write waits for another process's write lock (then: 503, try again)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite:///"
SQLITE_FILE = "sam2plus-settings.sqlite3"
CONNECT_TIMEOUT = 5  # seconds to reach PostgreSQL before a click falls back to its cached settings
CACHED_PROJECTS = 4096  # projects whose last read settings a process keeps for PostgreSQL outages
_SCHEMA = "CREATE TABLE IF NOT EXISTS project_params (project TEXT PRIMARY KEY, extra_params TEXT NOT NULL, updated {})"


class SettingsUnavailable(RuntimeError):
    """The settings store cannot be reached and this process holds nothing for the project: a 503 to retry."""


class Store(Protocol):
    """What the backend needs of a settings store."""

    def save(self, project: str, params: ExtraParams) -> None:
        """Store a project's params (the last write wins)."""

    def load(self, project: str) -> ExtraParams:
        """The project's params, validated again; stock params for a project never set up."""


def open_settings(url: str | None, model_dir: str | Path) -> Store:
    """The store SETTINGS_URL names (see the module's docstring); SQLite in `model_dir` when blank."""
    if url and url.startswith(POSTGRES_SCHEMES):
        return PostgresSettingsStore(url)
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
        return parse_extra_params(json.loads(row[0])) if row else ExtraParams()


class PostgresSettingsStore:
    """The PostgreSQL store (psycopg 3), shared by every replica.

    One connection per process, used under a lock (the queries are one row each), made again
    after a failure; each new connection creates the schema if it is missing. While the
    database cannot be reached, a read gives what this process last read or wrote for the
    project (never the stock params in its place) and otherwise raises SettingsUnavailable,
    as does every write.
    """

    def __init__(self, url: str):
        self.url = url
        self._connection = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, object] = OrderedDict()  # project -> last stored JSON value (or None)

    def prepare(self) -> None:
        """Connect and create the schema now (the start-up check); raises SettingsUnavailable."""
        with self._lock:
            self._run(lambda cursor: None)
            self.close()

    def close(self) -> None:
        """Close this process's connection (a later call makes a new one)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def save(self, project: str, params: ExtraParams) -> None:
        """Store a project's params (the last write wins)."""
        text = json.dumps(params.source)
        with self._lock:
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
        with self._lock:
            try:
                row = self._run(
                    lambda cursor: cursor.execute(
                        "SELECT extra_params FROM project_params WHERE project = %s", (project,)
                    ).fetchone()
                )
                text = row[0] if row else None
                self._remember(project, text)
            except SettingsUnavailable:
                if project not in self._cache:
                    raise
                text = self._cache[project]
                self._cache.move_to_end(project)
        return parse_extra_params(json.loads(text)) if text is not None else ExtraParams()

    def _remember(self, project: str, text: str | None) -> None:
        self._cache[project] = text
        self._cache.move_to_end(project)
        while len(self._cache) > CACHED_PROJECTS:
            self._cache.popitem(last=False)

    def _run(self, step):
        """`step(cursor)` on the connection (made, with the schema, when there is none). A kept
        connection that fails (PostgreSQL restarted since) is replaced once at once; a failure on a
        new one is raised as SettingsUnavailable. Every step may be repeated (a read, an upsert)."""
        import psycopg  # only a PostgreSQL store needs it

        while True:
            kept = self._connection is not None and not self._connection.closed
            try:
                if not kept:
                    self._connection = _connect(psycopg, self.url)
                with self._connection.cursor() as cursor:
                    return step(cursor)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self.close()
                if not kept:
                    raise SettingsUnavailable(unreachable(self.url, exc)) from None


def _connect(psycopg, url: str):
    """An autocommit connection with the schema in place (two replicas starting at once: the
    advisory lock makes one create the table and the other see it)."""
    connection = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    try:
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(7190511)")
            cursor.execute(_SCHEMA.format("TIMESTAMPTZ NOT NULL"))
    except BaseException:
        connection.close()
        raise
    return connection


def unreachable(url: str, exc: BaseException) -> str:
    """One line saying the database at `url` refused or did not answer, password hidden."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    password = re.search(r"://[^/?#@:]*:([^/?#@]*)@", url)
    if password and password.group(1):
        reason = reason.replace(password.group(1), "***")
    return f"the settings database SETTINGS_URL={redact_url(url)} cannot be used: {reason[:300]}"
