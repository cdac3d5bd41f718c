"""Concurrency: simultaneous clients each get the answer they get alone.

gunicorn with 8 threads and the real SAM2 (hiera-t, untrained, CPU), in three set-ups:
- one worker whose caches are too small to hold anything, so every request decodes and encodes
  its own image while the others do the same;
- two workers sharing the frame store (and the settings store), so requests read frames that
  the other worker may have decoded;
- 8 clients on 4 images, mixing clicks on cached embeddings (decoder only, which run beside
  encoder runs) with clicks that need an encoder run, two of them on one window at once.
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
    context = (
        rect_context(scene.box(), scene.width, scene.height)
        if i % 2 == 0
        else point_context([(scene.cx, scene.cy)], scene.width, scene.height)
    )
    return {
        "tasks": [{"id": i, "data": {"image": f"scene-{i}.jpg"}}],
        "project": f"{i}.1795599678",
        "label_config": label_config(fmt),
        "params": {"context": context},
    }


def _comparable(answer: dict) -> list:
    """The answer without the random region ids."""
    return [{k: v for k, v in region.items() if k != "id"} for region in answer["results"][0]["result"]]


def _post(url: str, body: dict) -> dict:
    answer = requests.post(f"{url}/predict", json=body, timeout=300)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _all_at_once(url: str, bodies: list[dict]) -> list[dict]:
    """Each body posted by a client of its own, all released at the same moment."""
    answers: list = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def client(i: int) -> None:
        start.wait()
        answers[i] = _post(url, bodies[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


@pytest.mark.parametrize(
    "workers, frame_cache_mb", [(1, 1), (2, 4096)], ids=["nothing-cached", "two-workers-shared-frames"]
)
def test_simultaneous_clients_on_distinct_images_get_their_own_answers(tmp_path, workers, frame_cache_mb):
    cache = tmp_path / "cache"
    cache.mkdir()
    for i in range(CLIENTS):
        _scene(i).write(cache / f"scene-{i}.jpg")
    env = {
        "CACHE_DIR": str(cache),
        "MODEL_DIR": str(tmp_path / "models"),
        "EMBEDDING_CACHE_MB": "1",
        "EMBEDDING_STORE_MB": "0",  # nothing cached on disk either (tests/regular/test_store_sharing.py has the store)
        "FRAME_CACHE_MB": str(frame_cache_mb),
    }
    with gunicorn_backend(env, workers=workers, threads=CLIENTS) as url:
        for i in range(CLIENTS):
            fmt = FORMATS[i % len(FORMATS)]
            setup = {
                "project": f"{i}.1795599678",
                "extra_params": {"subpatching": {"patch_size": 512 + 64 * i}, "return_format": {"type": fmt}},
            }
            assert requests.post(f"{url}/setup", json=setup, timeout=3).status_code == 200
        alone = [_post(url, _request(i)) for i in range(CLIENTS)]
        together = _all_at_once(url, [_request(i) for i in range(CLIENTS)])
        metrics = requests.get(f"{url}/metrics?format=json", timeout=5).json()

    if workers == 1:  # /metrics speaks for the worker that answers it
        assert metrics["encoder_runs"] == 2 * CLIENTS, "every request encoded its own image (nothing cached)"
    else:
        assert len(list((cache / "frames").glob("*.rgb"))) == CLIENTS, "one stored frame per image, for both workers"
    assert len({str(_comparable(a)) for a in alone}) == CLIENTS, "distinct images give distinct answers"
    for i in range(CLIENTS):
        assert _comparable(together[i]) == _comparable(alone[i]), f"client {i} got another answer under load"
        assert together[i]["results"][0]["score"] == alone[i]["results"][0]["score"]


IMAGES = 4


def _mixed_request(k: int) -> dict:
    """Client k clicks image k % 4: a rectangle around its disc, or (k >= 4) a positive point at the
    disc's centre and a negative one beside it. Both prompts are centred on the disc, so both get
    the same window whichever comes first, and the answer is the same in any order."""
    scene = _scene(k % IMAGES)
    if k < IMAGES:
        context = rect_context(scene.box(), scene.width, scene.height)
    else:
        d = scene.radius * 0.7
        context = point_context(
            [(scene.cx - d, scene.cy), (scene.cx + d, scene.cy)], scene.width, scene.height, positive=[True, False]
        )
    return {
        "tasks": [{"id": k, "data": {"image": f"scene-{k % IMAGES}.jpg"}}],
        "project": "mixed.1795599678",
        "label_config": label_config(),
        "params": {"context": context},
    }


def _mixed_backend(tmp_path, name: str):
    cache = tmp_path / name / "cache"
    cache.mkdir(parents=True)
    for i in range(IMAGES):
        _scene(i).write(cache / f"scene-{i}.jpg")
    return gunicorn_backend(
        {"CACHE_DIR": str(cache), "MODEL_DIR": str(tmp_path / name / "models")}, workers=1, threads=CLIENTS
    )


def test_clicks_on_cached_embeddings_and_encoder_runs_mixed_each_get_their_serial_answer(tmp_path):
    setup = {"project": "mixed.1795599678", "extra_params": {"subpatching": {"patch_size": 512}}}
    with _mixed_backend(tmp_path, "serial") as url:
        assert requests.post(f"{url}/setup", json=setup, timeout=3).status_code == 200
        serial = [_post(url, _mixed_request(k)) for k in range(CLIENTS)]
        metrics = requests.get(f"{url}/metrics?format=json", timeout=5).json()
        assert metrics["encoder_runs"] == IMAGES, "the points reuse the rectangle's window"

    with _mixed_backend(tmp_path, "together") as url:
        assert requests.post(f"{url}/setup", json=setup, timeout=3).status_code == 200
        for k in (0, 1):  # images 0 and 1 are encoded before: their clicks run only the decoder
            assert _comparable(_post(url, _mixed_request(k))) == _comparable(serial[k])
        together = _all_at_once(url, [_mixed_request(k) for k in range(CLIENTS)])
        metrics = requests.get(f"{url}/metrics?format=json", timeout=5).json()

    assert metrics["encoder_runs"] == IMAGES, "two clients wanting one window at once encode it once"
    assert len({str(_comparable(a)) for a in serial[:IMAGES]}) == IMAGES, "distinct images give distinct answers"
    assert any(_comparable(a) for a in serial), "some clicks found regions"
    for k in range(CLIENTS):
        assert _comparable(together[k]) == _comparable(serial[k]), f"client {k} got another answer under load"
        assert together[k]["results"][0]["score"] == serial[k]["results"][0]["score"]
