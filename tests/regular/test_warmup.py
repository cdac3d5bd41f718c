"""Warm-up when a task opens: /predict without a context answers at once and prepares the image.

SAM2Plus around the `ColorRegionSegmenter` test double (it counts encoder runs as SAM2 would),
through Flask's test client; the real SAM2 and a real Label Studio do the same in
tests/e2e/test_warmup.py.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

import pytest

from model import SAM2Plus
from sam2plus.config import ServerConfig
from sam2plus.server import create_app
from sam2plus.warmup import Warmup
from tests.support.faults import dripping_server
from tests.support.geometry_segmenter import ColorRegionSegmenter
from tests.support.scenes import DiscScene, label_config, point_context

SCENE = DiscScene(1600, 1200, 700, 500, 120)
PROJECT = "3.1795599678"
WAIT = 30


@pytest.fixture
def backend(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    SCENE.write(cache / "scene.jpg")
    DiscScene(1600, 1200, 300, 300, 90).write(cache / "other.jpg")
    model = SAM2Plus(
        ServerConfig(cache_dir=str(cache), model_dir=str(tmp_path / "models")), segmenter=ColorRegionSegmenter()
    )
    return model, create_app(model).test_client(), cache


def _setup(client, extra_params):
    answer = client.post("/setup", json={"project": PROJECT, "schema": label_config(), "extra_params": extra_params})
    assert answer.status_code == 200, answer.get_json()


def _open(client, *images, context=None):
    """What Label Studio sends when a task opens: the task, and params.context null."""
    body = {
        "tasks": [{"id": i + 1, "data": {"image": image}} for i, image in enumerate(images)],
        "project": PROJECT,
        "label_config": label_config(),
        "params": {"login": None, "password": None, "context": context},
    }
    answer = client.post("/predict", json=body)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["results"] == []
    return answer


def _click(client, image="scene.jpg"):
    body = {
        "tasks": [{"id": 1, "data": {"image": image}}],
        "project": PROJECT,
        "label_config": label_config(),
        "params": {"context": point_context([(SCENE.cx, SCENE.cy)], SCENE.width, SCENE.height)},
    }
    answer = client.post("/predict", json=body)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["results"][0]["result"]


def _frames(cache):
    return sorted(p.name for p in (cache / "frames").glob("*.rgb"))


def _digest(path):
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_opening_a_task_stores_its_frame_and_encodes_the_full_frame_without_subpatching(backend):
    model, client, cache = backend
    _setup(client, None)
    _open(client, "scene.jpg")
    assert model.warmup.wait(WAIT)
    assert _frames(cache) == [f"{_digest(cache / 'scene.jpg')}-1600x1200.rgb"]
    segmenter, frames = model.pipeline.segmenter, model.pipeline.frames
    assert (model.warmup.queued, model.warmup.done, model.warmup.failed) == (1, 1, 0)
    assert segmenter.encoder_runs == 1 and frames.misses == 1
    assert _click(client), "the disc is found"
    assert segmenter.encoder_runs == 1, "the first click ran no encoder"
    assert (frames.misses, frames.hits) == (1, 1), "the first click ran no decode"


def test_with_subpatching_only_the_frame_is_prepared_at_its_resized_size(backend):
    model, client, cache = backend
    _setup(client, {"fullframe_resize": 0.5, "subpatching": {"patch_size": 256}})
    _open(client, "scene.jpg")
    assert model.warmup.wait(WAIT)
    assert _frames(cache) == [f"{_digest(cache / 'scene.jpg')}-800x600.rgb"]
    assert model.pipeline.segmenter.encoder_runs == 0, "the window depends on the click"
    _click(client)
    assert model.pipeline.frames.misses == 1 and model.pipeline.segmenter.encoder_runs == 1


def test_a_batch_warms_every_task_image(backend):
    model, client, cache = backend
    _setup(client, {"subpatching": {}})
    _open(client, "scene.jpg", "other.jpg")
    assert model.warmup.wait(WAIT)
    assert model.warmup.done == 2 and len(_frames(cache)) == 2


def test_the_answer_comes_at_once_and_clicks_go_first(backend):
    """While a click is in flight the warm-up waits; the open itself never waits for it."""
    model, client, cache = backend
    _setup(client, {"subpatching": {}})
    with model.warmup.click():  # a click in flight
        _open(client, "scene.jpg")
        assert not model.warmup.wait(0.5), "the warm-up started while a click was in flight"
        assert model.warmup.done == 0 and _frames(cache) == []
    assert model.warmup.wait(WAIT) and model.warmup.done == 1 and len(_frames(cache)) == 1


def test_the_queue_is_bounded_and_drops_the_rest_with_a_log_line(backend, caplog):
    model, client, cache = backend
    model.warmup = Warmup(model.pipeline, max_queued=2)
    _setup(client, {"subpatching": {}})
    caplog.set_level(logging.WARNING, "sam2plus.warmup")
    with model.warmup.click():
        _open(client, "scene.jpg", "other.jpg", "scene.jpg", "other.jpg")
        assert (model.warmup.queued, model.warmup.dropped) == (2, 2)
        _open(client, "scene.jpg")  # the same task of the same project is queued once
        assert (model.warmup.queued, model.warmup.dropped) == (2, 2)
    assert model.warmup.wait(WAIT) and model.warmup.done == 2
    assert sum("warm-up dropped" in record.getMessage() for record in caplog.records) == 2


def test_a_failing_warm_up_is_logged_and_the_server_keeps_serving(backend, caplog):
    model, client, cache = backend
    _setup(client, {"subpatching": {}})
    caplog.set_level(logging.WARNING, "sam2plus.warmup")
    _open(client, "missing.jpg")
    _open(client, "scene.jpg")
    assert model.warmup.wait(WAIT)
    assert (model.warmup.failed, model.warmup.done) == (1, 1)
    assert any("warm-up failed" in r.getMessage() and "missing.jpg" in r.getMessage() for r in caplog.records)
    assert _click(client)


@pytest.mark.parametrize("context", [{"result": []}, {}])
def test_only_a_null_context_warms_up(backend, context):
    """An empty result list is the editor's last prompt deleted: nothing to prepare."""
    model, client, cache = backend
    _open(client, "scene.jpg", context=context)
    assert model.warmup.wait(WAIT) and model.warmup.queued == 0 and _frames(cache) == []


def test_an_unreadable_project_is_no_error_when_a_task_opens(backend):
    model, client, _ = backend
    body = {
        "tasks": [{"id": 1, "data": {"image": "scene.jpg"}}],
        "project": {"id": 1},
        "label_config": label_config(),
        "params": {"context": None},
    }
    answer = client.post("/predict", json=body)
    assert answer.status_code == 200 and answer.get_json()["results"] == []
    assert model.warmup.queued == 0


def test_warm_ups_never_block_clicks_on_other_images(backend):
    """A click on another image goes through while a warm-up is held inside one of its stages."""
    model, client, cache = backend
    _setup(client, {"subpatching": {}})
    inside, release = threading.Event(), threading.Event()
    frame = model.pipeline.frame

    def held_frame(local, *args):
        if local.path.name == "other.jpg":
            inside.set()
            release.wait(WAIT)
        return frame(local, *args)

    model.pipeline.frame = held_frame
    _open(client, "other.jpg")
    assert inside.wait(WAIT)
    assert _click(client, "scene.jpg")
    release.set()
    assert model.warmup.wait(WAIT) and model.warmup.done == 1


FETCH_TIMEOUT = 1.5


@pytest.fixture
def dripping(tmp_path):
    """The backend with FETCH_TIMEOUT=1.5 and a host that sends a byte every half second (never
    a read timeout), allowed in IMAGE_HOSTS; yields (model, client, host)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    SCENE.write(cache / "scene.jpg")
    with dripping_server(interval=0.5) as drip:
        config = ServerConfig(
            cache_dir=str(cache),
            model_dir=str(tmp_path / "models"),
            image_hosts=(drip.host,),
            fetch_timeout=FETCH_TIMEOUT,
        )
        model = SAM2Plus(config, segmenter=ColorRegionSegmenter())
        yield model, create_app(model).test_client(), drip


def test_a_warm_up_behind_a_dripping_download_waits_no_longer_than_the_deadline(dripping, caplog):
    """Issue 21: the warm-up thread downloading from a dripping host held every warm-up behind it
    for minutes; its download now ends at FETCH_TIMEOUT and the next warm-up runs."""
    model, client, drip = dripping
    _setup(client, {"subpatching": {}})
    caplog.set_level(logging.WARNING, "sam2plus.warmup")
    started = time.monotonic()
    _open(client, f"http://{drip.host}/drip.png", "scene.jpg")
    assert model.warmup.wait(FETCH_TIMEOUT + 3), "the warm-ups ended"
    assert time.monotonic() - started < FETCH_TIMEOUT + 3
    assert (model.warmup.failed, model.warmup.done) == (1, 1)
    assert any("warm-up failed" in r.getMessage() and "timed out" in r.getMessage() for r in caplog.records)


def test_a_warm_up_behind_a_click_on_a_dripping_host_waits_no_longer_than_the_deadline(dripping):
    """Warm-ups wait for clicks in flight; a click whose download drips ends at FETCH_TIMEOUT
    (a 422 naming the timeout), and the warm-up waiting behind it runs then."""
    model, client, drip = dripping
    _setup(client, {"subpatching": {}})
    answers = []
    body = {
        "tasks": [{"id": 9, "data": {"image": f"http://{drip.host}/drip.png"}}],
        "project": PROJECT,
        "label_config": label_config(),
        "params": {"context": point_context([(SCENE.cx, SCENE.cy)], SCENE.width, SCENE.height)},
    }
    started = time.monotonic()
    click = threading.Thread(target=lambda: answers.append(client.post("/predict", json=body)))
    click.start()
    assert drip.started.acquire(timeout=WAIT), "the click is downloading"
    _open(client, "scene.jpg")
    assert model.warmup.wait(FETCH_TIMEOUT + 3) and model.warmup.done == 1
    assert time.monotonic() - started < FETCH_TIMEOUT + 3
    click.join(WAIT)
    assert answers[0].status_code == 422 and "timed out" in answers[0].get_json()["error"]


# ---------------------------------------------------------------- a grid of windows at warm-up


@pytest.mark.parametrize(
    ("frame", "patch", "mode"),
    [((1600, 1200), 512, "default"), ((3000, 700), 1024, "default"), ((1000, 2500), 768, "padding")],
)
def test_every_click_falls_inside_a_grid_window_by_the_reuse_rule(frame, patch, mode):
    """Points all over the frame (its corners and edges too) are each served by a grid window."""
    from sam2plus.frames import grid_windows, plan_frame
    from sam2plus.params import parse_extra_params
    from sam2plus.prompts import parse_prompt

    params = parse_extra_params({"subpatching": {"patch_size": patch, "mode": mode, "warm_grid": True}})
    windows = [fm.window for fm in grid_windows(frame, params)]
    stride = patch - 2 * -(-patch // 8)
    per_side = [1 + max(0, -(-(side - patch) // stride)) for side in frame]
    assert len(windows) == per_side[0] * per_side[1]
    width, height = frame
    xs = [0.5, width / 3, width / 2, width - 0.5, *range(7, width, 97)]
    ys = [0.5, height / 3, height - 0.5, *range(5, height, 89)]
    for x in xs:
        for y in ys:
            prompt = parse_prompt(point_context([(x, y)], width, height))
            served = plan_frame(frame, prompt, params, windows)
            assert served.reused and served.window in windows, (x, y)


def test_a_grid_project_is_encoded_at_warm_up_and_its_clicks_run_no_encoder(backend):
    model, client, cache = backend
    _setup(client, {"subpatching": {"patch_size": 512, "warm_grid": True}})
    _open(client, "scene.jpg")
    assert model.warmup.wait(WAIT) and model.warmup.done == 1
    runs = model.pipeline.segmenter.encoder_runs
    assert runs == 4 * 3  # 1600x1200 in 512-px windows 384 px apart (an inset of 64 each side): 4 x 3
    for point in [(SCENE.cx, SCENE.cy), (10, 10), (1590, 1190), (800, 20)]:
        body = {
            "tasks": [{"id": 1, "data": {"image": "scene.jpg"}}],
            "project": PROJECT,
            "label_config": label_config(),
            "params": {"context": point_context([point], SCENE.width, SCENE.height)},
        }
        assert client.post("/predict", json=body).status_code == 200
    assert model.pipeline.segmenter.encoder_runs == runs, "every click found its grid window"
    _open(client, "scene.jpg")
    assert model.warmup.wait(WAIT) and model.pipeline.segmenter.encoder_runs == runs, "held: nothing encoded again"


def test_warm_grid_is_validated_like_the_rest(backend):
    _, client, _ = backend
    answer = client.post(
        "/setup", json={"project": PROJECT, "extra_params": {"subpatching": {"warm_grid": "yes"}, "prefetch": 99}}
    )
    assert answer.status_code == 400
    text = answer.get_json()["error"]
    assert "extra_params.subpatching.warm_grid" in text and "extra_params.prefetch" in text
