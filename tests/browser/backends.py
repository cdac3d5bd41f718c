"""The servers behind the browser tests: SAM2Plus served in-process with a recorder, and an image host.

`geometry_backend` serves the product's own app (`create_app(SAM2Plus(...))`) with the
documented geometry TEST DOUBLE `ColorRegionSegmenter` in place of SAM2, on werkzeug's
threaded WSGI server on loopback, so that a click on a drawn disc has a known right answer.
`RecordingMiddleware` is test-only: it keeps every request the backend received, so the
tests can check what Label Studio's editor really sent.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from werkzeug.serving import make_server

from model import SAM2Plus
from sam2plus.config import ServerConfig
from sam2plus.server import create_app
from tests.support.geometry_segmenter import ColorRegionSegmenter
from tests.support.servers import serving


@dataclass(frozen=True)
class Received:
    """One request as the backend received it (`body` is the parsed JSON, or None)."""

    seq: int
    method: str
    path: str
    body: dict | None

    @property
    def task_id(self):
        """The id of the first task in the body (Label Studio sends one task per call), if any."""
        tasks = (self.body or {}).get("tasks")
        return tasks[0].get("id") if isinstance(tasks, list) and tasks and isinstance(tasks[0], dict) else None

    @property
    def context(self):
        """The interactive context of a /predict (where Label Studio puts it: params.context)."""
        body = self.body or {}
        params = body.get("params") if isinstance(body.get("params"), dict) else {}
        return body.get("context", params.get("context"))


class RecordingMiddleware:
    """TEST-ONLY WSGI middleware: records method, path and JSON body of every request, in arrival order."""

    def __init__(self, app):
        self.app = app
        self._received: list[Received] = []
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self._received.append(Received(len(self._received), environ["REQUEST_METHOD"], environ["PATH_INFO"], body))
        return self.app(environ, start_response)

    def received(self) -> list[Received]:
        """Everything received so far, oldest first."""
        with self._lock:
            return list(self._received)

    def predictions(self, task_id: int) -> list[Received]:
        """The /predict calls for one task, oldest first."""
        return [r for r in self.received() if r.method == "POST" and r.path == "/predict" and r.task_id == task_id]

    def setups(self, project_id: int) -> list[Received]:
        """The /setup calls for one Label Studio project (sent as "<id>.<created_at>")."""
        return [
            r
            for r in self.received()
            if r.path == "/setup" and r.body and str(r.body.get("project", "")).split(".")[0] == str(project_id)
        ]


@dataclass
class GeometryBackend:
    """The in-process backend's URL and what it received."""

    url: str
    recorder: RecordingMiddleware


@contextlib.contextmanager
def geometry_backend(workdir: Path, label_studio_url: str, api_key: str):
    """SAM2Plus with the geometry test double, fetching images from Label Studio; IMAGE_HOSTS empty."""
    config = ServerConfig.from_env(
        {
            "CACHE_DIR": str(workdir / "cache"),
            "MODEL_DIR": str(workdir / "models"),
            "LABEL_STUDIO_URL": label_studio_url,
            "LABEL_STUDIO_API_KEY": api_key,
        }
    )
    recorder = RecordingMiddleware(create_app(SAM2Plus(config, segmenter=ColorRegionSegmenter())))
    with serving(make_server("127.0.0.1", 0, recorder, threaded=True)) as port:
        yield GeometryBackend(f"http://127.0.0.1:{port}", recorder)


@contextlib.contextmanager
def image_host(directory: Path):
    """Serve `directory` on 127.0.0.1 as an image host a browser may read from another origin (CORS);
    yields its port."""
    handler = functools.partial(_CorsHandler, directory=str(directory))
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)) as port:
        yield port


class _CorsHandler(http.server.SimpleHTTPRequestHandler):
    def end_headers(self):
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def log_message(self, *args):
        pass
