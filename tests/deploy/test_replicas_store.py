"""Replicas sharing one embedding store (replicas-compose.yml mounts one for all), all real on
loopback as in test_replicas.py: PostgreSQL, three gunicorn replicas (untrained hiera-t, CPU) on
their own CACHE_DIRs with one EMBEDDING_STORE_DIR, HAProxy with the shipped files.

When a replica is lost, its tasks move to the survivors, which read the features it stored
instead of running the encoder again; when it comes back, its tasks return and its fresh process
reads them too. Prints the figures (`pytest -s`) that docs/scaling-out.md quotes.
"""

from __future__ import annotations

import time

import pytest
import requests

from tests.deploy.test_replicas import POLYGON, PROJECT, TASKS, click, images, postgres, regions  # noqa: F401
from tests.support.replicas import replica_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(postgres, images, tmp_path_factory):  # noqa: F811 - the fixtures imported above
    folder = tmp_path_factory.mktemp("replicas-store")
    env = {"IMAGE_HOSTS": images, "EMBEDDING_STORE_DIR": str(folder / "store")}
    with replica_cluster(postgres.url, env, folder) as running:
        running.images = images
        yield running


def test_a_lost_replicas_tasks_run_no_encoder_on_the_survivors_nor_back_on_it(shared):
    cluster = shared
    setup = requests.post(f"{cluster.url}/setup", json={"project": PROJECT, "extra_params": POLYGON}, timeout=30)
    assert setup.status_code == 200, setup.text
    homes = {}
    for task in TASKS:
        tag, status, answer = click(cluster, task)
        assert status == 200, (task, status, answer)
        regions(answer)
        homes[task] = cluster.route_of(tag).server
    assert sum(cluster.encoder_runs().values()) == len(TASKS), "each task's image encoded once"
    victim = max(cluster.replicas, key=lambda r: sum(home == r.name for home in homes.values())).name
    its_tasks = [task for task in TASKS if homes[task] == victim]
    before = {name: runs for name, runs in cluster.encoder_runs().items() if name != victim}
    down = cluster.watch_state(victim, "DOWN", cluster.state_changes(victim, "DOWN"))
    killed = cluster.replica(victim).kill()
    moved = []
    while "at" not in down or time.time() < down["at"] + 2:
        for task in its_tasks:
            sent = time.time()
            tag, status, answer = click(cluster, task)
            assert status == 200, (task, status, answer)
            moved.append((sent - killed, task, time.time() - sent, cluster.route_of(tag).server))
        assert time.time() < killed + 300, "HAProxy never marked the dead replica DOWN"
    after = {name: runs for name, runs in cluster.encoder_runs().items() if name != victim}
    assert after == before, "a survivor ran the encoder for a moved task"
    assert all(server != victim for *_, server in moved)

    replica = cluster.replica(victim)
    ups = cluster.state_changes(victim, "UP")
    replica.launch()
    replica.wait()
    cluster.wait_state(victim, "UP", ups)
    for task in its_tasks:
        tag, status, answer = click(cluster, task)
        assert status == 200 and cluster.route_of(tag).server == victim, (task, status)
    back = cluster.replica(victim).counts()
    assert back["encoder_runs"] == 0 and back["embedding_store"]["hits"] == len(its_tasks)
    print(
        f"\nshared store: {victim} (tasks {its_tasks}) killed; HAProxy DOWN at t={down['at'] - killed:+.2f} s;"
        f" encoder runs of the moved tasks on the survivors: {sum(after.values()) - sum(before.values())}"
        f"; back UP: its tasks returned, encoder runs in the fresh process: {back['encoder_runs']}"
        + "".join(
            f"\n  t={at:+.2f} s task {task}: {seconds * 1000:.0f} ms from {server}"
            for at, task, seconds, server in moved
        )
    )
