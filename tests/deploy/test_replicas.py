"""Several replicas behind one address (issue 19, item 5), all real on loopback: Debian's
PostgreSQL 15 as the shared settings store (SETTINGS_URL), three gunicorn replicas (one worker,
untrained hiera-t on CPU) and HAProxy with the shipped haproxy/front.cfg + haproxy/replicas.cfg.

Which replica served a request is read from HAProxy's own log (each click carries a `?click=N`
tag, which the backend ignores); encoder runs from each replica's /metrics?format=json.
The images are 320x320 (SAM2 encodes 1024x1024 whatever the size: about a second here).

The failover test prints its timeline (`pytest -s`): when the replica died, when HAProxy marked
it DOWN, the last request it got, and which clicks failed.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from benchmarks.replicas import replica_figures
from sam2plus.contexts import context, rectangle_region
from tests.e2e.ls import label_config as ls_label_config
from tests.support.front import FRONT, haproxy_binary
from tests.support.postgres import postgres_server
from tests.support.regions import require_some
from tests.support.replicas import REPLICAS_CFG, replica_cluster
from tests.support.scenes import DiscScene, label_config, point_context, rect_context
from tests.support.servers import static_server

PROJECT = "19.1795599678"
POLYGON = {"return_format": {"type": "PolygonLabels"}}
SIZE = 320
TASKS = list(range(1, 7))  # the tasks of the first clicks; their homes are read from HAProxy's log
REFINED = 20  # the task of the 4-click refinement
OTHER_IMAGE = 100  # task N's image with another URL: t{N + 100}.jpg, not in any cache yet
BENCH_TASKS = range(500, 505)  # the benchmark scenario's: 2 annotators alone, 2 through HAProxy, 1 more
_clicks = itertools.count(1)


def scene(image: int) -> DiscScene:
    return DiscScene(SIZE, SIZE, 90 + (image * 37) % 140, 90 + (image * 53) % 140, 45)


def test_the_shipped_replicas_configuration_is_valid_and_balances_by_task_id():
    addresses = {f"REPLICA{n}_ADDR": f"127.0.0.1:{9090 + n}" for n in (1, 2, 3)}
    command = [haproxy_binary(), "-c", "-f", str(FRONT), "-f", str(REPLICAS_CFG)]
    checked = subprocess.run(command, env={**os.environ, **addresses}, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    text = REPLICAS_CFG.read_text()
    assert "balance hash req.body,json_query('$.tasks[0].id')" in text and "hash-type consistent" in text
    assert "option httpchk GET /health" in text


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for image in [*TASKS, REFINED, *(task + OTHER_IMAGE for task in TASKS), *BENCH_TASKS]:
        scene(image).write(folder / f"t{image}.jpg")
    with static_server(folder) as host:
        yield host


@pytest.fixture(scope="module")
def cluster(postgres, images, tmp_path_factory):
    with replica_cluster(postgres.url, {"IMAGE_HOSTS": images}, tmp_path_factory.mktemp("replicas")) as running:
        running.images = images
        yield running


def click(cluster, task: int, ctx: dict | None = None, image: int | None = None, timeout: float = 120):
    """One click on `task` through HAProxy; returns (tag, status or the exception's name, answer JSON)."""
    image = image or task
    tag = f"click={next(_clicks)}"
    body = {
        "tasks": [{"id": task, "data": {"image": f"http://{cluster.images}/t{image}.jpg"}}],
        "project": PROJECT,
        "label_config": label_config("PolygonLabels"),
        "params": {"context": ctx or rect_context(scene(image).box(), SIZE, SIZE)},
    }
    try:
        answer = requests.post(f"{cluster.url}/predict?{tag}", json=body, timeout=timeout)
    except requests.RequestException as exc:
        return tag, type(exc).__name__, None
    return tag, answer.status_code, answer.json() if answer.content else None


def regions(answer: dict) -> list[dict]:
    """The click's regions, each of which must be in the configured format (polygons)."""
    found = answer["results"][0]["result"]
    assert all(region["type"] == "polygonlabels" for region in found), found
    return found


@pytest.fixture(scope="module")
def homes(cluster):
    """/setup through HAProxy, then one click on each task: {task: the replica that served it}."""
    setup = requests.post(f"{cluster.url}/setup", json={"project": PROJECT, "extra_params": POLYGON}, timeout=30)
    assert setup.status_code == 200, setup.text
    served, answers = {}, []
    for task in TASKS:
        tag, status, answer = click(cluster, task)
        assert status == 200, (task, status, answer)
        answers.append(regions(answer))
        served[task] = cluster.route_of(tag).server
    require_some(answers, "first clicks through HAProxy")
    return served


@pytest.mark.slow
def test_setup_through_haproxy_then_clicks_on_every_replica_answer_in_the_configured_format(cluster, homes):
    assert set(homes.values()) == {replica.name for replica in cluster.replicas}, homes
    for task in TASKS:  # again: each task on its replica, polygons whoever took /setup
        tag, status, answer = click(cluster, task)
        assert status == 200 and cluster.route_of(tag).server == homes[task]
        regions(answer)


@pytest.mark.slow
def test_a_four_click_refinement_stays_on_one_replica_and_runs_the_encoder_once(cluster, homes):
    before = cluster.encoder_runs()
    s = scene(REFINED)
    points = [(s.cx, s.cy), (s.cx + 10, s.cy - 10), (s.cx + 60, s.cy + 60), (s.cx - 15, s.cy + 5)]
    signs = [True, True, False, True]
    servers, answers = set(), []
    for n in range(1, 5):
        tag, status, answer = click(cluster, REFINED, point_context(points[:n], SIZE, SIZE, signs[:n]))
        assert status == 200, answer
        answers.append(regions(answer))
        servers.add(cluster.route_of(tag).server)
    after = cluster.encoder_runs()
    assert len(servers) == 1, servers
    assert sum(after.values()) - sum(before.values()) == 1, (before, after)
    assert after[servers.pop()] - 1 in before.values()
    require_some(answers, "refinement clicks")


@pytest.mark.slow
def test_a_replica_killed_mid_session_moves_only_its_tasks_and_gets_them_back(cluster, homes):
    victim = max(cluster.replicas, key=lambda r: sum(home == r.name for home in homes.values())).name
    its_tasks = [task for task in TASKS if homes[task] == victim]
    others = [task for task in TASKS if homes[task] != victim]
    survivors_before = {name: runs for name, runs in cluster.encoder_runs().items() if name != victim}
    down = cluster.watch_state(victim, "DOWN", cluster.state_changes(victim, "DOWN"))

    # A click on the victim that needs the encoder (an image it has not seen), killed under it.
    in_flight = ThreadPoolExecutor(1).submit(click, cluster, its_tasks[0], None, its_tasks[0] + OTHER_IMAGE)
    time.sleep(0.4)
    killed = cluster.replica(victim).kill()
    log = []  # (time sent, task, tag, status, server)
    while "at" not in down or time.time() < down["at"] + 2:  # until 2 s after HAProxy marked it DOWN
        for task in its_tasks + others:  # its tasks first: sent before HAProxy can know it is dead
            sent = time.time()
            tag, status, answer = click(cluster, task)
            log.append((sent, task, tag, status, cluster.route_of(tag).server if status == 200 else "-"))
            assert status == 200, (task, status, answer)
            regions(answer)
        assert time.time() < killed + 300, "HAProxy never marked the dead replica DOWN"
    marked_down = down["at"]
    flight_tag, flight_status, _ = in_flight.result(60)
    to_victim = [route for route in cluster.routes() if route.server == victim]

    for _, task, _, _, server in log:
        assert server != victim
        if task in others:
            assert server == homes[task], "a task of a live replica moved"
    survivors_after = {name: runs for name, runs in cluster.encoder_runs().items() if name != victim}
    # each moved task ran the encoder on its new replica: once, or twice when a click sent before
    # the DOWN was redispatched to the other survivor than the ring's choice after it; the others' none
    moved_runs = sum(survivors_after.values()) - sum(survivors_before.values())
    assert len(its_tasks) <= moved_runs <= 2 * len(its_tasks), (survivors_before, survivors_after)

    replica = cluster.replica(victim)
    ups = cluster.state_changes(victim, "UP")
    replica.launch()
    replica.wait()
    cluster.wait_state(victim, "UP", ups)
    back = time.time()
    for task in TASKS:
        tag, status, answer = click(cluster, task)
        assert status == 200 and cluster.route_of(tag).server == homes[task], (task, status)
        regions(answer)
    # A fresh process, but its CACHE_DIR's embedding store still holds its tasks' windows: no encoder run.
    assert cluster.replica(victim).counts()["encoder_runs"] == 0

    print(
        f"\nfailover timeline ({victim}, tasks {its_tasks}; others {others}):"
        f"\n  killed (SIGKILL) at t=0; the click in flight on it ({flight_tag}): {flight_status}"
        f"\n  HAProxy marked it DOWN at t={marked_down - killed:+.2f} s"
        f"\n  last request HAProxy sent it: {to_victim[-1].accepted} ({to_victim[-1].path}, {to_victim[-1].status})"
        f"\n  clicks after the kill: {len(log)}, failed: {sum(1 for entry in log if entry[3] != 200)}; "
        f"before DOWN: {sum(1 for entry in log if entry[0] < marked_down)}"
        f"\n  first click after the kill at t={log[0][0] - killed:+.2f} s on task {log[0][1]} -> {log[0][4]}"
        f"\n  encoder runs of the moved tasks on the survivors: {moved_runs}"
        f"\n  back UP at t={back - killed:+.2f} s; its {len(its_tasks)} tasks returned, the others stayed"
        + "".join(
            f"\n  t={sent - killed:+.2f} s task {task} {tag}: {status} from {server}"
            for sent, task, tag, status, server in log
        )
    )
    assert flight_status in (200, 502, 503), flight_status  # at most the click in flight fails


@pytest.mark.slow
def test_postgresql_restarted_under_load_gives_no_answer_with_default_settings(cluster, homes, postgres):
    stop_load = threading.Event()
    outcomes = []

    def load():
        while not stop_load.is_set():
            for task in TASKS:
                tag, status, answer = click(cluster, task)
                outcomes.append((status, answer))

    with ThreadPoolExecutor(2) as pool:
        workers = [pool.submit(load) for _ in range(2)]
        time.sleep(1)
        postgres.stop("fast")
        time.sleep(3)
        postgres.start()
        time.sleep(2)
        stop_load.set()
        for worker in workers:
            worker.result(120)
    assert outcomes
    for status, answer in outcomes:
        if status == 200:
            regions(answer)  # polygons: the project's settings, never the defaults (brush)
        else:
            assert status == 503 and "SETTINGS_URL" in answer["error"], (status, answer)
    # nothing lost: a new write and the old settings are there after the restart
    fresh = "19.restart"
    assert requests.post(f"{cluster.url}/setup", json={"project": fresh, "extra_params": POLYGON}, timeout=30).ok
    print(f"\nPostgreSQL restart under load: {len(outcomes)} clicks, {sum(s != 200 for s, _ in outcomes)} got 503")


@pytest.mark.slow
def test_label_studio_connected_to_haproxy_gets_regions_from_a_smart_click(label_studio, cluster):
    api = label_studio.api()
    project = api.create_project(ls_label_config("RectangleLabels", "PolygonLabels"))
    tasks = api.import_tasks(project, [{"image": f"http://{cluster.images}/t{task}.jpg"} for task in TASKS[:2]])
    added = api.add_ml_backend(project, cluster.url, POLYGON)
    assert added.status_code == 201, added.text[:2000]
    ml = added.json()
    answers = []
    for task in tasks:
        image = int(task["data"]["image"].rsplit("/t", 1)[1].removesuffix(".jpg"))
        box = rectangle_region(scene(image).box(), SIZE, SIZE, labels=["Obj"])
        answer = api.interactive(ml["id"], task["id"], context(box))
        assert "errors" not in answer, answer
        found = answer["data"]["result"]
        assert all(region["type"] == "polygonlabels" for region in found), found
        answers.append(found)
    require_some(answers, "Label Studio's smart clicks through HAProxy")


@pytest.mark.slow
def test_the_benchmark_scenario_keeps_one_encoder_run_per_session(cluster):
    """benchmarks.replicas on this cluster, small: 2 annotators, 3 clicks each."""
    figures = replica_figures(
        cluster, lambda task: f"http://{cluster.images}/t{task}.jpg", annotators=2, clicks=3, first_task=500
    )
    print(f"\nreplicas benchmark (2 annotators, 3 clicks): {figures}")
    assert figures["single_encoder_runs_per_session"] == figures["replicas_encoder_runs_per_session"] == 1
    for key in ("single_refine_p95_ms", "replicas_refine_p95_ms", "balancer_overhead_ms"):
        assert isinstance(figures[key], float), key
    assert 0 <= figures["haproxy_ms_p50"] <= figures["haproxy_ms_max"] < 1000
