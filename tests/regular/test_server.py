"""The HTTP protocol of the backend (Label Studio 1.23.2's ML API), through Flask's test client.

The model is SAM2Plus itself around the `ColorRegionSegmenter` test double, so these run in
seconds; tests/regular/test_gunicorn.py repeats the essentials with gunicorn and real SAM2.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import socket
import threading
import time

import pytest
import requests

from model import SAM2Plus
from sam2plus.config import ServerConfig
from sam2plus.server import REQUEST_ID_HEADER, client_gone, create_app
from sam2plus.settings import SettingsStore
from tests.support.geometry_segmenter import ColorRegionSegmenter
from tests.support.inprocess import PROJECT, SCENE, make_backend, predict_body
from tests.support.scenes import DiscScene, label_config, point_context, rect_context
from tests.support.servers import gunicorn_backend


@pytest.fixture
def backend(tmp_path):
    return make_backend(tmp_path)


def test_health_answers_up_on_both_paths(backend):
    client, _ = backend
    for path in ("/", "/health"):
        body = client.get(path).get_json()
        assert body["status"] == "UP" and body["model_class"] == "SAM2Plus"


def test_setup_stores_params_and_predict_uses_them(backend):
    client, _ = backend
    setup = client.post(
        "/setup",
        json={
            "project": PROJECT,
            "schema": label_config("PolygonLabels"),
            "extra_params": {"subpatching": {"patch-size": 512}, "return-format": {"type": "polygonlabels"}},
        },
    )
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
    answer = client.post(
        "/setup", json={"project": PROJECT, "extra_params": '{"return_format": {"type": "Rectangle"}}'}
    )
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
    answer = client.post(
        "/setup",
        json={
            "project": PROJECT,
            "schema": label_config("BrushLabels"),
            "extra_params": {"return_format": {"type": "PolygonLabels"}},
        },
    )
    assert answer.status_code == 400 and answer.get_json()["error"].startswith("schema: has no <PolygonLabels>")


def test_predict_without_context_returns_no_results(backend):
    client, _ = backend
    body = predict_body()
    body["params"]["context"] = None
    assert client.post("/predict", json=body).get_json()["results"] == []


@pytest.mark.parametrize(
    "body, status, field",
    [
        ({"tasks": []}, 400, "tasks"),
        (predict_body(context=point_context([(1700, 100)], 1600, 1200)), 400, "context.result[0].value.x"),
        (
            predict_body(
                context={"result": [{"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 0, "height": 5}}]}
            ),
            400,
            "context.result[0].value.width",
        ),
        (predict_body(image="/etc/passwd"), 400, "tasks[0].data.image"),
        (predict_body(image="missing.jpg"), 400, "tasks[0].data.image"),
        (predict_body(label_config="<View>"), 400, "label_config"),
        ({**predict_body(), "project": {"id": 1}}, 400, "project"),
        ({**predict_body(), "params": {"context": "click"}}, 400, "context"),
    ],
)
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
    metrics = client.get("/metrics?format=json").get_json()
    assert metrics["predictions"] == 1 and metrics["errors"] == {"400": 1}
    assert metrics["frame_cache"]["misses"] == 1


def test_artifacts_go_to_a_folder_of_their_own_and_leave_the_source_alone(tmp_path):
    client, cache = make_backend(tmp_path, artifacts="request")
    source = cache / "scene.jpg"
    digest = hashlib.sha1(source.read_bytes()).hexdigest()
    answer = client.post("/predict", json=predict_body(artifacts=True)).get_json()
    (folder,) = (cache / "artifacts").iterdir()
    assert {
        "patch.jpg",
        "patch.prompt.jpg",
        "frame.prompt.jpg",
        "mask.patch.png",
        "patch.mask_overlay.jpg",
        "request.json",
    } <= {p.name for p in folder.iterdir()}
    assert answer["artifacts"] == f"artifacts/{folder.name}", "named relative to CACHE_DIR"
    assert hashlib.sha1(source.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in cache.iterdir()) == ["artifacts", "frames", "scene.jpg"]
    assert "artifacts" not in client.post("/predict", json=predict_body()).get_json(), "only when asked"
    assert len(list((cache / "artifacts").iterdir())) == 1


def test_a_client_cannot_ask_for_artifacts_the_server_does_not_allow(backend):
    """Issue 11 finding 8: "artifacts": true wrote six files with ARTIFACTS=off, and the answer
    revealed the server's absolute cache path."""
    client, cache = backend
    before = _snapshot(cache)
    answer = client.post("/predict", json=predict_body(artifacts=True))
    assert answer.status_code == 400
    assert answer.get_json()["error"].startswith("artifacts: this backend writes no review artifacts (ARTIFACTS=off)")
    assert _snapshot(cache) == before and not (cache / "artifacts").exists()
    assert str(cache) not in answer.get_data(as_text=True)


def test_artifacts_on_are_written_for_every_click_and_named_relative_to_the_cache(tmp_path):
    client, cache = make_backend(tmp_path, artifacts="on")
    answer = client.post("/predict", json=predict_body())
    assert answer.status_code == 200
    named = answer.get_json()["artifacts"]
    assert named.startswith("artifacts/") and (cache / named / "patch.jpg").is_file()
    assert str(tmp_path) not in answer.get_data(as_text=True)


def test_artifacts_are_bounded_in_total_size_oldest_folders_first(tmp_path):
    client, cache = make_backend(tmp_path, artifacts="on", artifacts_mb=1)
    named = [client.post("/predict", json=predict_body()).get_json()["artifacts"] for _ in range(7)]
    newest = sum(p.stat().st_size for p in (cache / named[-1]).iterdir())
    assert 150_000 < newest < 1 << 19, "the test needs folders of a few hundred KB"
    kept = {f"artifacts/{p.name}" for p in (cache / "artifacts").iterdir()}
    assert 2 <= len(kept) < 7 and kept == set(named[-len(kept) :]), "the oldest folders went first"
    total = sum(p.stat().st_size for p in (cache / "artifacts").rglob("*") if p.is_file())
    assert total <= 1 << 20


def test_basic_auth_guards_every_route_but_health(tmp_path):
    config = ServerConfig(
        cache_dir=str(tmp_path), model_dir=str(tmp_path), basic_auth_user="ann", basic_auth_pass="s3cret"
    )
    client = create_app(SAM2Plus(config, segmenter=ColorRegionSegmenter())).test_client()
    assert client.get("/health").status_code == 200
    assert client.post("/setup", json={"project": PROJECT}).status_code == 401
    assert client.get("/versions").status_code == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"ann:nope").decode()}
    assert client.get("/versions", headers=wrong).status_code == 401
    right = {"Authorization": "Basic " + base64.b64encode(b"ann:s3cret").decode()}
    assert client.post("/setup", json={"project": PROJECT}, headers=right).status_code == 200


@pytest.mark.parametrize("user, password", [("ann", "pässwörd"), ("änn", "s3cret"), ("ann", "pass:wörd")])
def test_basic_auth_compares_bytes_and_accepts_utf8_and_label_studios_latin1(tmp_path, user, password):
    """Label Studio sends basic auth with python-requests, which encodes str credentials as Latin-1."""
    client, _ = make_backend(tmp_path, basic_auth_user=user, basic_auth_pass=password)
    for encoding in ("utf-8", "latin-1"):
        header = "Basic " + base64.b64encode(f"{user}:{password}".encode(encoding)).decode()
        assert client.get("/versions", headers={"Authorization": header}).status_code == 200, encoding
    sent = requests.Request("GET", "http://127.0.0.1/versions", auth=(user, password)).prepare()
    assert client.get("/versions", headers={"Authorization": sent.headers["Authorization"]}).status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        "Basic " + base64.b64encode("ann:pässwörd".encode()).decode(),  # non-ASCII, wrong password
        "Basic " + base64.b64encode("ännä:s3cret".encode("latin-1")).decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\x80").decode(),  # not UTF-8 at all
        "Basic bm9uLWFzY2lp\u00e9",  # non-ASCII inside the base64 itself
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"ann").decode(),  # no colon
        "Bearer ann:s3cret",
    ],
)
def test_non_ascii_or_malformed_credentials_are_a_401_not_a_500(tmp_path, header):
    """Issue 11 finding 10: non-ASCII credentials gave a 500 (hmac.compare_digest on str)."""
    client, _ = make_backend(tmp_path, basic_auth_user="ann", basic_auth_pass="s3cret")
    answer = client.get("/versions", headers={"Authorization": header.encode("utf-8").decode("latin-1")})
    assert answer.status_code == 401 and answer.get_json()["error"].startswith("authorization:")
    assert client.get("/health").status_code == 200


class FailingSegmenter(ColorRegionSegmenter):
    """Fault injection: SAM2 failing with internal detail in its message, as OpenCV errors do."""

    def predict(self, patch, key, prompt):
        raise RuntimeError("OpenCV(4.10.0) /io/opencv/modules/imgproc/src/approx.cpp:681: error: embedded null byte")


def test_a_500_says_internal_error_with_a_request_id_and_logs_the_detail(tmp_path, caplog):
    """Issue 11 finding 9: 500 answers carried internal exception text."""
    client, _ = make_backend(tmp_path, segmenter=FailingSegmenter())
    with caplog.at_level(logging.ERROR, logger="sam2plus.server"):
        answer = client.post("/predict", json=predict_body())
    assert answer.status_code == 500
    request_id = answer.headers[REQUEST_ID_HEADER]
    assert len(request_id) == 16 and answer.get_json() == {
        "error": f"internal error (request id {request_id}); the backend's log has the detail",
        "request_id": request_id,
    }
    assert "OpenCV" not in answer.get_data(as_text=True) and "approx.cpp" not in answer.status
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert request_id in record.getMessage() and "approx.cpp" in caplog.text, "the detail is in the log"
    assert client.get("/health").status_code == 200


def test_every_answer_carries_its_own_request_id(backend):
    client, _ = backend
    ids = {client.get("/health").headers[REQUEST_ID_HEADER] for _ in range(3)}
    refused = client.post("/predict", json={"tasks": []})
    assert len(ids) == 3 and refused.get_json()["request_id"] == refused.headers[REQUEST_ID_HEADER]


@pytest.mark.parametrize("image", ["scene\x00.jpg", "/data/upload/\x00x.png", "file:///\x00"])
def test_an_embedded_null_byte_never_reaches_the_answer(backend, image):
    client, _ = backend
    text = client.post("/predict", json=predict_body(image=image)).get_data(as_text=True)
    assert "null byte" not in text and "ValueError" not in text, text


def test_a_body_over_the_limit_is_a_413_naming_the_setting(tmp_path):
    """Issue 11 finding 5: no request body limit existed."""
    client, _ = make_backend(tmp_path, max_request_bytes=1 << 20)
    big = predict_body()
    big["tasks"][0]["data"]["blob"] = "x" * (1 << 20)
    answer = client.post("/predict", json=big)
    assert answer.status_code == 413
    assert answer.get_json()["error"] == (
        "body: larger than MAX_REQUEST_BYTES=1048576 (1 MiB), the largest request body this backend accepts"
    )
    assert client.post("/predict", json=predict_body()).status_code == 200


def test_the_default_body_limit_carries_a_data_url_of_a_large_jpeg():
    """128 MiB: a base64 data: URL (4/3 of the file) of a 95 MB JPEG, plus the task around it."""
    assert ServerConfig().max_request_bytes == 128 << 20 >= 95_000_000 * 4 / 3 + (1 << 20)


def test_request_values_are_logged_escaped(backend, caplog):
    """Issue 11 finding 11: a newline in /webhook's action or in original_width forged a log line."""
    client, _ = backend
    forged = "ANNOTATION_CREATED\n[2025-01-01 00:00:00] [WARNING] [sam2plus] forged"
    context = rect_context(SCENE.box(), SCENE.width, SCENE.height)
    context["result"][0]["original_width"] = "1600\n[WARNING] forged"
    with caplog.at_level(logging.INFO):
        assert client.post("/webhook", json={"action": forged}).status_code == 200
        client.post("/predict", json=predict_body(context=context))
        client.post("/setup", json={"project": "7\n[WARNING] forged", "extra_params": {"a\nb": 1}})
        client.post("/setup", json={"project": "8\nforged", "extra_params": None})
    messages = [record.getMessage() for record in caplog.records]
    assert any("ANNOTATION_CREATED" in m for m in messages) and any("1600" in m for m in messages)
    assert any("unknown key" in m for m in messages) and any("set up" in m for m in messages)
    assert not [m for m in messages if "\n" in m], messages


def test_a_stored_setting_past_a_limit_is_refused_on_read_not_run(backend):
    """Settings stored before the limits existed (epsilon 1e100 made every polygon click a 500)."""
    client, cache = backend
    store = SettingsStore(cache.parent / "models")
    with store._connect() as db:
        for project, params in (
            ("p-epsilon", {"return_format": {"type": "PolygonLabels", "epsilon": float("nan")}}),
            ("p-patch", {"subpatching": {"patch_size": [30000, 30000]}}),
        ):
            db.execute("INSERT INTO project_params VALUES (?, ?, 0)", (project, json.dumps(params)))
    for project, field in (
        ("p-epsilon", "extra_params.return_format.epsilon"),
        ("p-patch", "extra_params.subpatching.patch_size"),
    ):
        answer = client.post("/predict", json={**predict_body("PolygonLabels"), "project": project})
        assert answer.status_code == 400 and answer.get_json()["error"].startswith(field + ":")


def test_client_gone_reads_the_state_of_the_gunicorn_socket(backend):
    client, _ = backend
    app = client.application
    for peer_action, gone in (("stay", False), ("send", False), ("close", True)):
        ours, peer = socket.socketpair()
        try:
            if peer_action == "send":
                peer.sendall(b"GET / HTTP/1.1\r\n")  # a pipelined next request: still there
            elif peer_action == "close":
                peer.close()
            with app.test_request_context("/predict", environ_base={"gunicorn.socket": ours}):
                assert client_gone() is gone, peer_action
        finally:
            ours.close()
            peer.close()
    with app.test_request_context("/predict"):
        assert client_gone() is False, "no socket (not gunicorn): carry on"


def test_a_click_whose_client_went_away_stops_before_the_model(backend):
    """Issue 11 finding 4's tail: a click kept running after its client left. Here the gunicorn
    socket of the request is one whose peer has closed: the click stops at the first stage
    boundary, SAM2 never runs, and the answer (read by nobody) is a 499."""
    client, _ = backend
    ours, peer = socket.socketpair()
    peer.close()
    try:
        answer = client.post("/predict", json=predict_body(), environ_base={"gunicorn.socket": ours})
    finally:
        ours.close()
    assert answer.status_code == 499 and "stopped after fetch" in answer.get_json()["error"]
    metrics = client.get("/metrics?format=json").get_json()
    assert metrics["encoder_runs"] == 0 and metrics["predictions"] == 0 and metrics["errors"] == {"499": 1}
    assert client.post("/predict", json=predict_body()).status_code == 200
    assert client.get("/metrics?format=json").get_json()["encoder_runs"] == 1


# --- under gunicorn, real SAM2 (hiera-t, untrained, CPU) -------------------------------------


@pytest.fixture(scope="module")
def one_thread(tmp_path_factory):
    """One worker with one thread, so that a second click waits for the first one."""
    root = tmp_path_factory.mktemp("one-thread")
    (root / "cache").mkdir()
    SCENE.write(root / "cache" / "scene.jpg")
    DiscScene(1600, 1200, 300, 300, 100).write(root / "cache" / "other.jpg")
    env = {"CACHE_DIR": str(root / "cache"), "MODEL_DIR": str(root / "models"), "MAX_REQUEST_BYTES": str(1 << 20)}
    with gunicorn_backend(env, workers=1, threads=1) as url:
        yield url


@pytest.mark.slow
def test_under_gunicorn_a_click_whose_client_left_never_reaches_the_encoder(one_thread):
    url = one_thread
    first = threading.Thread(
        target=requests.post, args=(f"{url}/predict",), kwargs={"json": predict_body(), "timeout": 120}
    )
    first.start()  # runs the encoder for a few seconds on CPU
    time.sleep(0.3)
    with pytest.raises(requests.ReadTimeout):  # waits behind the first click, then leaves
        requests.post(f"{url}/predict", json=predict_body(image="other.jpg"), timeout=(5, 0.5))
    first.join(120)
    metrics = requests.get(f"{url}/metrics", params={"format": "json"}, timeout=30).json()
    assert metrics["encoder_runs"] == 1 and metrics["predictions"] == 1, metrics
    assert metrics["errors"].get("499") == 1, metrics
    again = requests.post(f"{url}/predict", json=predict_body(image="other.jpg"), timeout=120)
    assert again.status_code == 200
    assert requests.get(f"{url}/metrics?format=json", timeout=30).json()["encoder_runs"] == 2


@pytest.mark.slow
def test_under_gunicorn_a_chunked_body_over_the_limit_is_a_413(one_thread):
    chunks = (b"x" * 65536 for _ in range(40))  # 2.5 MiB without a Content-Length
    answer = requests.post(
        f"{one_thread}/predict", data=chunks, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert answer.status_code == 413 and "MAX_REQUEST_BYTES=1048576" in answer.json()["error"]
    assert requests.get(f"{one_thread}/health", timeout=10).status_code == 200


def _snapshot(folder):
    return sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_setup_refuses_each_bound_of_issue_11_naming_the_key_and_the_limit(backend):
    """The settings that scaled one click's work without a bound, sent to /setup as Label Studio does."""
    client, _ = backend
    for section, key, value, limit in (
        ("subpatching", "patch_size", [30000, 30000], "8192"),
        ("postprocess", "dilate", 1024, "256"),
        ("postprocess", "dilate", 10.0, "2"),
        ("return_format", "epsilon", 1e100, "1024"),
        ("return_format", "max_points", 10**9, "10000"),
    ):
        extra = {section: {key: value}}
        if section == "return_format":
            extra[section]["type"] = "PolygonLabels"
        answer = client.post("/setup", json={"project": PROJECT, "extra_params": extra})
        error = answer.get_json()["error"]
        assert answer.status_code == 400, (key, value, error)
        assert f"extra_params.{section}.{key}" in error and limit in error, error
    assert client.post("/predict", json=predict_body()).status_code == 200, "nothing was stored"
