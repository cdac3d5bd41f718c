"""A capture server on loopback for the probe's tests: it records every request that reaches it
and answers what the test tells it to, which a real SAM2Plus would never answer (a folder
outside its cache, a file name with `..`). Not a backend: a witness of what was sent."""

from __future__ import annotations

import contextlib
import http.server
import json

from tests.support.servers import serving


@contextlib.contextmanager
def capture_backend(answers: dict[str, tuple[int, object]] | None = None):
    """A loopback server answering `METHOD /path` (or just `route`, for POSTs: `setup`, `predict`)
    with `answers[...]` = (status, JSON value or bytes); 404 otherwise. Yields (url, requests seen),
    each seen request a dict of method, path, headers and body."""
    answers = answers or {}
    seen: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
            key = f"{self.command} {self.path}"
            route = self.path.strip("/") if self.command == "POST" else None
            status, payload = answers.get(key, answers.get(route, (404, {"error": "no such route"})))
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header(
                "Content-Type", "application/octet-stream" if isinstance(payload, bytes) else "application/json"
            )
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as port:
        yield f"http://127.0.0.1:{port}", seen
