"""Prometheus metrics of the backend (`GET /metrics`), counted across all gunicorn workers.

Every worker process records into prometheus-client's metrics here; under gunicorn they live in
prometheus-client's multiprocess mode (gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any
worker starts, empties it at start and marks each dead worker), so one scrape of any worker
reports the sums over all of them, dead workers' counts included. Without that directory (the
Flask test client, `python _wsgi.py`) the same metrics count for this process alone.

The stages call the small API below (`observe_stage`, `count_cache`, `count_encoder_run`,
`count_warmup`); a metric that cannot be recorded is logged once and never fails a request.
docs/operations.md (Metrics) lists the names.
"""

from __future__ import annotations

import functools
import http
import logging
import os
import resource
import shutil
import sys
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)

__all__ = [
    "CACHES",
    "METHODS",
    "STAGES",
    "WARMUP_EVENTS",
    "count_cache",
    "count_encoder_run",
    "count_evictions",
    "count_prefetch",
    "count_warmup",
    "exposition",
    "mark_process_dead",
    "method_label",
    "multiprocess_dir",
    "observe_request",
    "observe_stage",
    "observe_store_read",
    "prepare_multiprocess_dir",
    "request_finished",
    "request_started",
    "set_model_info",
    "set_store_bytes",
    "status_label",
    "update_memory",
]

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STAGES = ("fetch", "decode", "encoder", "decoder", "regions", "artifacts")
CACHES = ("embedding", "embedding_store", "frame")
FOLDERS = ("downloads", "frames", "embeddings")  # the bounded folders under CACHE_DIR (sam2plus/boundedfolder.py)
WARMUP_EVENTS = ("queued", "dropped", "done", "failed")
PREFETCH_EVENTS = ("queued", "dropped", "done", "failed")
# Every label a request decides is taken from a closed set, so that no client can add series
# (each one lives in every worker's file until the master restarts).
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE")  # RFC 9110 and 5789
STATUSES = frozenset({status.value for status in http.HTTPStatus} | {499})  # 499: the client left
OTHER = "other"
# A decoder-only click takes ~0.1 s, an encoder run 1 to 10 s on CPU, Label Studio gives up after 100 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, float("inf"))

disable_created_metrics()  # no *_created series: they are not summed across processes
REGISTRY = CollectorRegistry()

REQUESTS = Counter(
    "sam2plus_requests",
    "HTTP requests answered, by route, method and status",
    ["route", "method", "status"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "sam2plus_request_seconds",
    "Time from a request's arrival to its answer, by route",
    ["route"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
IN_PROGRESS = Gauge(
    "sam2plus_requests_in_progress",
    "Requests being answered now, over the live workers",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
STAGE_SECONDS = Histogram(
    "sam2plus_stage_seconds",
    "Time of each stage of a click: fetch, decode, encoder, decoder, regions, artifacts",
    ["stage"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
CACHE_LOOKUPS = Counter(
    "sam2plus_cache_lookups",
    "Lookups in the embedding cache (per worker, in memory), the embedding store and the frame store "
    "(on disk, shared), by result",
    ["cache", "result"],
    registry=REGISTRY,
)
ENCODER_RUNS = Counter(
    "sam2plus_encoder_runs", "SAM2 image encoder runs (embedding cache misses that ran it)", registry=REGISTRY
)
WARMUPS = Counter(
    "sam2plus_warmups",
    "Warm-ups of a task's image when Label Studio opens it, by event "
    "(queued, dropped because the queue was full, done, failed)",
    ["event"],
    registry=REGISTRY,
)
EVICTIONS = Counter(
    "sam2plus_evictions",
    "Files evicted from the bounded folders under CACHE_DIR (downloads, frames, embeddings), least recently used first",
    ["folder"],
    registry=REGISTRY,
)
STORE_BYTES = Gauge(
    "sam2plus_embedding_store_bytes",
    "Disk space the embedding store takes (its shared running total, as last seen by any worker)",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
STORE_READ_SECONDS = Histogram(
    "sam2plus_embedding_store_read_seconds",
    "Time to read and check one embedding from the store (a hit)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, float("inf")),
    registry=REGISTRY,
)
PREFETCHES = Counter(
    "sam2plus_prefetches",
    "Next tasks' images prepared ahead of their opening, by event (queued, dropped, done, failed)",
    ["event"],
    registry=REGISTRY,
)
MODEL_INFO = Gauge(
    "sam2plus_model_info",
    "The model served (value 1): version, sam2 config, checkpoint, device and whether its weights are untrained",
    ["version", "config", "checkpoint", "device", "untrained"],
    registry=REGISTRY,
    multiprocess_mode="max",
)
RESIDENT = Gauge(
    "sam2plus_worker_resident_bytes",
    "Resident memory of each live worker after its latest request",
    registry=REGISTRY,
    multiprocess_mode="liveall",
)
PEAK_RESIDENT = Gauge(
    "sam2plus_worker_peak_resident_bytes",
    "Peak resident memory of each live worker",
    registry=REGISTRY,
    multiprocess_mode="liveall",
)
GPU_ALLOCATED = Gauge(
    "sam2plus_worker_gpu_allocated_bytes",
    "GPU memory held by torch's tensors in each live worker (0 without CUDA)",
    registry=REGISTRY,
    multiprocess_mode="liveall",
)

for _stage in STAGES:
    STAGE_SECONDS.labels(_stage)
for _cache in CACHES:
    for _result in ("hit", "miss"):
        CACHE_LOOKUPS.labels(_cache, _result)
for _event in WARMUP_EVENTS:
    WARMUPS.labels(_event)
for _event in PREFETCH_EVENTS:
    PREFETCHES.labels(_event)
for _folder in FOLDERS:
    EVICTIONS.labels(_folder)

_failed: set[str] = set()


def _never_raises(record):
    """Metrics are bookkeeping: a failure (a full disk under the multiprocess directory) is logged
    once per function and the request goes on."""

    @functools.wraps(record)
    def guarded(*args, **kwargs):
        try:
            return record(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - nothing a metric does may fail a request
            if record.__name__ not in _failed:
                _failed.add(record.__name__)
                log.warning(
                    "metrics: %s failed (%s: %s); counting goes on where it can",
                    record.__name__,
                    type(exc).__name__,
                    exc,
                )
            return None

    return guarded


@_never_raises
def request_started() -> None:
    IN_PROGRESS.inc()


@_never_raises
def request_finished(route: str, method: str, status: int, seconds: float) -> None:
    """One answered request: counted by route, method and status, its latency by route."""
    IN_PROGRESS.dec()
    observe_request(route, method, status, seconds)


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count one request; `route` must come from a closed set (the app's routes, or OTHER)."""
    REQUESTS.labels(route, method_label(method), status_label(status)).inc()
    REQUEST_SECONDS.labels(route).observe(seconds)


def method_label(method: str) -> str:
    """The request method as a label: one of METHODS, or `other` for any made-up one."""
    return method if method in METHODS else OTHER


def status_label(status: int) -> str:
    """The answer's status as a label: a registered HTTP status (or 499), else `other`."""
    return str(status) if status in STATUSES else OTHER


@_never_raises
def observe_stage(stage: str, seconds: float) -> None:
    """The time of one stage of a click (one of STAGES)."""
    STAGE_SECONDS.labels(stage).observe(seconds)


@_never_raises
def count_cache(cache: str, hit: bool) -> None:
    """One lookup in `cache` (one of CACHES)."""
    CACHE_LOOKUPS.labels(cache, "hit" if hit else "miss").inc()


@_never_raises
def count_encoder_run(seconds: float) -> None:
    """One run of SAM2's image encoder, timed as the `encoder` stage."""
    ENCODER_RUNS.inc()
    STAGE_SECONDS.labels("encoder").observe(seconds)


@_never_raises
def count_warmup(event: str) -> None:
    """A warm-up queued, dropped, done or failed."""
    WARMUPS.labels(event).inc()


@_never_raises
def count_prefetch(event: str) -> None:
    """A next task's prefetch queued, dropped, done or failed."""
    PREFETCHES.labels(event).inc()


@_never_raises
def count_evictions(folder: str, files: int) -> None:
    """`files` evicted from a bounded folder (one of FOLDERS)."""
    EVICTIONS.labels(folder).inc(files)


@_never_raises
def observe_store_read(seconds: float) -> None:
    """One embedding read from the store."""
    STORE_READ_SECONDS.observe(seconds)


@_never_raises
def set_store_bytes(used: int) -> None:
    """The embedding store's disk space, from its running total."""
    STORE_BYTES.set(used)


@_never_raises
def set_model_info(version: str, config: str, checkpoint: str, device: str, untrained: bool) -> None:
    MODEL_INFO.labels(version, config, checkpoint, device, str(untrained).lower()).set(1)


@_never_raises
def update_memory() -> None:
    """This process's resident memory now and at its peak, and its GPU memory held by torch."""
    with open("/proc/self/statm") as statm:
        RESIDENT.set(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    PEAK_RESIDENT.set(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    torch = sys.modules.get("torch")  # never imported here for this: a CPU-only process stays 0
    GPU_ALLOCATED.set(torch.cuda.memory_allocated() if torch is not None and torch.cuda.is_initialized() else 0)


def multiprocess_dir() -> str | None:
    """The directory the metrics of all workers are kept in, or None when they count for this process alone."""
    directory = os.environ.get(MULTIPROC_ENV)
    return directory if directory and getattr(values.ValueClass, "_multiprocess", False) else None


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric (all workers' sums when they share a directory) and its content type."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    registry.register(_WorkerFiles(directory))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _WorkerFiles:
    """prometheus-client's multiprocess collector over the workers' files that have been sized.

    A worker creates its file empty and sizes it a moment later; prometheus-client 0.26 fails the
    whole scrape on an empty file (client_python issue 1199), and one left by a worker killed in that
    moment would fail every later scrape. An empty file holds no counts, so it is left out."""

    def __init__(self, directory: str):
        self.directory = directory

    def collect(self):
        files = []
        for path in Path(self.directory).glob("*.db"):
            try:
                if path.stat().st_size > 0:
                    files.append(str(path))
            except FileNotFoundError:  # a dead worker's live gauges, removed since the glob
                continue
        return multiprocess.MultiProcessCollector.merge(files, accumulate=True)


def prepare_multiprocess_dir(directory: str) -> None:
    """Create `directory` and delete the metric files of an earlier run in it (gunicorn's master, at start)."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink(missing_ok=True)


def remove_multiprocess_dir(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def mark_process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters and histograms still count)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        multiprocess.mark_process_dead(pid, directory)
