"""Request bodies made to cost memory, and the values they carry: each bounded before it is held.

- MAX_JSON_ITEMS: the arrays, objects and commas of a body are counted in its bytes before it
  is parsed (`sam2plus.jsonbody`); the issue's reproduction (8 MB of empty objects grew a
  gunicorn worker by ~300 MB before MAX_TASKS refused it) is now a 413 that leaves the worker's
  peak memory where it was.
- Label configs with a DOCTYPE (where entities are declared) are refused before they are parsed.
- Project ids longer than MAX_PROJECT_ID are refused, so they never reach the settings store.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import requests

from model import MAX_PROJECT_ID
from sam2plus.config import ServerConfig
from sam2plus.jsonbody import count_items
from sam2plus.rle import encode_brush_rle
from tests.support.inprocess import PROJECT, make_backend, predict_body
from tests.support.scenes import label_config
from tests.support.servers import gunicorn_server

EMPTY_OBJECTS = b'{"tasks": [' + b", ".join([b"{}"] * ((8 << 20) // 4)) + b"]}"  # the 8 MB body


def _peak_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024


def _brush_task(regions: int) -> dict:
    """A task as Label Studio sends it in /predict: an annotation of `regions` brush regions, each
    the real RLE of a disc filling a 4000x4000 image (19104 numbers)."""
    yy, xx = np.ogrid[:4000, :4000]
    rle = encode_brush_rle((xx - 2000) ** 2 + (yy - 2000) ** 2 < 1333**2, 0, 0, 4000, 4000)
    region = {"type": "brushlabels", "from_name": "output", "to_name": "image", "original_width": 4000}
    value = {"format": "rle", "rle": rle, "brushlabels": ["object"]}
    result = [{**region, "id": f"r{n}", "value": value} for n in range(regions)]
    return {"id": 1, "data": {"image": "scene.jpg"}, "annotations": [{"id": 1, "result": result}]}


def test_items_are_counted_in_the_bytes():
    assert count_items(b'{"a": [1, 2, {"b": []}]}') == 6  # 2 objects, 2 arrays, 2 commas
    assert count_items(b'"data:image/png;base64,iVBORw0KGgo="') == 1  # a base64 image has one comma
    assert ServerConfig().max_json_items == 1_000_000
    assert ServerConfig.from_env({"MAX_JSON_ITEMS": "20"}).max_json_items == 20


@pytest.mark.parametrize("route", ["/predict", "/setup", "/webhook"])
def test_a_body_of_more_items_than_max_json_items_is_a_413_before_it_is_parsed(tmp_path, route):
    client, _ = make_backend(tmp_path, max_json_items=1000)
    body = json.dumps({"tasks": [{}] * 1000}).encode()  # 1001 objects, 1 array, 999 commas
    answer = client.post(route, data=body, content_type="application/json")
    assert answer.status_code == 413
    assert answer.get_json()["error"].startswith("body: 2001 arrays, objects and commas exceed MAX_JSON_ITEMS=1000")
    assert client.get("/health").status_code == 200


def test_the_default_fits_what_label_studio_sends(tmp_path):
    """A task opening whose task carries 40 brush regions of a 16 MP image (764160 RLE numbers,
    ~3.5 MB of JSON) is within the default and answered; a click with them too."""
    client, _ = make_backend(tmp_path)
    body = predict_body(tasks=[_brush_task(40)])
    data = json.dumps(body).encode()
    assert 700_000 < count_items(data) < ServerConfig().max_json_items
    assert client.post("/predict", data=data, content_type="application/json").status_code == 200


@pytest.mark.slow
def test_under_gunicorn_the_empty_objects_body_is_refused_without_growing_the_worker(tmp_path):
    """The issue's reproduction, 8 MB of `{}` (+300 MB of peak memory before), against a real worker."""
    (tmp_path / "cache").mkdir()
    env = {"CACHE_DIR": str(tmp_path / "cache"), "MODEL_DIR": str(tmp_path / "models")}
    with gunicorn_server(env, threads=2, timeout=60, log_dir=tmp_path, app="tests.support.geometry_app:app") as server:
        (worker,) = server.workers()
        before = _peak_mb(worker)
        answer = requests.post(
            f"{server.url}/predict", data=EMPTY_OBJECTS, headers={"Content-Type": "application/json"}, timeout=60
        )
        grown = _peak_mb(worker) - before
        assert answer.status_code == 413 and "MAX_JSON_ITEMS=1000000" in answer.json()["error"]
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
    assert grown < 60, f"the worker's peak memory grew by {grown:.0f} MB"  # the body itself is 8 MB


# --- label configs -------------------------------------------------------------------------------

ENTITIES = (
    '<!DOCTYPE View [<!ENTITY a "' + "x" * 250 + '">]><View><Image name="image" value="$image"/>'
    '<BrushLabels name="output" toName="image">'
    + "".join('<Label value="' + "&a;" * 80 + '"/>' for _ in range(4000))
    + "</BrushLabels></View>"
)  # the reproduction: 1 MB of config, 80 MB of labels once its entities are expanded


@pytest.mark.parametrize(
    "route,field,body",
    [
        ("/setup", "schema", {"project": PROJECT, "schema": ENTITIES, "extra_params": None}),
        ("/predict", "label_config", predict_body(label_config=ENTITIES)),
        ("/predict", "label_config", predict_body(label_config="<!doctype v>" + label_config())),
        ("/predict", "label_config", predict_body(label_config=label_config() + '<!ENTITY a "b">')),
    ],
)
def test_a_label_config_with_a_doctype_is_a_400_naming_it(tmp_path, route, field, body):
    client, _ = make_backend(tmp_path)
    answer = client.post(route, json=body)
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error.startswith(f"{field}: has a <!DOCTYPE> declaration") or error.startswith(f"{field}: has a <!ENTITY>")
    assert len(answer.get_data()) < 1000, "nothing of the config is copied into the answer"


# --- project ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/setup", "/predict"])
def test_a_project_id_past_max_project_id_is_a_400_and_never_stored(tmp_path, route):
    client, _ = make_backend(tmp_path)
    long_id = "12." + "9" * (5 << 20)  # the 5 MB project id
    body = {"project": long_id, "schema": label_config(), "extra_params": {"subpatching": {}}}
    answer = client.post(route, json=body if route == "/setup" else predict_body(project=long_id))
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error.startswith(f"project: {len(long_id)} characters, longer than the {MAX_PROJECT_ID}")
    assert len(error) < 300
    store = tmp_path / "models" / "sam2plus-settings.sqlite3"
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT count(*) FROM project_params").fetchone() == (0,)
    assert store.stat().st_size < 100_000


def test_a_project_id_of_label_studios_shape_and_the_longest_allowed_are_accepted(tmp_path):
    client, _ = make_backend(tmp_path)
    for project in ("12.1795599678", 12, "p" * MAX_PROJECT_ID):
        body = {"project": project, "schema": label_config(), "extra_params": None}
        assert client.post("/setup", json=body).status_code == 200, project
    answer = client.post("/predict", json=predict_body(project="p" * MAX_PROJECT_ID))
    assert answer.status_code == 200 and answer.get_json()["results"][0]["result"]
