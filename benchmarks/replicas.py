"""Benchmark, replicas scenario (issue 19): K annotators over N replicas through HAProxy, beside
the same sessions on one replica without a balancer.

    python -m benchmarks.replicas [--replicas 3] [--annotators 4] [--clicks 6] [--json PATH]

Run from a checkout (benchmarks/ is not shipped): it starts everything for real on loopback with
the test suite's helpers (tests/support): Debian's PostgreSQL 15 (SETTINGS_URL), N gunicorn replicas (one worker each,
untrained hiera-t on CPU unless MODEL_CONFIG/MODEL_CHECKPOINT/DEVICE say otherwise) and HAProxy
with haproxy/front.cfg + haproxy/replicas.cfg. Each annotator has a task of its own (a 512x512
image) and makes a first click and `clicks - 1` refinement clicks 0.3 s apart, all annotators at
once. Figures: encoder runs per session (from the replicas' /metrics), p50/p95 click latency of
the refinement clicks and of the first clicks, and the balancer's overhead per click (median of
a cached click through HAProxy minus the same click straight at its replica, noisy on a loaded
machine; `haproxy_ms_*`: HAProxy's own log, its total time of each click less the replica's).

On a machine with few cores (2 here) the replicas share the same cores, so they cannot add
throughput: what this shows is the routing (one encoder run per session, as on one replica),
the cache hits it keeps, and what HAProxy adds to a click.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests

from sam2plus.contexts import context, control, keypoint_region, label_config, rectangle_region
from tests.support.postgres import postgres_server
from tests.support.replicas import replica_cluster
from tests.support.scenes import DiscScene
from tests.support.servers import static_server

__all__ = ["SIZE", "overhead_ms", "replica_figures", "sessions", "main"]

SIZE = 512
PAUSE_S = 0.3
LABEL_CONFIG = label_config(
    control("RectangleLabels", "prompt", smart=True, labels=["object"]),
    control("KeyPointLabels", "point", smart=True, labels=["object"]),
    control("PolygonLabels", "output", labels=["object"]),
)
PROJECT = "bench.replicas"


def _body(task: int, image_url: str, points: list[tuple[float, float]]) -> dict:
    """A click as Label Studio sends it: a rectangle first, then the rectangle and each point so far."""
    regions = [rectangle_region((150, 150, 360, 360), SIZE, SIZE, labels=["object"])]
    regions += [keypoint_region(x, y, SIZE, SIZE, from_name="point", labels=["object"]) for x, y in points]
    return {
        "tasks": [{"id": task, "data": {"image": image_url}}],
        "project": PROJECT,
        "label_config": LABEL_CONFIG,
        "params": {"context": context(*regions)},
    }


def _session(url: str, task: int, image_url: str, clicks: int, out: list) -> None:
    """One annotator: a first click and `clicks - 1` refinements, PAUSE_S apart; (kind, ms) into `out`."""
    points = []
    for n in range(clicks):
        started = time.perf_counter()
        answer = requests.post(f"{url}/predict?bench={task}", json=_body(task, image_url, points), timeout=600)
        answer.raise_for_status()
        out.append(("first" if n == 0 else "refine", (time.perf_counter() - started) * 1000))
        points.append((200 + 15 * n, 220 + 10 * n))
        time.sleep(PAUSE_S)


def sessions(url: str, tasks: list[int], image_url, clicks: int) -> dict:
    """All annotators at once against `url`; latencies by kind."""
    out: list = []
    threads = [
        threading.Thread(target=_session, args=(url, task, image_url(task), clicks, out), daemon=True) for task in tasks
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.5)  # annotators start one after another
    for thread in threads:
        thread.join()
    return {kind: sorted(ms for k, ms in out if k == kind) for kind in ("first", "refine")}


def _p(values: list[float], q: float) -> float:
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1) if len(values) > 1 else values[0]


def overhead_ms(front_url: str, replica_url: str, task: int, image_url: str, repeats: int = 20) -> float:
    """Median of (cached click through HAProxy) - (the same click straight at its replica), alternated."""
    body = _body(task, image_url, [(210, 230)])
    requests.post(f"{front_url}/predict", json=body, timeout=600).raise_for_status()  # encode it once
    through, direct = [], []
    for _ in range(repeats):
        for url, into in ((f"{front_url}/predict?bench={task}", through), (f"{replica_url}/predict", direct)):
            started = time.perf_counter()
            requests.post(url, json=body, timeout=600).raise_for_status()
            into.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(through) - statistics.median(direct), 2)


def replica_figures(cluster, image_url, annotators: int = 4, clicks: int = 6, first_task: int = 1000) -> dict:
    """The scenario on a running `tests.support.replicas.Cluster`; `image_url(task)` gives each task's image."""
    setup = {"project": PROJECT, "extra_params": {"return_format": {"type": "PolygonLabels"}}}
    requests.post(f"{cluster.url}/setup", json=setup, timeout=60).raise_for_status()
    figures = {"replicas": len(cluster.replicas), "annotators": annotators, "clicks": clicks}
    single = cluster.replicas[0]
    for name, url, base in (("single", single.url, first_task), ("replicas", cluster.url, first_task + annotators)):
        before = sum(cluster.encoder_runs().values())
        latencies = sessions(url, list(range(base, base + annotators)), image_url, clicks)
        runs = sum(cluster.encoder_runs().values()) - before
        figures[f"{name}_encoder_runs_per_session"] = runs / annotators
        figures[f"{name}_first_p50_ms"] = _p(latencies["first"], 50)
        figures[f"{name}_refine_p50_ms"] = _p(latencies["refine"], 50)
        figures[f"{name}_refine_p95_ms"] = _p(latencies["refine"], 95)
    task = first_task + 2 * annotators
    tag = f"bench={task}"
    requests.post(f"{cluster.url}/predict?{tag}", json=_body(task, image_url(task), []), timeout=600)
    home = cluster.replica(cluster.route_of(tag).server)
    figures["balancer_overhead_ms"] = overhead_ms(cluster.url, home.url, task, image_url(task))
    # HAProxy's own account of each click through it: its total time less the replica's answer time
    added = [route.haproxy_ms for route in cluster.routes() if "bench=" in route.path and route.timers[3] >= 0]
    figures["haproxy_ms_p50"] = statistics.median(added)
    figures["haproxy_ms_max"] = max(added)
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotators", type=int, default=4)
    parser.add_argument("--clicks", type=int, default=6)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sam2plus-bench-replicas-") as work:
        folder = Path(work) / "images"
        folder.mkdir()
        for n in range(1000, 1000 + 2 * args.annotators + 1):
            DiscScene(SIZE, SIZE, 200 + n % 100, 240, 90).write(folder / f"{n}.jpg")
        with postgres_server() as db, static_server(folder) as host:
            with replica_cluster(db.url, {"IMAGE_HOSTS": host}, Path(work)) as cluster:
                figures = replica_figures(cluster, lambda n: f"http://{host}/{n}.jpg", args.annotators, args.clicks)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
