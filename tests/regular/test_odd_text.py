"""Odd text in every field of every route is a 4xx naming the field, or served: never a 500.

A lone surrogate (``"\\ud800"`` in JSON) cannot be encoded: the body's one check
(`sam2plus.jsonbody`) refuses it with a 400 naming its JSON path, before any field handler sees
it. The other odd strings (NUL, U+FFFE, a newline with an ANSI escape, a right-to-left
override, an astral character, 100000 characters) are valid text: each field takes or refuses
them like any other value. In-process for every field and string; under gunicorn for a sample.
"""

from __future__ import annotations

import copy
import json

import pytest
import requests

from tests.support.inprocess import SCENE, make_backend, predict_body
from tests.support.scenes import label_config, point_context, rect_context
from tests.support.servers import gunicorn_server

SURROGATE = "\ud800"
ODD = {
    "surrogate": f"ab{SURROGATE}cd",
    "low surrogate": "\udfff",
    "nul": "scene\x00.jpg",
    "noncharacter": "\ufffe\uffff",
    "newline and ansi": "x\n[2026-01-01] [ERROR] forged\x1b[31m",
    "rtl override": "\u202egpj.enecs",
    "astral": "\U0001f600",
    "long": "y" * 100_000,
}


def _click() -> dict:
    body = predict_body("BrushLabels", point_context([(SCENE.cx, SCENE.cy)], SCENE.width, SCENE.height))
    body["params"]["context"]["result"].append(rect_context(SCENE.box(), SCENE.width, SCENE.height)["result"][0])
    return body


def _setup() -> dict:
    return {
        "project": "7.1795599678",
        "schema": label_config(),
        "extra_params": {"subpatching": {"patch_size": 512, "padding_fill": "black"}},
    }


def _opening() -> dict:
    body = predict_body()
    body["params"]["context"] = None
    return body


BODIES = {
    "/predict": _click,
    "/predict (task opening)": _opening,
    "/setup": _setup,
    "/webhook": lambda: {"action": "ANNOTATION_CREATED", "project": {"id": 7}},
}
# (route, JSON path): a path ending in "{}" puts the odd string in as a key of that object
FIELDS = [
    *(
        (route, path)
        for route in ("/predict", "/predict (task opening)")
        for path in (
            "tasks.0.data.image",
            "tasks.0.id",
            "tasks.0.data.{}",
            "project",
            "label_config",
            "{}",
            "params.{}",
        )
    ),
    *(
        ("/predict", f"params.context.result.{index}.{key}")
        for index in (0, 1)
        for key in ("type", "from_name", "to_name", "id", "origin", "original_width", "value.x", "value.{}", "{}")
    ),
    ("/predict", "params.context.result.0.value.labels.0"),
    ("/predict", "params.context.result.0.value.keypointlabels.0"),
    ("/predict", "params.context.result.1.value.rectanglelabels"),
    ("/predict", "params.context.{}"),
    ("/predict", "params.login"),
    ("/setup", "project"),
    ("/setup", "schema"),
    ("/setup", "extra_params"),
    ("/setup", "extra_params.{}"),
    ("/setup", "extra_params.subpatching.padding_fill"),
    ("/setup", "extra_params.subpatching.mode"),
    ("/setup", "extra_params.subpatching.{}"),
    ("/setup", "{}"),
    ("/webhook", "action"),
    ("/webhook", "{}"),
    ("/webhook", "project.{}"),
]


def with_odd(body: dict, path: str, text: str) -> dict:
    """`body` with `text` at `path` (dotted keys and list indexes; a last part "{}": as a new key)."""
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    holder = body
    for part in parents:
        holder = holder[int(part)] if isinstance(holder, list) else holder.setdefault(part, {})
    if last == "{}":
        holder[text] = 1
    elif isinstance(holder, list):
        holder[int(last)] = text
    else:
        holder[last] = text
    return body


def encoded(body: dict) -> bytes:
    """What a client sends: surrogates become \\ud800 escapes (ensure_ascii)."""
    return json.dumps(body).encode()


def json_path(path: str, text: str) -> str:
    """How an error names `path` holding `text` (a key written escaped): ``tasks[0].data.image``."""
    parts = [ascii(text)[1:-1] if part == "{}" else part for part in path.split(".")]
    return ".".join(f"[{part}]" if part.isdigit() else part for part in parts).replace(".[", "[")


def _check(status: int, answer: dict | None, route: str, path: str, name: str) -> None:
    assert status < 500, (route, path, name, answer)
    if name.endswith("surrogate"):
        assert status == 400, (route, path, name, answer)
        assert answer["error"].startswith(json_path(path, ODD[name]) + ": "), (path, answer["error"])
        assert "lone surrogate" in answer["error"]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """One backend for every field: its frame store serves the scene decoded once."""
    return make_backend(tmp_path_factory.mktemp("odd-text"))[0]


@pytest.mark.parametrize("route,path", FIELDS)
def test_odd_text_in_a_field_is_never_a_500(client, route, path):
    for name, text in ODD.items():
        answer = client.post(route.split()[0], data=encoded(with_odd(BODIES[route](), path, text)))
        _check(answer.status_code, answer.get_json(), route, path, name)
    assert client.get("/health").status_code == 200


def test_the_bodies_are_good_without_odd_text(client):
    for route, body in BODIES.items():
        answer = client.post(route.split()[0], json=body())
        assert answer.status_code == 200, (route, answer.get_json())
    answer = client.post("/predict", json=_click())
    assert answer.get_json()["results"][0]["result"], "the click is a real one"


@pytest.mark.slow
def test_under_gunicorn_odd_text_is_never_a_500(tmp_path):
    (tmp_path / "cache").mkdir()
    SCENE.write(tmp_path / "cache" / "scene.jpg")
    env = {"CACHE_DIR": str(tmp_path / "cache"), "MODEL_DIR": str(tmp_path / "models")}
    sample = [("/setup", "project"), ("/predict", "tasks.0.data.image"), ("/predict", "label_config")]
    sample += [("/webhook", "action"), ("/predict", "params.context.result.0.value.labels.0")]
    with gunicorn_server(env, threads=2, timeout=60, log_dir=tmp_path, app="tests.support.geometry_app:app") as server:
        for route, path in sample:
            for name, text in ODD.items():
                answer = requests.post(
                    f"{server.url}{route}",
                    data=encoded(with_odd(BODIES[route](), path, text)),
                    headers={"Content-Type": "application/json"},
                    timeout=30,
                )
                _check(answer.status_code, answer.json(), route, path, name)
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
        log = server.log.read_text(errors="replace")
    assert "Traceback" not in log
