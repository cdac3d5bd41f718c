"""Fault injection for tests: an image host that stops halfway until told to go on, and which
gunicorn worker holds which client connection."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import threading
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
