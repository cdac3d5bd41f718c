"""A 100-megapixel JPEG through gunicorn and the real SAM2 (hiera-t, untrained, CPU).

Checks what the big-image path must guarantee whatever the weights: results sized and placed
in the original image, a repeated prompt served from the embedding cache with the same answer,
and a reduced-size fullframe path. Several prompts are sent and some must get regions
(tests/support/regions.py): a backend that answers nothing fails. Timings and memory are the
benchmark's business (python -m sam2plus.bench).
"""

from __future__ import annotations

import numpy as np
import pytest
import requests

from tests.support.regions import require_some
from tests.support.scenes import DiscScene, brush_mask, label_config, point_context, rect_context
from tests.support.servers import gunicorn_backend

pytestmark = pytest.mark.slow

SCENE = DiscScene(10240, 9800, 7000, 2500, 140)
PATCH = 1024
BACKGROUND = (2000, 7000)  # a click on the plain background, far from the disc
# Each prompt with its bounds (x0, y0, x1, y1) in image pixels.
PROMPTS = {
    "click": (point_context([(SCENE.cx, SCENE.cy)], SCENE.width, SCENE.height), (SCENE.cx, SCENE.cy) * 2),
    "rectangle": (rect_context(SCENE.box(), SCENE.width, SCENE.height), SCENE.box()),
    "background": (point_context([BACKGROUND], SCENE.width, SCENE.height), BACKGROUND * 2),
}


@pytest.fixture(scope="module")
def big_backend(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    (root / "cache").mkdir()
    SCENE.write(root / "cache" / "big.jpg")
    with gunicorn_backend({"CACHE_DIR": str(root / "cache"), "MODEL_DIR": str(root / "models")}, log_dir=root) as url:
        yield url


def _setup(url, project, extra_params):
    answer = requests.post(f"{url}/setup", json={"project": project, "extra_params": extra_params}, timeout=10)
    assert answer.status_code == 200, answer.text


def _predict(url, project, fmt, context):
    body = {
        "tasks": [{"data": {"image": "big.jpg"}}],
        "project": project,
        "label_config": label_config(fmt),
        "params": {"context": context},
    }
    answer = requests.post(f"{url}/predict", json=body, timeout=300)
    assert answer.status_code == 200, answer.text
    return answer.json()["results"][0]["result"]


def _cache(url) -> tuple[int, int]:
    metrics = requests.get(f"{url}/metrics?format=json", timeout=5).json()
    return metrics["encoder_runs"], metrics["embedding_cache"]["hits"]


def _content(regions):
    return [(region["type"], region["value"]) for region in regions]


def test_subpatched_brush_on_a_100_megapixel_jpeg(big_backend):
    _setup(big_backend, "1.1", {"subpatching": {"patch_size": PATCH}})
    answers = {name: _predict(big_backend, "1.1", "BrushLabels", context) for name, (context, _) in PROMPTS.items()}
    require_some(list(answers.values()))
    for name, regions in answers.items():
        assert len(regions) <= 1, "one brush region carries every blob"
        x0, y0, x1, y1 = PROMPTS[name][1]
        for region in regions:
            mask = brush_mask(region)
            assert mask.shape == (SCENE.height, SCENE.width)
            ys, xs = np.nonzero(mask)
            # The patch is 1024 px and holds the prompt: nothing may land farther from the prompt.
            assert x1 - PATCH <= xs.min() and xs.max() < x0 + PATCH, f"{name}: mask columns {xs.min()}..{xs.max()}"
            assert y1 - PATCH <= ys.min() and ys.max() < y0 + PATCH, f"{name}: mask rows {ys.min()}..{ys.max()}"

    name = next(name for name, regions in answers.items() if regions)  # repeat a prompt that got regions
    runs, hits = _cache(big_backend)
    again = _predict(big_backend, "1.1", "BrushLabels", PROMPTS[name][0])
    assert _cache(big_backend) == (runs, hits + 1), "the repeated prompt is served from the embedding cache"
    assert _content(again) == _content(answers[name])


def test_downscaled_fullframe_polygons_on_a_100_megapixel_jpeg(big_backend):
    _setup(big_backend, "2.1", {"fullframe_resize": 0.125, "return_format": {"type": "Polygon"}})
    per_prompt = [_predict(big_backend, "2.1", "Polygon", context) for context, _ in PROMPTS.values()]
    require_some(per_prompt)
    for regions in per_prompt:
        for region in regions:
            assert region["type"] == "polygon" and "polygon" not in region["value"]
            assert (region["original_width"], region["original_height"]) == (SCENE.width, SCENE.height)
            points = np.array(region["value"]["points"])
            assert points.shape[1] == 2 and 3 <= len(points) <= 100, "max_points defaults to 100"
            assert ((points >= 0) & (points <= 100)).all()
