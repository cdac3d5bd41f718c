"""The HTTP protocol of the backend (Label Studio 1.23.2's ML API), through Flask's test client.

The model is SAM2Plus itself around the `ColorRegionSegmenter` test double, so these run in
seconds; tests/regular/test_gunicorn.py repeats the essentials with gunicorn and real SAM2.
"""

from __future__ import annotations

import base64
import hashlib

import pytest

from model import SAM2Plus
from sam2plus.config import ServerConfig
from sam2plus.server import create_app
from tests.support.geometry_segmenter import ColorRegionSegmenter
from tests.support.scenes import DiscScene, label_config, point_context, rect_context

SCENE = DiscScene(1600, 1200, 700, 500, 120)
PROJECT = "7.1795599678"


@pytest.fixture
def backend(tmp_path):
    config = ServerConfig(cache_dir=str(tmp_path / "cache"), model_dir=str(tmp_path / "models"))
    (tmp_path / "cache").mkdir()
    SCENE.write(tmp_path / "cache" / "scene.jpg")
    model = SAM2Plus(config, segmenter=ColorRegionSegmenter())
    return create_app(model).test_client(), tmp_path / "cache"


def predict_body(fmt="BrushLabels", context=None, image="scene.jpg", **extra):
    return {"tasks": [{"id": 1, "data": {"image": image}}], "project": PROJECT, "label_config": label_config(fmt),
            "params": {"login": None, "password": None,
                       "context": context or rect_context(SCENE.box(), SCENE.width, SCENE.height)}, **extra}


def test_health_answers_up_on_both_paths(backend):
    client, _ = backend
    for path in ("/", "/health"):
        body = client.get(path).get_json()
        assert body["status"] == "UP" and body["model_class"] == "SAM2Plus"


def test_setup_stores_params_and_predict_uses_them(backend):
    client, _ = backend
    setup = client.post("/setup", json={"project": PROJECT, "schema": label_config("PolygonLabels"),
                                        "extra_params": {"subpatching": {"patch-size": 512},
                                                         "return-format": {"type": "polygonlabels"}}})
    assert setup.status_code == 200 and "model_version" in setup.get_json()
    result = client.post("/predict", json=predict_body("PolygonLabels")).get_json()["results"][0]["result"]
    assert [r["type"] for r in result] == ["polygonlabels"]
    assert result[0]["from_name"] == "output" and result[0]["value"]["polygonlabels"] == ["object"]


def test_empty_extra_params_behave_like_the_stock_backend(backend):
    client, _ = backend
    for empty in (None, {}, ""):
        assert client.post("/setup", json={"project": PROJECT, "extra_params": empty}).status_code == 200
        results = client.post("/predict", json=predict_body()).get_json()["results"]
        assert len(results) == 1 and [r["type"] for r in results[0]["result"]] == ["brushlabels"]
        assert results[0]["result"][0]["value"]["format"] == "rle"


def test_extra_params_as_a_json_string_are_accepted(backend):
    client, _ = backend
    answer = client.post("/setup", json={"project": PROJECT, "extra_params": '{"return_format": {"type": "Rectangle"}}'})
    assert answer.status_code == 200
    body = predict_body("Rectangle")
    assert [r["type"] for r in client.post("/predict", json=body).get_json()["results"][0]["result"]] == ["rectangle"]


def test_invalid_extra_params_are_refused_with_the_key_in_the_reason_phrase(backend):
    client, _ = backend
    answer = client.post("/setup", json={"project": PROJECT, "extra_params": {"subpatching": {"patch_sise": 3}}})
    assert answer.status_code == 400
    assert "extra_params.subpatching.patch_sise" in answer.get_json()["error"]
    assert answer.status == f"400 {answer.get_json()['error']}", "Label Studio shows only the reason phrase"


def test_a_refused_setup_keeps_the_previous_settings(backend):
    client, _ = backend
    client.post("/setup", json={"project": PROJECT, "extra_params": {"return_format": {"type": "Rectangle"}}})
    refused = client.post("/setup", json={"project": PROJECT, "extra_params": {"return_format": {"type": "Rect"}}})
    assert refused.status_code == 400
    result = client.post("/predict", json=predict_body("Rectangle")).get_json()["results"][0]["result"]
    assert [r["type"] for r in result] == ["rectangle"]


def test_setup_refuses_a_schema_without_the_output_tag(backend):
    client, _ = backend
    answer = client.post("/setup", json={"project": PROJECT, "schema": label_config("BrushLabels"),
                                         "extra_params": {"return_format": {"type": "PolygonLabels"}}})
    assert answer.status_code == 400 and answer.get_json()["error"].startswith("schema: has no <PolygonLabels>")


def test_predict_without_context_returns_no_results(backend):
    client, _ = backend
    body = predict_body()
    body["params"]["context"] = None
    assert client.post("/predict", json=body).get_json()["results"] == []


@pytest.mark.parametrize("body, status, field", [
    ({"tasks": []}, 400, "tasks"),
    (predict_body(context=point_context([(1700, 100)], 1600, 1200)), 400, "context.result[0].value.x"),
    (predict_body(context={"result": [{"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 0, "height": 5}}]}),
     400, "context.result[0].value.width"),
    (predict_body(image="/etc/passwd"), 400, "tasks[0].data.image"),
    (predict_body(image="missing.jpg"), 400, "tasks[0].data.image"),
    (predict_body(label_config="<View>"), 400, "label_config"),
    ({**predict_body(), "project": {"id": 1}}, 400, "project"),
    ({**predict_body(), "params": {"context": "click"}}, 400, "context"),
])
def test_bad_predict_input_gets_a_4xx_naming_the_field(backend, body, status, field):
    client, cache = backend
    before = _snapshot(cache)
    answer = client.post("/predict", json=body)
    assert answer.status_code == status
    assert answer.get_json()["error"].startswith(field + ":"), answer.get_json()
    assert _snapshot(cache) == before, "a refused request changes no file"
    assert client.get("/health").status_code == 200


def test_a_body_that_is_not_json_is_a_400(backend):
    client, _ = backend
    answer = client.post("/predict", data="{not json", content_type="application/json")
    assert answer.status_code == 400 and answer.get_json()["error"].startswith("body:")


def test_unknown_routes_and_methods_answer_json(backend):
    client, _ = backend
    assert client.get("/nope").status_code == 404 and "error" in client.get("/nope").get_json()
    assert client.get("/predict").status_code == 405 and "error" in client.get("/predict").get_json()


def test_webhook_versions_and_metrics(backend):
    client, _ = backend
    assert client.post("/webhook", json={"action": "ANNOTATION_CREATED"}).status_code == 200
    version = client.get("/versions").get_json()
    assert version["versions"] == [version["model_version"]]
    client.post("/predict", json=predict_body())
    client.post("/predict", json={"tasks": []})
    metrics = client.get("/metrics").get_json()
    assert metrics["predictions"] == 1 and metrics["errors"] == {"400": 1}
    assert metrics["frame_cache"]["misses"] == 1


def test_artifacts_go_to_a_folder_of_their_own_and_leave_the_source_alone(backend):
    client, cache = backend
    source = cache / "scene.jpg"
    digest = hashlib.sha1(source.read_bytes()).hexdigest()
    answer = client.post("/predict", json=predict_body(artifacts=True)).get_json()
    folder = answer["artifacts"]
    names = {p.name for p in (cache / "artifacts").iterdir() for p in p.iterdir()}
    assert {"patch.jpg", "patch.prompt.jpg", "frame.prompt.jpg", "mask.patch.png",
            "patch.mask_overlay.jpg", "request.json"} <= names
    assert folder.startswith(str(cache / "artifacts"))
    assert hashlib.sha1(source.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in cache.iterdir()) == ["artifacts", "frames", "scene.jpg"]


def test_basic_auth_guards_every_route_but_health(tmp_path):
    config = ServerConfig(cache_dir=str(tmp_path), model_dir=str(tmp_path), basic_auth_user="ann", basic_auth_pass="s3cret")
    client = create_app(SAM2Plus(config, segmenter=ColorRegionSegmenter())).test_client()
    assert client.get("/health").status_code == 200
    assert client.post("/setup", json={"project": PROJECT}).status_code == 401
    assert client.get("/versions").status_code == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"ann:nope").decode()}
    assert client.get("/versions", headers=wrong).status_code == 401
    right = {"Authorization": "Basic " + base64.b64encode(b"ann:s3cret").decode()}
    assert client.post("/setup", json={"project": PROJECT}, headers=right).status_code == 200


def _snapshot(folder):
    return sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*"))
