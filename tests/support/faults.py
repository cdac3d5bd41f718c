"""Fault injection for tests: an image host that stops halfway until told to go on, one that
drips (a byte every few seconds), and which gunicorn worker holds which client connection."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import os
import select
import socketserver
import threading
import time
from pathlib import Path


class GatedHandler(http.server.SimpleHTTPRequestHandler):
    """`/name` serves the file; `/gated/name` sends its headers and first half, then waits for the
    server's `gate` to open (a download stuck in the middle) before sending the rest."""

    def do_GET(self):
        if not self.path.startswith("/gated/"):
            return super().do_GET()
        path = Path(self.directory) / self.path.removeprefix("/gated/")
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.server.waiting.release()
        if self.server.gate.wait(timeout=120):
            with contextlib.suppress(OSError):
                self.wfile.write(data[len(data) // 2 :])
        return None

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def gated_server(directory: Path):
    """Serve `directory` on 127.0.0.1; yields the server: `.host` ("127.0.0.1:port"), `.gate` (an
    Event that lets every gated download finish) and `.waiting` (a semaphore released once per
    gated download that has sent its first half)."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(GatedHandler, directory=str(directory))
    )
    server.daemon_threads = True
    server.gate = threading.Event()
    server.waiting = threading.Semaphore(0)
    server.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.gate.set()
        server.shutdown()
        server.server_close()


def connections_by_worker(workers: list[int], port: int) -> dict[int, int]:
    """How many established client connections to `port` each worker process holds (from
    /proc/net/tcp and the workers' open sockets)."""
    inodes = set()
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            if local_port == port and fields[3] == "01":  # ESTABLISHED
                inodes.add(fields[9])
    counts = {}
    for pid in workers:
        held = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        held += 1
        counts[pid] = held
    return counts


@dataclasses.dataclass
class Drip:
    """One connection to a `dripping_server`: what was asked, and when (time.monotonic) it opened
    and when the server saw it closed by the other end (None while open)."""

    path: str
    opened: float
    closed: float | None = None


class _DripHandler(socketserver.BaseRequestHandler):
    """The slow host of issue 21: `/drip.png` answers `Content-Length: <length>` and then one byte
    every `interval` seconds; `/drip-headers.png` drips its status line's headers; `/chunked.png`
    drips a chunk-size line that never ends; `/hop/<n>.png` answers a redirect to `/hop/<n-1>.png`
    after `hop_delay` seconds, and `/hop/0.png` drips like `/drip.png`."""

    def handle(self):
        server = self.server
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 65536:
            data = self.request.recv(4096)
            if not data:
                return
            request += data
        path = request.split(b" ", 2)[1].decode("latin-1")
        drip = Drip(path, time.monotonic())
        server.drips.append(drip)
        server.started.release()
        if path.startswith("/hop/") and path != "/hop/0.png":
            time.sleep(server.hop_delay)
            hop = int(path.removeprefix("/hop/").removesuffix(".png"))
            self._send(f"HTTP/1.1 302 Found\r\nLocation: /hop/{hop - 1}.png\r\nContent-Length: 0\r\n\r\n".encode())
            self._watch(drip, 5)
            return
        if path == "/drip-headers.png":
            head, byte = b"HTTP/1.1 200 OK\r\nX-Drip: ", b"a"
        elif path == "/chunked.png":
            head, byte = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"0"
        else:
            head, byte = f"HTTP/1.1 200 OK\r\nContent-Length: {server.length}\r\n\r\n".encode(), b"\xff"
        if self._send(head):
            while not server.stopping.is_set() and self._watch(drip, server.interval) and self._send(byte):
                pass

    def _send(self, data: bytes) -> bool:
        try:
            self.request.sendall(data)
            return True
        except OSError:
            return False

    def _watch(self, drip: Drip, seconds: float) -> bool:
        """Wait `seconds` for the other end to close; False (and `drip.closed` set) when it did."""
        readable, _, _ = select.select([self.request], [], [], seconds)
        if readable:
            try:
                gone = self.request.recv(4096) == b""
            except OSError:
                gone = True
            if gone:
                drip.closed = time.monotonic()
                return False
        return True


@contextlib.contextmanager
def dripping_server(interval: float = 2.0, length: int = 1_000_000, hop_delay: float = 0.0):
    """An image host on 127.0.0.1 that sends what it promises slowly (`_DripHandler`); yields the
    server: `.host` ("127.0.0.1:port"), `.drips` (a `Drip` per connection) and `.started` (a
    semaphore released once per request received)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _DripHandler)
    server.daemon_threads = True
    server.interval, server.length, server.hop_delay = interval, length, hop_delay
    server.drips, server.started, server.stopping = [], threading.Semaphore(0), threading.Event()
    server.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
