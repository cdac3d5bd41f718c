"""Real servers on loopback for tests: the backend under gunicorn, and a static image server."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]  # the repository's root folder
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
# torch's own encoder: the servers of the tests start in seconds, with no OpenVINO conversion
# (tests/regular/test_encoders.py is about the runtime).
TEST_MODEL = {
    "MODEL_CONFIG": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "MODEL_CHECKPOINT": "untrained",
    "DEVICE": "cpu",
    "ENCODER_RUNTIME": "torch",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float, what: str) -> None:
    """Wait until `url` answers 200; fail with the log's tail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before answering {url}:\n{tail(log)}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=3).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s:\n{tail(log)}")
        time.sleep(0.3)


def stop(process: subprocess.Popen) -> None:
    """Stop a process started in its own session, with its children (also when the leader is gone)."""
    if process.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # workers a dead gunicorn master left behind
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def start_logged(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    """Start `command` from the repository root in its own session, output into `log`."""
    with open(log, "wb") as handle:
        return subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


@dataclasses.dataclass(frozen=True)
class Gunicorn:
    """A running `gunicorn _wsgi:app`: its URL, master process and log."""

    url: str
    process: subprocess.Popen
    log: Path

    def workers(self) -> list[int]:
        """The pids of the master's live worker processes."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []


@contextlib.contextmanager
def gunicorn_server(
    env: dict,
    workers: int = 1,
    threads: int = 8,
    timeout: float = 240,
    log_dir: Path | None = None,
    wrapper: tuple[str, ...] = (),
    app: str = "_wsgi:app",
):
    """Start `gunicorn _wsgi:app` from the repository root, configured as everywhere else by
    gunicorn.conf.py from the environment (HOST, PORT, WORKERS, THREADS, TIMEOUT); untrained
    hiera-t on CPU unless `env` says otherwise. Yields a `Gunicorn` once /health answers.

    `env` overrides this process's environment; an empty value unsets a backend setting. The log
    goes to `log_dir/gunicorn-<port>.log`: pass a pytest tmp folder to keep it for a look after a
    failure (pytest prunes old ones); without `log_dir` it goes to a temporary folder removed on exit.
    `wrapper` is put in front of the command (e.g. `unshare -rm sh -c '...' sh`); `app` replaces
    `_wsgi:app`. The server is stopped, with its workers, however the block ends.
    """
    port = free_port()
    with contextlib.ExitStack() as cleanup:
        folder = (
            Path(log_dir)
            if log_dir
            else Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="sam2plus-gunicorn-")))
        )
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / f"gunicorn-{port}.log"
        serving = {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WORKERS": str(workers),
            "THREADS": str(threads),
            "TIMEOUT": "300",
        }
        process = start_logged(
            [*wrapper, GUNICORN, app], {**os.environ, **TEST_MODEL, "LOG_LEVEL": "INFO", **serving, **env}, log
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(f"{url}/health", process, log, timeout, "SAM2Plus (gunicorn)")
            yield Gunicorn(url, process, log)
        finally:
            stop(process)


@contextlib.contextmanager
def gunicorn_backend(env: dict, workers: int = 1, threads: int = 8, timeout: float = 240, log_dir: Path | None = None):
    """`gunicorn_server`, yielding only its URL."""
    with gunicorn_server(env, workers, threads, timeout, log_dir) as server:
        yield server.url


@contextlib.contextmanager
def serving(server):
    """Run a socketserver-style server (bound to 127.0.0.1) in a thread; yields its port, and shuts
    it down however the block ends."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextlib.contextmanager
def wsgi_server(app):
    """Serve a WSGI app (the backend's own, around a test double) on 127.0.0.1 with werkzeug's
    threaded server; yields its URL."""
    from werkzeug.serving import make_server

    with serving(make_server("127.0.0.1", 0, app, threaded=True)) as port:
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def static_server(directory: Path):
    """Serve `directory` over HTTP on 127.0.0.1; yields "127.0.0.1:port"."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)) as port:
        yield f"127.0.0.1:{port}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
