"""Concurrency: simultaneous clients on distinct images each get the answer they get alone.

gunicorn with 8 threads and the real SAM2 (hiera-t, untrained, CPU), in two set-ups:
- one worker whose caches are too small to hold anything, so every request decodes and encodes
  its own image while the others do the same;
- two workers sharing the frame store (and the settings store), so requests read frames that
  the other worker may have decoded.
A request that saw another request's embedding or frame would answer differently.
"""

from __future__ import annotations

import threading

import pytest
import requests

from tests.support.scenes import DiscScene, label_config, point_context, rect_context
from tests.support.servers import gunicorn_backend

pytestmark = pytest.mark.slow

CLIENTS = 8
FORMATS = ("BrushLabels", "PolygonLabels", "RectangleLabels", "Brush")


def _scene(i: int) -> DiscScene:
    return DiscScene(1400 + 97 * i, 1100 + 53 * i, 300 + 90 * i, 350 + 60 * i, 80 + 15 * i)


def _request(i: int) -> dict:
    scene = _scene(i)
    fmt = FORMATS[i % len(FORMATS)]
    context = (rect_context(scene.box(), scene.width, scene.height) if i % 2 == 0
               else point_context([(scene.cx, scene.cy)], scene.width, scene.height))
    return {"tasks": [{"id": i, "data": {"image": f"scene-{i}.jpg"}}], "project": f"{i}.1795599678",
            "label_config": label_config(fmt), "params": {"context": context}}


def _comparable(answer: dict) -> list:
    """The answer without the random region ids."""
    return [{k: v for k, v in region.items() if k != "id"} for region in answer["results"][0]["result"]]


@pytest.mark.parametrize("workers, frame_cache_mb", [(1, 1), (2, 4096)], ids=["nothing-cached", "two-workers-shared-frames"])
def test_simultaneous_clients_on_distinct_images_get_their_own_answers(tmp_path, workers, frame_cache_mb):
    cache = tmp_path / "cache"
    cache.mkdir()
    for i in range(CLIENTS):
        _scene(i).write(cache / f"scene-{i}.jpg")
    env = {"CACHE_DIR": str(cache), "MODEL_DIR": str(tmp_path / "models"),
           "EMBEDDING_CACHE_MB": "1", "FRAME_CACHE_MB": str(frame_cache_mb)}
    with gunicorn_backend(env, workers=workers, threads=CLIENTS) as url:
        for i in range(CLIENTS):
            fmt = FORMATS[i % len(FORMATS)]
            setup = {"project": f"{i}.1795599678", "extra_params": {"subpatching": {"patch_size": 512 + 64 * i},
                                                                    "return_format": {"type": fmt}}}
            assert requests.post(f"{url}/setup", json=setup, timeout=3).status_code == 200
        alone = [requests.post(f"{url}/predict", json=_request(i), timeout=120).json() for i in range(CLIENTS)]

        together: list = [None] * CLIENTS
        start = threading.Barrier(CLIENTS)

        def client(i: int) -> None:
            start.wait()
            together[i] = requests.post(f"{url}/predict", json=_request(i), timeout=300).json()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        metrics = requests.get(f"{url}/metrics?format=json", timeout=5).json()

    if workers == 1:  # /metrics speaks for the worker that answers it
        assert metrics["encoder_runs"] == 2 * CLIENTS, "every request encoded its own image (nothing cached)"
    else:
        assert len(list((cache / "frames").glob("*.rgb"))) == CLIENTS, "one stored frame per image, for both workers"
    assert len({str(_comparable(a)) for a in alone}) == CLIENTS, "distinct images give distinct answers"
    for i in range(CLIENTS):
        assert _comparable(together[i]) == _comparable(alone[i]), f"client {i} got another answer under load"
        assert together[i]["results"][0]["score"] == alone[i]["results"][0]["score"]
