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

Prefetch: with Label Studio's API at hand (`projects`, a `LabelStudioProjects`), a warm-up call
for one task also queues a look-up of the next `prefetch` tasks (extra_params) in the labelling
stream's sequential order (by id, not yet labelled; sam2plus/projects.py), run by the same
thread, and then their warm-ups, behind every click and after the opened task's own warm-up.
Nothing in Label Studio is assigned, locked or changed. `prefetches` counts them (`queued`,
`dropped`, `done`, `failed`) apart from the warm-ups.
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
from .projects import project_number

__all__ = ["MAX_QUEUED", "Warmup"]

log = logging.getLogger(__name__)

MAX_QUEUED = 16


@dataclass(frozen=True)
class _Job:
    task: dict
    label_config: str
    params: ExtraParams
    name: str  # what the log calls it: made of request values, escaped (`_name`)
    kind: str = "warm-up"  # "warm-up", "prefetch" (a next task's warm-up) or "look-up" (of the next tasks)
    project: object = None


class Warmup:
    """The warm-up queue of one process and its background thread."""

    def __init__(self, pipeline, max_queued: int = MAX_QUEUED, projects=None):
        self.pipeline = pipeline
        self.max_queued = max_queued
        self.projects = projects  # LabelStudioProjects, for the next tasks; None: no prefetch
        self.queued = self.dropped = self.done = self.failed = 0
        self.prefetches = dict.fromkeys(("queued", "dropped", "done", "failed"), 0)
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

    def submit(self, tasks: list, label_config, params: ExtraParams, project=None, kind: str = "warm-up") -> int:
        """Queue a warm-up (or, `kind="prefetch"`, a next task's prefetch) for each task, and for
        one opened task the look-up of the next ones; returns how many were queued."""
        added = 0
        with self._state:
            for task in tasks:
                name = _name(task, project)
                if name in self._names:
                    continue
                if len(self._jobs) >= self.max_queued:
                    self._count(kind, "dropped")
                    log.warning("%s dropped (%d already queued): %s", kind, len(self._jobs), name)
                    continue
                self._jobs.append(_Job(task, label_config, params, name, kind, project))
                self._names.add(name)
                self._count(kind, "queued")
                added += 1
            if kind == "warm-up" and len(tasks) == 1:
                added += self._look_ahead(tasks[0], label_config, params, project)
            if added:
                self._start()
                self._state.notify_all()
        return added

    def _look_ahead(self, task, label_config, params: ExtraParams, project) -> int:
        """Queue the look-up of the tasks after `task` (the state lock held); 1 when queued."""
        number, task_id = project_number(project), task.get("id") if isinstance(task, dict) else None
        if self.projects is None or params.prefetch == 0 or number is None or not isinstance(task_id, int):
            return 0
        name = f"the {params.prefetch} tasks after task {task_id} of project {number}"
        if name in self._names or len(self._jobs) >= self.max_queued:
            return 0
        self._jobs.append(_Job(task, label_config, params, name, "look-up", project))
        self._names.add(name)
        return 1

    def _count(self, kind: str, event: str) -> None:
        """Count a warm-up's or a prefetch's event (the state lock held)."""
        if kind == "prefetch":
            self.prefetches[event] += 1
            metrics.count_prefetch(event)
        else:
            setattr(self, event, getattr(self, event) + 1)
            metrics.count_warmup(event)

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
                if job.kind == "look-up":
                    self._pause()
                    after = self.projects.next_tasks(project_number(job.project), job.task["id"], job.params.prefetch)
                    what = f"{self.submit(after, job.label_config, job.params, job.project, 'prefetch')} queued"
                else:
                    what = self.pipeline.warm(job.task, job.label_config, job.params, pause=self._pause)
            except Exception as exc:  # a warm-up never fails a request: the click will say what is wrong
                with self._state:
                    if job.kind != "look-up":
                        self._count(job.kind, "failed")
                log.warning("%s failed for %s: %s", job.kind, job.name, logtext(exc))
            else:
                with self._state:
                    if job.kind != "look-up":
                        self._count(job.kind, "done")
                log.info("%s of %s: %s in %.0f ms", job.kind, job.name, what, (time.perf_counter() - started) * 1000)
            finally:
                with self._state:
                    self._names.discard(job.name)
                    self._state.notify_all()


def _name(task, project) -> str:
    """The task as the log names it, one escaped line (`logtext`); also what makes two warm-ups the same."""
    data = task.get("data") if isinstance(task, dict) else task
    ident = task.get("id") if isinstance(task, dict) else None
    return f"task {logtext(ident, 40)} of project {logtext(project, 40)} ({logtext(data, 120)})"
