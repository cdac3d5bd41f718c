"""A 100-megapixel JPEG through gunicorn and the real SAM2 (hiera-t, untrained, CPU).

Checks what the big-image path must guarantee whatever the weights: results sized and placed
in the original image, a repeated click served from the embedding cache, and a reduced-size
fullframe path. Timings and memory are the benchmark's business (python -m sam2plus.bench).
"""

from __future__ import annotations

import numpy as np
import pytest
import requests

from tests.support.scenes import DiscScene, brush_mask, label_config, point_context
from tests.support.servers import gunicorn_backend

pytestmark = pytest.mark.slow

SCENE = DiscScene(10240, 9800, 7000, 2500, 140)


@pytest.fixture(scope="module")
def big_backend(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    (root / "cache").mkdir()
    SCENE.write(root / "cache" / "big.jpg")
    with gunicorn_backend({"CACHE_DIR": str(root / "cache"), "MODEL_DIR": str(root / "models")}) as url:
        yield url


def _click(url, project, fmt):
    body = {"tasks": [{"data": {"image": "big.jpg"}}], "project": project, "label_config": label_config(fmt),
            "params": {"context": point_context([(SCENE.cx, SCENE.cy)], SCENE.width, SCENE.height)}}
    answer = requests.post(f"{url}/predict", json=body, timeout=300)
    assert answer.status_code == 200, answer.text
    return answer.json()["results"][0]["result"]


def test_subpatched_brush_on_a_100_megapixel_jpeg(big_backend):
    setup = {"project": "1.1", "extra_params": {"subpatching": {"patch_size": 1024}}}
    assert requests.post(f"{big_backend}/setup", json=setup, timeout=3).status_code == 200
    first = _click(big_backend, "1.1", "BrushLabels")
    again = _click(big_backend, "1.1", "BrushLabels")
    metrics = requests.get(f"{big_backend}/metrics", timeout=5).json()
    assert metrics["encoder_runs"] == 1 and metrics["embedding_cache"]["hits"] == 1
    assert [r["value"]["rle"] for r in first] == [r["value"]["rle"] for r in again]
    for region in first:
        mask = brush_mask(region)
        assert mask.shape == (SCENE.height, SCENE.width)
        ys, xs = np.nonzero(mask)
        # The patch is 1024 px around the click: nothing may land outside it.
        assert abs(xs.min() - SCENE.cx) <= 1024 and abs(xs.max() - SCENE.cx) <= 1024
        assert abs(ys.min() - SCENE.cy) <= 1024 and abs(ys.max() - SCENE.cy) <= 1024


def test_downscaled_fullframe_polygons_on_a_100_megapixel_jpeg(big_backend):
    setup = {"project": "2.1", "extra_params": {"fullframe_resize": 0.125, "return_format": {"type": "Polygon"}}}
    assert requests.post(f"{big_backend}/setup", json=setup, timeout=3).status_code == 200
    for region in _click(big_backend, "2.1", "Polygon"):
        assert region["type"] == "polygon"
        assert (region["original_width"], region["original_height"]) == (SCENE.width, SCENE.height)
        points = np.array(region["value"]["points"])
        assert ((points >= 0) & (points <= 100)).all() and len(points) <= 100
