"""Per-project extra_params, validated on write and re-validated on read, in SQLite under MODEL_DIR.

SQLite lets several gunicorn workers share one store and keeps the settings across restarts.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from .params import ExtraParams, parse_extra_params

__all__ = ["BUSY_TIMEOUT", "SettingsStore"]

BUSY_TIMEOUT = 30.0  # seconds a write waits for another process's write lock (then: 503, try again)


class SettingsStore:
    def __init__(self, model_dir: str | Path):
        self.path = Path(model_dir) / "sam2plus-settings.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS project_params ("
                "project TEXT PRIMARY KEY, extra_params TEXT NOT NULL, updated REAL NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)

    def save(self, project: str, params: ExtraParams) -> None:
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
