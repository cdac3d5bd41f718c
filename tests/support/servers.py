"""Real servers on loopback for tests: the backend under gunicorn, and a static image server."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
TEST_MODEL = {"MODEL_CONFIG": "configs/sam2.1/sam2.1_hiera_t.yaml", "MODEL_CHECKPOINT": "untrained", "DEVICE": "cpu"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def gunicorn_backend(env: dict, workers: int = 1, threads: int = 8, timeout: float = 180):
    """Start `gunicorn _wsgi:app` from the repository root; yields its base URL."""
    port = free_port()
    full_env = {**os.environ, **TEST_MODEL, "LOG_LEVEL": "INFO", **env}
    log_path = Path(tempfile.mkdtemp(prefix="sam2plus-gunicorn-")) / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [GUNICORN, "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads),
             "--timeout", "300", "_wsgi:app"],
            cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.time() > deadline:
                raise RuntimeError(f"gunicorn did not answer /health in {timeout} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def static_server(directory: Path):
    """Serve `directory` over HTTP on 127.0.0.1; yields "127.0.0.1:port"."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
