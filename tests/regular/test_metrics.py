"""Prometheus metrics at /metrics (docs/operations.md: Metrics).

In-process (Flask's test client) the metrics count for this process alone, so these tests compare
a scrape before and after; under gunicorn (the slow tests below, with the geometry test double so
that workers start in a second) one scrape of any worker reports the sums over all of them.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from model import SAM2Plus
from sam2plus import metrics
from sam2plus.config import ServerConfig
from sam2plus.server import create_app
from sam2plus.warmup import Warmup
from tests.support.docs import section
from tests.support.geometry_segmenter import ColorRegionSegmenter
from tests.support.inprocess import SCENE, make_backend, predict_body
from tests.support.prometheus import requests_by_route_and_status, samples, value
from tests.support.scenes import label_config
from tests.support.servers import REPO, gunicorn_server

GEOMETRY_APP = "tests.support.geometry_app:app"


def scrape(client) -> dict:
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.content_type.startswith("text/plain; version=")
    return samples(answer.get_data(as_text=True))


def delta(after: dict, before: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def backend(tmp_path):
    return make_backend(tmp_path)


def test_requests_are_counted_by_route_method_and_status_with_their_latency(backend):
    client, _ = backend
    before = scrape(client)
    for _ in range(3):
        assert client.get("/health").status_code == 200
    assert client.post("/predict", json=predict_body()).status_code == 200
    assert client.post("/predict", json={"tasks": []}).status_code == 400
    assert client.post("/setup", json={"project": "p", "extra_params": {"x": 1}}).status_code == 400
    after = scrape(client)
    expected = {
        ("/health", "GET", "200"): 3,
        ("/predict", "POST", "200"): 1,
        ("/predict", "POST", "400"): 1,
        ("/setup", "POST", "400"): 1,
        ("/metrics", "GET", "200"): 1,
    }  # the first scrape
    for (route, method, status), count in expected.items():
        assert delta(after, before, "sam2plus_requests_total", route=route, method=method, status=status) == count
    assert delta(after, before, "sam2plus_request_seconds_count", route="/predict") == 2
    assert delta(after, before, "sam2plus_request_seconds_bucket", route="/health", le="+Inf") == 3
    assert delta(after, before, "sam2plus_request_seconds_sum", route="/predict") > 0


def test_unknown_paths_share_one_route_label(backend):
    client, _ = backend
    before = scrape(client)
    for index in range(20):
        assert client.get(f"/no/such/path/{index}").status_code == 404
    after = scrape(client)
    assert delta(after, before, "sam2plus_requests_total", route="other", status="404") == 20
    assert not [
        labels
        for name, labels in after
        if name == "sam2plus_requests_total" and dict(labels)["route"].startswith("/no/")
    ], "a path never becomes a label"


def _request_series(scraped: dict) -> set[frozenset]:
    return {labels for name, labels in scraped if name == "sam2plus_requests_total"}


def test_made_up_methods_share_one_method_label(backend):
    """3000 invented methods on /health (no auth needed) add one series, `method="other"`."""
    client, _ = backend
    before = scrape(client)
    for index in range(3000):
        assert client.open("/health", method=f"XYZ{index:04d}").status_code == 405
    assert client.open("/health", method="PATCH").status_code == 405
    after = scrape(client)
    assert delta(after, before, "sam2plus_requests_total", route="/health", method="other", status="405") == 3000
    assert delta(after, before, "sam2plus_requests_total", route="/health", method="PATCH", status="405") == 1
    methods = {dict(labels)["method"] for labels in _request_series(after)}
    assert methods <= {*metrics.METHODS, "other"}
    assert len(_request_series(after) - _request_series(before)) <= 3  # other/405, PATCH/405, the scrape's


def test_every_request_label_comes_from_a_closed_set():
    assert metrics.method_label("GET") == "GET" and metrics.method_label("get") == "other"
    assert metrics.status_label(404) == "404" and metrics.status_label(499) == "499"
    assert metrics.status_label(999) == "other" and metrics.status_label(-1) == "other"


def test_a_refused_login_is_counted_too(tmp_path):
    client, _ = make_backend(tmp_path, basic_auth_user="ann", basic_auth_pass="s3cret")
    before = samples(metrics.exposition()[0].decode())
    assert client.get("/versions").status_code == 401
    after = samples(metrics.exposition()[0].decode())
    assert delta(after, before, "sam2plus_requests_total", route="/versions", status="401") == 1


def test_frame_cache_hits_and_misses(backend):
    client, _ = backend
    before = scrape(client)
    assert client.post("/predict", json=predict_body()).status_code == 200  # decodes the frame
    assert client.post("/predict", json=predict_body()).status_code == 200  # reads it back
    after = scrape(client)
    assert delta(after, before, "sam2plus_cache_lookups_total", cache="frame", result="miss") == 1
    assert delta(after, before, "sam2plus_cache_lookups_total", cache="frame", result="hit") == 1


def test_each_stage_of_a_click_is_timed(backend):
    client, _ = backend
    before = scrape(client)
    assert client.post("/predict", json=predict_body()).status_code == 200
    after = scrape(client)
    for stage in ("fetch", "decode", "regions"):
        assert delta(after, before, "sam2plus_stage_seconds_count", stage=stage) == 1, stage
        assert delta(after, before, "sam2plus_stage_seconds_sum", stage=stage) > 0, stage
    assert delta(after, before, "sam2plus_stage_seconds_count", stage="artifacts") == 0, "none were asked for"


def test_warm_ups_are_counted_when_a_task_opens(backend):
    """Label Studio opening a task: /predict without a context queues a warm-up of its image."""
    client, _ = backend
    before = scrape(client)
    body = predict_body()
    body["params"]["context"] = None
    assert client.post("/predict", json=body).get_json()["results"] == []
    deadline = time.monotonic() + 30
    while delta(scrape(client), before, "sam2plus_warmups_total", event="done") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    after = scrape(client)
    assert delta(after, before, "sam2plus_warmups_total", event="queued") == 1
    assert delta(after, before, "sam2plus_warmups_total", event="done") == 1
    assert delta(after, before, "sam2plus_warmups_total", event="failed") == 0
    assert client.get("/metrics?format=json").get_json()["warmups"] == {
        "queued": 1,
        "dropped": 0,
        "done": 1,
        "failed": 0,
    }


def test_a_warm_up_dropped_for_a_full_queue_is_counted(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("scene.jpg", "other.jpg"):
        SCENE.write(cache / name)
    model = SAM2Plus(
        ServerConfig(cache_dir=str(cache), model_dir=str(tmp_path / "models")), segmenter=ColorRegionSegmenter()
    )
    model.warmup = Warmup(model.pipeline, max_queued=1)
    client = create_app(model).test_client()
    before = scrape(client)
    body = predict_body()
    body["params"]["context"] = None
    body["tasks"] = [{"id": 1, "data": {"image": "scene.jpg"}}, {"id": 2, "data": {"image": "other.jpg"}}]
    with model.warmup.click():  # a click in flight: the first warm-up waits, the second finds the queue full
        assert client.post("/predict", json=body).get_json()["results"] == []
    assert model.warmup.wait(30)
    after = scrape(client)
    assert {
        event: delta(after, before, "sam2plus_warmups_total", event=event)
        for event in ("queued", "dropped", "done", "failed")
    } == {"queued": 1, "dropped": 1, "done": 1, "failed": 0}


def test_a_click_whose_client_left_is_counted_as_499(backend):
    client, _ = backend
    before = scrape(client)
    ours, peer = socket.socketpair()
    peer.close()  # the client is gone before the click starts
    try:
        answer = client.post("/predict", json=predict_body(), environ_base={"gunicorn.socket": ours})
    finally:
        ours.close()
    assert answer.status_code == 499
    after = scrape(client)
    assert delta(after, before, "sam2plus_requests_total", route="/predict", method="POST", status="499") == 1
    assert delta(after, before, "sam2plus_stage_seconds_count", stage="decode") == 0, "it stopped after the fetch"


def _readme_metrics() -> dict[str, tuple[str, set[str]]]:
    """The docs' table of metrics (Operations > Metrics): name -> (type, label names)."""
    rows = {}
    for line in section("### Metrics").text.splitlines():
        if line.startswith("| `sam2plus_"):
            name, kind, labels = (cell.strip() for cell in line.strip("|").split("|")[:3])
            rows[name.strip("`")] = (kind, set(re.findall(r"`(\w+)`", labels)))
    return rows


def test_the_readme_lists_exactly_the_metrics_exposed_with_their_types_and_labels(backend):
    client, _ = backend
    assert client.post("/predict", json=predict_body()).status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    exposed = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = {key for sample in family.samples for key in sample.labels} - {"le"}
        exposed[name] = (family.type, labels)
    listed = _readme_metrics()
    assert listed.keys() == exposed.keys()
    for name, (kind, labels) in listed.items():
        assert kind == exposed[name][0], name
        assert labels - {"pid"} == exposed[name][1], name  # pid: a per-worker gauge's label under gunicorn
    stages = {dict(labels)["stage"] for name, labels in samples(text) if name == "sam2plus_stage_seconds_count"}
    assert stages == {"fetch", "decode", "encoder", "decoder", "regions", "artifacts"}
    events = {dict(labels)["event"] for name, labels in samples(text) if name == "sam2plus_warmups_total"}
    assert events == {"queued", "dropped", "done", "failed"}


def test_model_info_names_the_model(backend):
    client, _ = backend
    info = [dict(labels) for name, labels in scrape(client) if name == "sam2plus_model_info"]
    version = client.get("/versions").get_json()["model_version"]
    assert {
        "version": version,
        "config": "ColorRegionSegmenter",
        "checkpoint": "sam2.1_hiera_large.pt",
        "device": "-",
        "untrained": "false",
    } in info


def test_memory_gauges_are_this_process_resident_memory(backend):
    client, _ = backend
    client.get("/health")
    scraped = scrape(client)
    with open("/proc/self/statm") as statm:
        resident = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    assert 0.5 * resident < value(scraped, "sam2plus_worker_resident_bytes") < 2 * resident
    assert value(scraped, "sam2plus_worker_peak_resident_bytes") >= value(scraped, "sam2plus_worker_resident_bytes")


def test_the_json_view_keeps_its_keys(backend):
    client, _ = backend
    client.post("/predict", json=predict_body())
    view = client.get("/metrics?format=json").get_json()
    assert {"encoder_runs", "embedding_cache", "frame_cache", "predictions", "errors", "pid"} <= view.keys()
    assert view["frame_cache"] == {"hits": 0, "misses": 1} and view["predictions"] == 1
    assert view["pid"] == os.getpid()


def test_an_unknown_format_is_a_400_naming_it(backend):
    client, _ = backend
    answer = client.get("/metrics?format=xml")
    assert answer.status_code == 400 and answer.get_json()["error"].startswith("format: must be prometheus")


def test_a_metric_that_fails_never_fails_the_request(backend, monkeypatch, caplog):
    """A full disk under the multiprocess directory, say: the click is answered, the log says it once."""
    client, _ = backend

    class Broken:
        def labels(self, *args):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics, "CACHE_LOOKUPS", Broken())
    monkeypatch.setattr(metrics, "_failed", set())
    with caplog.at_level(logging.WARNING, logger="sam2plus.metrics"):
        for _ in range(2):
            assert client.post("/predict", json=predict_body()).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.name == "sam2plus.metrics"]
    assert len(warnings) == 1 and "count_cache failed" in warnings[0]


def test_an_empty_metrics_file_is_read_as_no_counts(tmp_path):
    """A worker creates its metrics file empty and sizes it a moment later (prometheus-client's
    MmapedDict); a scrape in between, or a worker killed in between, left the file empty and
    made every scrape a 500. Here in prometheus-client's multiprocess mode, in a process of its own."""
    script = (
        "import os, sys\n"
        "from sam2plus import metrics\n"
        "metrics.observe_request('/health', 'GET', 200, 0.01)\n"
        "open(os.path.join(os.environ['PROMETHEUS_MULTIPROC_DIR'], 'counter_424242.db'), 'wb').close()\n"
        "assert metrics.multiprocess_dir()\n"
        "sys.stdout.write(metrics.exposition()[0].decode())\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    scraped = samples(done.stdout)
    assert value(scraped, "sam2plus_requests_total", route="/health", method="GET", status="200") == 1
    assert (tmp_path / "counter_424242.db").stat().st_size == 0


# --- under gunicorn: several worker processes ----------------------------------------------------


def _geometry_server(tmp_path, workers=2, **env):
    (tmp_path / "cache").mkdir(parents=True, exist_ok=True)
    SCENE.write(tmp_path / "cache" / "scene.jpg")
    settings = {"CACHE_DIR": str(tmp_path / "cache"), "MODEL_DIR": str(tmp_path / "models"), **env}
    return gunicorn_server(settings, workers=workers, threads=4, timeout=60, log_dir=tmp_path, app=GEOMETRY_APP)


def _scrape(url: str) -> dict:
    answer = requests.get(f"{url}/metrics", timeout=10)
    assert answer.status_code == 200
    return samples(answer.text)


@pytest.mark.slow
def test_under_gunicorn_one_scrape_counts_every_worker(tmp_path):
    with _geometry_server(tmp_path) as server:
        url = server.url
        pids = set()
        deadline = time.monotonic() + 60
        sent = 0
        while len(pids) < 2 and time.monotonic() < deadline:  # until both workers have answered
            pids.add(requests.get(f"{url}/metrics?format=json", timeout=10).json()["pid"])
            sent += 1
        assert pids == set(server.workers()), "both workers answered"
        body = {**predict_body(), "label_config": label_config()}
        for _ in range(12):
            assert requests.post(f"{url}/predict", json=body, timeout=30).status_code == 200
            assert requests.post(f"{url}/predict", json={"tasks": []}, timeout=30).status_code == 400
        counts = requests_by_route_and_status(_scrape(url))
        scraped = _scrape(url)
    assert counts[("/predict", "200")] == 12 and counts[("/predict", "400")] == 12
    assert counts[("/metrics", "200")] == sent
    assert counts[("/health", "200")] >= 1  # wait_for's polls
    resident = {dict(labels)["pid"] for name, labels in scraped if name == "sam2plus_worker_resident_bytes"}
    assert resident == {str(pid) for pid in pids}, "one memory gauge per live worker"
    info = [labels for name, labels in scraped if name == "sam2plus_model_info"]
    assert len(info) == 1, "every worker serves the same model: one series"


@pytest.mark.slow
def test_a_dead_workers_counts_stay_and_its_gauges_go(tmp_path):
    with _geometry_server(tmp_path) as server:
        url = server.url
        by_pid: dict[int, int] = {}
        while len(by_pid) < 2:
            pid = requests.get(f"{url}/metrics?format=json", timeout=10).json()["pid"]
            by_pid[pid] = by_pid.get(pid, 0) + 1
        victim = max(by_pid, key=by_pid.get)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while (victim in server.workers() or len(server.workers()) < 2) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert victim not in server.workers() and len(server.workers()) == 2, "gunicorn replaced the worker"
        gauges: set = set()
        scrapes = 0
        while len(gauges) < 2 and time.monotonic() < deadline:  # the replacement reports once it has booted
            scraped = _scrape(url)
            scrapes += 1
            gauges = {dict(labels)["pid"] for name, labels in scraped if name == "sam2plus_worker_resident_bytes"}
        assert gauges == {str(pid) for pid in server.workers()}, "the live workers' gauges, the dead one's gone"
    assert str(victim) not in gauges
    # a scrape counts itself after its answer is made: every /metrics request but the last one
    assert value(scraped, "sam2plus_requests_total", route="/metrics") == sum(by_pid.values()) + scrapes - 1, (
        "the dead worker's counts stay"
    )


@pytest.mark.slow
def test_a_given_metrics_directory_is_emptied_at_start_and_kept_and_a_temporary_one_removed(tmp_path):
    given = tmp_path / "prometheus"
    given.mkdir()
    stale = given / "counter_999999.db"
    stale.write_bytes(b"\0" * 64)
    (given / "notes.txt").write_text("not ours")
    with _geometry_server(tmp_path, workers=1, PROMETHEUS_MULTIPROC_DIR=str(given)) as server:
        assert not stale.exists(), "metrics of an earlier run would be added to this one's"
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
        assert list(given.glob("*.db"))
    assert (given / "notes.txt").exists() and given.is_dir(), "a directory that was given stays"
    log = (tmp_path / next(p.name for p in tmp_path.glob("gunicorn-*.log"))).read_text()
    assert f"metrics in {given}" in log

    with _geometry_server(tmp_path / "second", workers=1, PROMETHEUS_MULTIPROC_DIR="") as server:
        line = [line for line in server.log.read_text().splitlines() if "metrics in " in line][0]
        temporary = line.rsplit("metrics in ", 1)[1].strip()
        assert os.path.isdir(temporary) and "sam2plus-metrics-" in temporary
    assert not os.path.exists(temporary), "the temporary directory goes with the server"


@pytest.mark.slow
def test_under_gunicorn_the_real_segmenter_counts_encoder_runs_embedding_lookups_and_decoder_times(tmp_path):
    (tmp_path / "cache").mkdir()
    SCENE.write(tmp_path / "cache" / "scene.jpg")
    env = {"CACHE_DIR": str(tmp_path / "cache"), "MODEL_DIR": str(tmp_path / "models")}
    with gunicorn_server(env, workers=1, threads=4, log_dir=tmp_path) as server:
        before = _scrape(server.url)
        for _ in range(2):  # the second click reuses the first one's embedding
            assert requests.post(f"{server.url}/predict", json=predict_body(), timeout=120).status_code == 200
        after = _scrape(server.url)
    assert delta(after, before, "sam2plus_encoder_runs_total") == 1
    assert delta(after, before, "sam2plus_stage_seconds_count", stage="encoder") == 1
    assert delta(after, before, "sam2plus_stage_seconds_sum", stage="encoder") > 0.1, "SAM2's encoder takes a while"
    assert delta(after, before, "sam2plus_stage_seconds_count", stage="decoder") == 2
    assert delta(after, before, "sam2plus_cache_lookups_total", cache="embedding", result="miss") == 1
    assert delta(after, before, "sam2plus_cache_lookups_total", cache="embedding", result="hit") == 1
    (info,) = [dict(labels) for name, labels in after if name == "sam2plus_model_info"]
    assert info["config"] == "configs/sam2.1/sam2.1_hiera_t.yaml" and info["untrained"] == "true"
    assert info["device"] == "cpu" and info["checkpoint"] == "untrained" and info["version"].endswith(":untrained")


@pytest.mark.slow
def test_under_gunicorn_made_up_methods_add_no_series(tmp_path):
    """gunicorn passes any upper-case method token to the app; each one counts as `other`."""
    with _geometry_server(tmp_path, workers=1) as server:
        for index in range(300):
            assert requests.request(f"XYZ{index:04d}", f"{server.url}/health", timeout=10).status_code == 405
        scraped = _scrape(server.url)
    methods = {dict(labels)["method"] for labels in _request_series(scraped)}
    assert methods == {"GET", "other"}  # the start-up's /health checks, the scrape, the 300 inventions
    assert value(scraped, "sam2plus_requests_total", route="/health", method="other", status="405") == 300
