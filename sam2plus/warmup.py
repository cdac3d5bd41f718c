"""Warm-up when a task opens: the image is fetched and decoded before the annotator's first click.

Label Studio's server calls `/predict` without a context whenever an annotator opens a task
(the project shows predictions and its prediction source is this backend). SAM2Plus answers
that call at once with no results and queues one warm-up per task image: fetch, decode into
the frame store and, for projects without subpatching, the full-frame embedding
(`Pipeline.warm`). One background thread per process works the queue.

Clicks always go first: every click holds `Warmup.click()` while it runs, and the warm-up
thread waits before each of its stages until no click is in flight (a stage already started
runs to its end). The queue is bounded: a warm-up beyond `max_queued` is dropped and logged,
one already queued for the same image and project is not queued twice, and a failure is
logged, never raised. `queued`, `dropped`, `done` and `failed` count them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from . import metrics
from .logtext import logtext
from .params import ExtraParams

__all__ = ["MAX_QUEUED", "Warmup"]

log = logging.getLogger(__name__)

MAX_QUEUED = 16


@dataclass(frozen=True)
class _Job:
    task: dict
    label_config: str
    params: ExtraParams
    name: str  # what the log calls it: made of request values, escaped (`_name`)


class Warmup:
    """The warm-up queue of one process and its background thread."""

    def __init__(self, pipeline, max_queued: int = MAX_QUEUED):
        self.pipeline = pipeline
        self.max_queued = max_queued
        self.queued = self.dropped = self.done = self.failed = 0
        self._jobs: deque[_Job] = deque()
        self._names: set[str] = set()  # queued or running
        self._clicks = 0
        self._state = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def click(self):
        """Held by every click while it runs: warm-ups wait for it."""
        with self._state:
            self._clicks += 1
        try:
            yield
        finally:
            with self._state:
                self._clicks -= 1
                self._state.notify_all()

    def submit(self, tasks: list, label_config, params: ExtraParams, project=None) -> int:
        """Queue a warm-up for each task; returns how many were queued."""
        added = 0
        with self._state:
            for task in tasks:
                name = _name(task, project)
                if name in self._names:
                    continue
                if len(self._jobs) >= self.max_queued:
                    self.dropped += 1
                    metrics.count_warmup("dropped")
                    log.warning("warm-up dropped (%d already queued): %s", len(self._jobs), name)
                    continue
                self._jobs.append(_Job(task, label_config, params, name))
                self._names.add(name)
                self.queued += 1
                metrics.count_warmup("queued")
                added += 1
            if added:
                self._start()
                self._state.notify_all()
        return added

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every queued warm-up has ended; False when `timeout` seconds passed first."""
        with self._state:
            return self._state.wait_for(lambda: not self._names, timeout)

    def _start(self) -> None:
        # Started on first use, so that a process forked after the app was built gets its own thread.
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="sam2plus-warmup", daemon=True)
            self._thread.start()

    def _pause(self) -> None:
        with self._state:
            self._state.wait_for(lambda: self._clicks == 0)

    def wait_for_clicks(self) -> None:
        """Return once no click is in flight: background work (pre-annotation too) lets clicks go first."""
        self._pause()

    def _work(self) -> None:
        while True:
            with self._state:
                self._state.wait_for(lambda: self._jobs)
                job = self._jobs.popleft()
            started = time.perf_counter()
            try:
                what = self.pipeline.warm(job.task, job.label_config, job.params, pause=self._pause)
            except Exception as exc:  # a warm-up never fails a request: the click will say what is wrong
                with self._state:
                    self.failed += 1
                    metrics.count_warmup("failed")
                log.warning("warm-up failed for %s: %s", job.name, logtext(exc))
            else:
                with self._state:
                    self.done += 1
                    metrics.count_warmup("done")
                log.info("warm-up of %s: %s in %.0f ms", job.name, what, (time.perf_counter() - started) * 1000)
            finally:
                with self._state:
                    self._names.discard(job.name)
                    self._state.notify_all()


def _name(task, project) -> str:
    """The task as the log names it, one escaped line (`logtext`); also what makes two warm-ups the same."""
    data = task.get("data") if isinstance(task, dict) else task
    ident = task.get("id") if isinstance(task, dict) else None
    return f"task {logtext(ident, 40)} of project {logtext(project, 40)} ({logtext(data, 120)})"
