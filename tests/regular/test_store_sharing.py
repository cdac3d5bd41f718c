"""The embedding store under real gunicorn with the real SAM2 (hiera-t, untrained, CPU): the
other worker, a restarted server and a second server (a replica) on the same folder read the
features one process encoded, run no encoder, and answer exactly what the encoder run answered.

Which worker takes a connection is the kernel's choice; the test makes it certain by stopping
(SIGSTOP) the worker that encoded, so that only the other can accept the next click.
"""

from __future__ import annotations

import os
import signal

import pytest
import requests

from tests.support.prometheus import samples, value
from tests.support.scenes import DiscScene, label_config, point_context
from tests.support.servers import gunicorn_server, static_server

pytestmark = pytest.mark.slow

SCENE = DiscScene(1600, 1200, 800, 600, 180)
PROJECT = "5.1795599678"


def click(url: str, image: str, point=(800, 600)) -> list:
    body = {
        "tasks": [{"id": 1, "data": {"image": image}}],
        "project": PROJECT,
        "label_config": label_config("BrushLabels"),
        "params": {"context": point_context([point], SCENE.width, SCENE.height)},
    }
    answer = requests.post(f"{url}/predict", json=body, timeout=300, headers={"Connection": "close"})
    assert answer.status_code == 200, answer.text
    regions = answer.json()["results"][0]["result"]
    assert regions, "the click got regions"
    return [{k: v for k, v in region.items() if k != "id"} for region in regions]  # a region's id is new each time


def worker_view(url: str) -> dict:
    return requests.get(f"{url}/metrics?format=json", timeout=30, headers={"Connection": "close"}).json()


def totals(url: str) -> dict:
    return samples(requests.get(f"{url}/metrics", timeout=30).text)


@pytest.fixture
def scene(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    SCENE.write(images / "scene.jpg")
    with static_server(images) as host:
        yield f"http://{host}/scene.jpg", host


def backend_env(tmp_path, host: str, cache: str, store=None) -> dict:
    env = {"CACHE_DIR": str(tmp_path / cache), "MODEL_DIR": str(tmp_path / "models"), "IMAGE_HOSTS": host}
    if store is not None:
        env["EMBEDDING_STORE_DIR"] = str(store)
    return env


def test_the_other_worker_reads_the_store_instead_of_encoding(tmp_path, scene):
    image, host = scene
    with gunicorn_server(backend_env(tmp_path, host, "cache"), workers=2, threads=2, log_dir=tmp_path) as server:
        fresh = click(server.url, image)
        views = {}
        for _ in range(60):  # until both workers have answered once
            view = worker_view(server.url)
            views[view["pid"]] = view
            if len(views) == 2:
                break
        assert len(views) == 2, "the second worker never answered"
        (encoder,) = [pid for pid, view in views.items() if view["encoder_runs"] == 1]
        os.kill(encoder, signal.SIGSTOP)  # only the other worker accepts now
        try:
            served = click(server.url, image)
            other = worker_view(server.url)
        finally:
            os.kill(encoder, signal.SIGCONT)
        assert other["pid"] != encoder
        assert other["encoder_runs"] == 0 and other["embedding_store"]["hits"] == 1
        assert served == fresh, "the store's features give the encoder run's regions"
        scraped = totals(server.url)
        assert value(scraped, "sam2plus_encoder_runs_total") == 1
        assert value(scraped, "sam2plus_cache_lookups_total", cache="embedding_store", result="hit") == 1
        assert value(scraped, "sam2plus_embedding_store_read_seconds_count") == 1
        assert value(scraped, "sam2plus_embedding_store_bytes") > 16 << 20


def test_a_restarted_server_and_a_replica_on_the_same_folder_read_the_store(tmp_path, scene):
    image, host = scene
    store = tmp_path / "shared-store"
    first_env = backend_env(tmp_path, host, "cache1", store)
    with gunicorn_server(first_env, workers=1, threads=2, log_dir=tmp_path) as first:
        fresh = click(first.url, image)
        assert worker_view(first.url)["encoder_runs"] == 1
        with gunicorn_server(backend_env(tmp_path, host, "cache2", store), threads=2, log_dir=tmp_path) as replica:
            assert click(replica.url, image) == fresh
            view = worker_view(replica.url)
            assert view["encoder_runs"] == 0 and view["embedding_store"]["hits"] == 1
    with gunicorn_server(first_env, workers=1, threads=2, log_dir=tmp_path) as restarted:
        assert click(restarted.url, image) == fresh
        view = worker_view(restarted.url)
        assert view["encoder_runs"] == 0 and view["embedding_store"]["hits"] == 1
    assert len([p for p in store.iterdir() if p.suffix == ".emb"]) == 1
    assert not (tmp_path / "cache1" / "embeddings").exists(), "the store is where EMBEDDING_STORE_DIR says"
