"""gunicorn's settings for SAM2Plus. gunicorn reads this file by itself from its working directory,
so `gunicorn _wsgi:app` from the repository root (or /app in the container) serves with them.

From the environment (docs/configuration.md): HOST and PORT (bind, 127.0.0.1:9090), WORKERS (1),
THREADS (8), TIMEOUT (300 s a worker may stay silent, loading SAM2 or stuck, before gunicorn
replaces it; 0: never) and GRACEFUL_TIMEOUT (120 s for the clicks in flight when stopping);
options given on the command line win over them. Workers are always threaded (gthread), so a
long model run never starves gunicorn's heartbeat.

At start, gunicorn's master process checks the whole configuration once (sam2plus.startup):
each problem is one line on stderr, nothing starts and the exit status is 1. It also prepares
the directory where the workers' Prometheus metrics are summed (PROMETHEUS_MULTIPROC_DIR: the
one given, emptied of earlier metric files, or a temporary one removed at exit).
"""

import os
import sys
import tempfile

# The metrics directory is chosen before prometheus-client is first imported (it picks its
# multiprocess mode at import), and prepared once per master: gunicorn reads this file again on
# SIGHUP, and a master re-executed by SIGUSR2 (GUNICORN_PID set) shares it with the running workers.
_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
_OWNER = "SAM2PLUS_METRICS_MASTER"
_TEMPORARY = "SAM2PLUS_METRICS_TEMPORARY"
_first_load = os.environ.get(_OWNER) != str(os.getpid()) and "GUNICORN_PID" not in os.environ
if _first_load and not os.environ.get(_MULTIPROC):
    os.environ[_MULTIPROC] = os.environ[_TEMPORARY] = tempfile.mkdtemp(prefix="sam2plus-metrics-")

from sam2plus import metrics, startup  # noqa: E402
from sam2plus.config import ConfigError, ServerConfig, ServingConfig  # noqa: E402

if _first_load:
    metrics.prepare_multiprocess_dir(os.environ[_MULTIPROC])
    os.environ[_OWNER] = str(os.getpid())

try:
    _serving = ServingConfig.from_env()
    _problems = []
except ConfigError as _exc:
    _serving = ServingConfig()
    _problems = list(_exc.problems)

bind = [_serving.bind]
workers = _serving.workers
threads = _serving.threads
worker_class = "gthread"
timeout = _serving.timeout
graceful_timeout = _serving.graceful_timeout
loglevel = _serving.log_level.lower()
control_socket_disable = True  # gunicorn 27's control socket lives in $HOME, shared by every gunicorn there


def on_starting(server):
    """Check the configuration once, before any worker loads SAM2: one line per problem, then stop."""
    problems = list(_problems)
    try:
        startup.check_environment(ServerConfig.from_env())
    except ConfigError as exc:
        problems += exc.problems
    if problems:
        startup.report(ConfigError(*problems))
        on_exit(server)
        sys.exit(1)
    if warning := startup.workers_warning(workers, ServerConfig.from_env().device):
        server.log.warning("SAM2Plus: %s", warning)


def when_ready(server):
    server.log.info(
        "SAM2Plus: %d worker(s) x %d thread(s) on %s, timeout %s s, metrics in %s",
        workers,
        threads,
        ", ".join(server.cfg.bind),
        server.cfg.timeout or "off",
        os.environ[_MULTIPROC],
    )


def post_worker_init(worker):
    metrics.update_memory()  # the worker's memory with SAM2 loaded, before its first request


def child_exit(server, worker):
    """A worker ended (stopped, killed or crashed): its live gauges go, its counts stay."""
    metrics.mark_process_dead(worker.pid)


def on_exit(server):
    if os.environ.get(_TEMPORARY):
        metrics.remove_multiprocess_dir(os.environ[_TEMPORARY])
