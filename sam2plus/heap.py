"""When the memory SAM2's image encoder freed goes back to the system.

An encoder run frees a few hundred MB of working memory, which glibc keeps in the heap of the
thread that ran it. Handing it back at once (`malloc_trim`) also unmaps the free pages that
the clicks' decoder calls reuse, in every thread's heap: the next click takes them again (about
20,000 page faults, 20-30 ms on hiera-t, measured) right after every background encode, which
is when the first click on a prefetched task comes. So the freed memory is handed back once the
worker has been idle for `IDLE_TRIM_S` (no click and no encode), and before an encode whose
thread is not the last encode's (whose free memory would otherwise stack on the new run's);
encodes on one thread (the warm-up thread's prefetches) reuse their own freed memory. A
worker's peak stays one encoder run above its idle size, as with a trim after every run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from collections.abc import Callable

__all__ = ["IDLE_TRIM_S", "release_free_memory", "HeapTrim"]

IDLE_TRIM_S = 10.0


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Hand the heap memory freed (by the encoder's activations, by a converted encoder's torch
    weights) back to the system now; glibc keeps it otherwise."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class HeapTrim:
    """Decides when freed encoder memory is handed back: `encoding()` around each encoder run,
    `touch` after each decoder call. A daemon thread of the process (started with its first
    encode, in the process that encodes: gunicorn forks workers) trims once `idle_s` have passed
    since the last of them and no encode runs."""

    def __init__(self, idle_s: float = IDLE_TRIM_S, trim: Callable[[], None] = release_free_memory):
        self.idle_s = idle_s
        self.trims = 0  # how many times this process handed its free memory back
        self._trim = trim
        self._changed = threading.Condition()
        self._last_active = time.monotonic()
        self._pending = False  # an encode freed memory that is not handed back yet
        self._encoding = 0  # encoder runs under way
        self._encoder_thread: int | None = None
        self._pid: int | None = None  # the process whose thread waits to trim

    @contextlib.contextmanager
    def encoding(self):
        """Around an encoder run: first hand free memory back if the last run was on another thread
        (its heap holds that run's freed memory, which this thread would not reuse); no idle trim
        while it runs; after it, its freed memory goes back once the worker is idle."""
        with self._changed:
            if self._pending and self._encoder_thread != threading.get_ident():
                self._trim_now()
            self._encoding += 1
        try:
            yield
        finally:
            with self._changed:
                self._encoding -= 1
                self._encoder_thread = threading.get_ident()
                self._pending = True
                self._touch_locked()
                if self._pid != os.getpid():
                    self._pid = os.getpid()
                    threading.Thread(target=self._wait_for_idle, name="sam2plus-heap-trim", daemon=True).start()

    def touch(self) -> None:
        """A click ran: the worker is in use, so an idle trim waits `idle_s` from now."""
        with self._changed:
            self._touch_locked()

    def _touch_locked(self) -> None:
        self._last_active = time.monotonic()
        self._changed.notify_all()

    def _trim_now(self) -> None:
        """Trim (the condition's lock held on entry and on return, released while trimming, so
        that a click's `touch` does not wait for it)."""
        self._pending = False
        self.trims += 1
        self._changed.release()
        try:
            self._trim()
        finally:
            self._changed.acquire()

    def _wait_for_idle(self) -> None:
        pid = os.getpid()
        with self._changed:
            while self._pid == pid:
                if not self._pending or self._encoding:
                    self._changed.wait()
                    continue
                left = self._last_active + self.idle_s - time.monotonic()
                if left > 0:
                    self._changed.wait(left)
                    continue
                self._trim_now()
