"""The backend as Label Studio meets it: gunicorn, real HTTP, the real SAM2 (hiera-t, untrained, CPU).

Untrained weights give meaningless masks: these tests check the protocol and geometry facts
(types, names, labels, sizes, coordinates in 0..100), never mask quality. Each check of regions
runs over the answers to several prompts and requires that some prompt got regions
(tests/support/regions.py): a backend that answers nothing fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import requests

from tests.support.regions import require_some
from tests.support.scenes import DiscScene, brush_mask, label_config, point_context, rect_context
from tests.support.servers import gunicorn_backend, static_server

pytestmark = pytest.mark.slow

SCENE = DiscScene(2400, 1800, 1300, 900, 200)
PROJECT = "3.1795599678"
FORMATS = ("BrushLabels", "Brush", "PolygonLabels", "Polygon", "RectangleLabels", "Rectangle")
PROMPTS = {
    "rectangle": rect_context(SCENE.box(), SCENE.width, SCENE.height),
    "keypoints": point_context(
        [(1300, 900), (1350, 950), (200, 200)], SCENE.width, SCENE.height, positive=[True, True, False]
    ),
    "both": {
        "result": rect_context(SCENE.box(), SCENE.width, SCENE.height)["result"]
        + point_context([(1300, 900)], SCENE.width, SCENE.height)["result"]
    },
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("gunicorn")
    images = root / "images"
    images.mkdir()
    SCENE.write(images / "scene.jpg")
    with static_server(images) as host:
        env = {"CACHE_DIR": str(root / "cache"), "MODEL_DIR": str(root / "models"), "IMAGE_HOSTS": host}
        with gunicorn_backend(env, workers=2, threads=4, log_dir=root) as url:
            yield url, f"http://{host}/scene.jpg", env, root


def _predict(url, image, fmt, context, project=PROJECT):
    body = {
        "tasks": [{"id": 1, "data": {"image": image}}],
        "project": project,
        "label_config": label_config(fmt),
        "params": {"login": None, "password": None, "context": context},
    }
    answer = requests.post(f"{url}/predict", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == 1 and isinstance(results[0]["score"], float)
    return results[0]["result"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_prompt_kind_in_every_return_format(served, fmt):
    url, image, *_ = served
    setup = requests.post(
        f"{url}/setup",
        json={
            "project": PROJECT,
            "schema": label_config(fmt),
            "extra_params": {"subpatching": {"patch_size": 1024}, "return_format": {"type": fmt}},
        },
        timeout=3,
    )
    assert setup.status_code == 200, setup.text
    per_prompt = []
    for context in PROMPTS.values():
        regions = _predict(url, image, fmt, context)
        per_prompt.append(regions)
        for region in regions:
            assert region["type"] == fmt.lower() and region["from_name"] == "output" and region["to_name"] == "image"
            assert (region["original_width"], region["original_height"]) == (SCENE.width, SCENE.height)
            value = region["value"]
            assert (fmt.lower() in value) == fmt.endswith("Labels")
            if fmt.startswith("Brush"):
                assert brush_mask(region).shape == (SCENE.height, SCENE.width)
            elif fmt.startswith("Polygon"):
                points = np.array(value["points"])
                assert points.shape[1] == 2 and len(points) >= 3 and ((0 <= points) & (points <= 100)).all()
            else:
                assert 0 <= value["x"] <= value["x"] + value["width"] <= 100 + 1e-9
                assert 0 <= value["y"] <= value["y"] + value["height"] <= 100 + 1e-9
        if fmt.startswith("Brush"):
            assert len(regions) <= 1, "one brush region carries every blob"
    require_some(per_prompt, fmt)


def test_stock_project_returns_one_brushlabels_rle_of_the_image_size(served):
    url, image, *_ = served
    per_prompt = [
        _predict(url, image, "BrushLabels", context, project="4.1795590000")  # never set up
        for context in PROMPTS.values()
    ]
    for regions in per_prompt:
        assert len(regions) <= 1, "one brush region carries every blob"
        for region in regions:
            assert region["type"] == "brushlabels" and brush_mask(region).shape == (SCENE.height, SCENE.width)
    require_some(per_prompt)


def test_bad_input_is_a_4xx_and_the_server_keeps_serving(served):
    url, image, *_ = served
    bad = requests.post(
        f"{url}/predict",
        json={
            "tasks": [{"data": {"image": "http://example.invalid/x.jpg"}}],
            "project": "5.1795590000",
            "label_config": label_config(),
            "params": {"context": PROMPTS["rectangle"]},
        },
        timeout=10,
    )
    assert bad.status_code == 400 and "tasks[0].data.image" in bad.json()["error"]
    assert "example.invalid" in bad.reason
    assert requests.get(f"{url}/health", timeout=2).status_code == 200


def test_a_restart_keeps_the_projects_extra_params(served):
    url, image, env, root = served
    project = "9.1795599999"
    answer = requests.post(
        f"{url}/setup",
        json={
            "project": project,
            "schema": label_config("Rectangle"),
            "extra_params": {"return_format": {"type": "Rectangle"}},
        },
        timeout=3,
    )
    assert answer.status_code == 200
    with gunicorn_backend(env, workers=1, threads=2, log_dir=root) as second:  # a new process on the same MODEL_DIR
        per_prompt = [_predict(second, image, "Rectangle", context, project=project) for context in PROMPTS.values()]
        for regions in per_prompt:
            assert all(region["type"] == "rectangle" and region["from_name"] == "output" for region in regions)
        require_some(per_prompt)
        body = {
            "tasks": [{"data": {"image": image}}],
            "project": project,
            "label_config": label_config("BrushLabels"),
            "params": {"context": PROMPTS["rectangle"]},
        }
        refused = requests.post(f"{second}/predict", json=body, timeout=120)
        assert refused.status_code == 400 and "<Rectangle>" in refused.json()["error"], (
            "the stored Rectangle format, not the stock BrushLabels, decides the output tag"
        )


def test_missing_checkpoint_stops_the_server_with_the_path_and_the_remedy(tmp_path):
    env = {
        "CACHE_DIR": str(tmp_path),
        "MODEL_DIR": str(tmp_path),
        "MODEL_CHECKPOINT": "sam2.1_hiera_tiny.pt",
        "CHECKPOINT_DIR": str(tmp_path / "ckpts"),
    }
    with pytest.raises(RuntimeError) as failure:
        with gunicorn_backend(env, timeout=60, log_dir=tmp_path):
            pass
    message = str(failure.value)
    assert str(tmp_path / "ckpts" / "sam2.1_hiera_tiny.pt") in message and "download-checkpoints" in message
