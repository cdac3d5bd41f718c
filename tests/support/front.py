"""The shipped HAProxy front (haproxy/) started for real on loopback, and slow clients to send at it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import requests

from tests.support.servers import REPO, free_port, start_logged, stop, wait_for

HAPROXY_DIR = REPO / "haproxy"
FRONT = HAPROXY_DIR / "front.cfg"
SINGLE = HAPROXY_DIR / "single.cfg"


def haproxy_binary() -> str:
    """The haproxy executable (Debian puts it in /usr/sbin; scripts/install-system.sh installs it)."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise RuntimeError("no haproxy: run `bash scripts/install-system.sh` (docs/security.md: the front)")
    return found


@dataclasses.dataclass(frozen=True)
class Front:
    """A running HAProxy front: its URL, its log, and the address it listens on."""

    url: str
    log: Path
    host: str
    port: int

    def logged(self, text: bytes, timeout: float = 5) -> bool:
        """Whether HAProxy's log holds `text` within `timeout` seconds (a request is logged once it ends)."""
        deadline = time.monotonic() + timeout
        while text not in self.log.read_bytes():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


@contextlib.contextmanager
def haproxy_front(
    backend_addr: str,
    log_dir: Path | None = None,
    backends: Path = SINGLE,
    timeout: float = 30,
    env: dict | None = None,
):
    """Run `haproxy -f haproxy/front.cfg -f <backends>` in the foreground with FRONT_ADDR on a free
    loopback port and BACKEND_ADDR=`backend_addr` ("127.0.0.1:port"), plus `env` (the replicas'
    addresses for replicas.cfg); yields a `Front` once its /front/health says a backend server is
    up. Stopped however the block ends."""
    port = free_port()
    with contextlib.ExitStack() as cleanup:
        folder = Path(log_dir or cleanup.enter_context(tempfile.TemporaryDirectory(prefix="sam2plus-haproxy-")))
        log = folder / f"haproxy-{port}.log"
        env = {**os.environ, "FRONT_ADDR": f"127.0.0.1:{port}", "BACKEND_ADDR": backend_addr, **(env or {})}
        # -db: foreground, no daemon; -W: master-worker, so that SIGTERM stops it cleanly.
        process = start_logged([haproxy_binary(), "-W", "-db", "-f", str(FRONT), "-f", str(backends)], env, log)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(f"{url}/front/health", process, log, timeout, "HAProxy")
            yield Front(url, log, "127.0.0.1", port)
        finally:
            stop(process)


class SlowClients:
    """`count` sockets that each send a request line, then one more header line every `interval`
    seconds and never finish the request (or, with `body=True`, complete headers announcing a
    body, then one byte of it every `interval`): the slow client of docs/security.md. Runs until
    `close()`; `connected` counts the sockets that were accepted."""

    def __init__(self, host: str, port: int, count: int, interval: float = 1.0, body: bool = False):
        self.host, self.port, self.count, self.interval, self.body = host, port, count, interval, body
        self.stopping = threading.Event()
        self.connected = 0
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._drip, daemon=True)

    def __enter__(self) -> SlowClients:
        for _ in range(self.count):
            sock = socket.create_connection((self.host, self.port), timeout=5)
            opening = (
                f"POST /predict HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                "Content-Length: 1000\r\n\r\n{"
                if self.body
                else f"GET /health HTTP/1.1\r\nHost: {self.host}\r\n"
            )
            sock.sendall(opening.encode())
            self.sockets.append(sock)
            self.connected += 1
        self.thread.start()
        return self

    def _drip(self) -> None:
        line = 0
        while not self.stopping.wait(self.interval):
            line += 1
            piece = b" " if self.body else f"X-Slow-{line}: {line}\r\n".encode()
            for sock in self.sockets:
                with contextlib.suppress(OSError):  # a peer that gave up (HAProxy's 408) is left alone
                    sock.sendall(piece)

    def answers(self) -> list[bytes]:
        """What each socket has received so far (without waiting)."""
        received = []
        for sock in self.sockets:
            sock.setblocking(False)
            try:
                received.append(sock.recv(65536))
            except (BlockingIOError, OSError):
                received.append(b"")
        return received

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(10)
        for sock in self.sockets:
            sock.close()


def timed_get(url: str, timeout: float) -> tuple[float, int | None]:
    """(seconds, status) of one GET; status None when it did not answer within `timeout`."""
    started = time.monotonic()
    try:
        status = requests.get(url, timeout=timeout).status_code
    except requests.RequestException:
        status = None
    return time.monotonic() - started, status


def large_body_head(length: int, host: str = "front") -> bytes:
    """The head of a POST /predict whose body of `length` bytes is larger than the front's buffer."""
    head = f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {length}\r\nConnection: close\r\n"
    return (head + "\r\n").encode()


def read_answer(sock: socket.socket, timeout: float) -> bytes:
    """Everything the peer sends until it closes or `timeout` passes (b"" when nothing came)."""
    sock.settimeout(timeout)
    received = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def status_line(answer: bytes) -> str:
    """The first line of an HTTP answer, as text."""
    return answer.split(b"\r\n", 1)[0].decode("latin-1")


def send_whole_body(
    host: str, port: int, length: int, source: str = "127.0.0.1", timeout: float = 60
) -> tuple[str, str]:
    """POST a body of `length` bytes (not JSON) from `source`, all of it, then read the answer; returns
    (what went wrong while sending, or "", the answer's status line, or "" when none came)."""
    with socket.create_connection((host, port), timeout=timeout, source_address=(source, 0)) as sock:
        problem = ""
        try:
            sock.sendall(large_body_head(length))
            for start in range(0, length, 1 << 20):
                sock.sendall(b"x" * min(1 << 20, length - start))
        except OSError as exc:
            problem = f"{type(exc).__name__} while sending"
        return problem, status_line(read_answer(sock, timeout))


class DribbledBodies:
    """Large bodies that each send `first` bytes of the `length` they announce, then one byte every
    `interval` seconds, from the given source addresses (127.0.0.x: each its own client to HAProxy):
    the clients of issue 25 that held the front's large-body slots. Runs until `close()`."""

    def __init__(self, host: str, port: int, sources: list[str], length: int, first: int, interval: float = 2.0):
        self.sockets = []
        for source in sources:
            sock = socket.create_connection((host, port), timeout=5, source_address=(source, 0))
            sock.sendall(large_body_head(length) + b"[" + b" " * (first - 1))
            self.sockets.append(sock)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._drip, args=(interval,), daemon=True)
        self.thread.start()

    def _drip(self, interval: float) -> None:
        while not self.stopping.wait(interval):
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.sendall(b" ")

    def __enter__(self) -> DribbledBodies:
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(10)
        for sock in self.sockets:
            sock.close()
