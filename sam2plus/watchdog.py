"""One deadline per download, and the thread that enforces it.

urllib3's timeouts bound each socket operation, not a download: a host that sends a byte just
before every read timeout keeps a download (and the click or warm-up waiting for it) going for
as long as it likes. A `Watch` holds one download's end on the monotonic clock and, for a click,
`should_stop` (its client went away). The process's `Watchdog` thread looks at every watch a few
times a second; when a watch's deadline passes or its `should_stop()` is true, it shuts down the
socket the download reads from, so the read blocked on it returns at once, wherever it is: the
status line, a header, a chunk-size line or the body.

`should_stop` runs on the watchdog's thread inside a copy of the context the watch was made in
(`contextvars`), so a callable that reads the current Flask request (the server's `client_gone`)
works there as in the request's own thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

__all__ = ["DEADLINE", "STOPPED", "TICK", "WATCHDOG", "Watch", "Watchdog"]

log = logging.getLogger(__name__)

TICK = 0.25  # seconds between two looks at the watches: how late a deadline or a gone client is noticed
DEADLINE = "deadline"
STOPPED = "stopped"


class Watch:
    """One download: its deadline (`seconds` from now), what stops it early, and the socket it reads
    now. `reason` is None until the watch fires (DEADLINE or STOPPED); it never changes after."""

    def __init__(self, seconds: float, should_stop: Callable[[], bool] | None = None):
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.should_stop = should_stop
        self.reason: str | None = None
        self._context = contextvars.copy_context()
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def remaining(self) -> float:
        """Seconds left before the deadline (0 once it passed)."""
        return max(0.0, self.end - time.monotonic())

    def arm(self, sock: socket.socket) -> None:
        """`sock` is what the download reads now; shut down at once if the watch already fired."""
        with self._lock:
            self._sock = sock
            if self.reason is not None:
                _shut_down(sock)

    def disarm(self) -> bool:
        """Forget the socket, before its connection goes back to a pool (where another download may
        take it); True when the watch fired (the socket is shut down: close it, do not reuse it)."""
        with self._lock:
            self._sock = None
            return self.reason is not None

    def fire(self, reason: str) -> None:
        """Stop the download: shut its socket down; the first reason stays."""
        with self._lock:
            if self.reason is None:
                self.reason = reason
            if self._sock is not None:
                _shut_down(self._sock)

    def due(self, now: float) -> str | None:
        """Why the download must stop now (DEADLINE, STOPPED), or None; on the watchdog's thread."""
        if now >= self.end:
            return DEADLINE
        if self.should_stop is not None:
            try:
                if self._context.run(self.should_stop):
                    return STOPPED
            except Exception:  # a broken should_stop must not stop the watchdog, nor the download
                log.exception("should_stop failed; the download goes on until its deadline")
                self.should_stop = None
        return None


class Watchdog:
    """The thread of one process that fires due watches (started on first use, so that a process
    forked after the app was built gets its own)."""

    def __init__(self, tick: float = TICK):
        self.tick = tick
        self._forked()
        # A gunicorn master that used it (the settings check at start) forks workers: each gets a
        # fresh state, never a lock its parent's thread held at the fork.
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self._watches: set[Watch] = set()
        self._state = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watching(self, watch: Watch) -> Iterator[Watch]:
        """Watch `watch` for the block's duration."""
        with self._state:
            self._watches.add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sam2plus-watchdog", daemon=True)
                self._thread.start()
            self._state.notify_all()
        try:
            yield watch
        finally:
            with self._state:
                self._watches.discard(watch)

    def _run(self) -> None:
        while True:
            with self._state:
                self._state.wait_for(lambda: self._watches)
                watches = [watch for watch in self._watches if watch.reason is None]
            now = time.monotonic()
            for watch in watches:
                reason = watch.due(now)
                if reason is not None:
                    watch.fire(reason)
            with self._state:
                self._state.wait(self.tick)


def _shut_down(sock: socket.socket) -> None:
    # shutdown, not close: the reading thread still owns the socket and closes it; a socket
    # object already closed has no descriptor any more (fileno -1), so no other socket is hit.
    # socket.socket's own shutdown also for TLS: SSLSocket.shutdown drops the TLS state under the
    # reading thread's feet.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


WATCHDOG = Watchdog()
