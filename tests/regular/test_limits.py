"""Request limits (docs/security.md: Limits): keypoints per click, JSON nesting, tasks per request,
and extra_params errors reported all at once. Each limit is a setting; a request past it is a 4xx
naming the field and the setting, is refused before any work, and the server keeps serving.
"""

from __future__ import annotations

import json

import pytest

from sam2plus.config import ConfigError, ServerConfig
from sam2plus.server import REASON_LIMIT, nesting_exceeds, reason_phrase
from tests.support.inprocess import PROJECT, SCENE, make_backend, predict_body
from tests.support.scenes import point_context


def _points(count: int) -> dict:
    """A context of `count` positive keypoints spread over the disc."""
    return point_context(
        [(SCENE.cx + (i % 50) - 25, SCENE.cy + (i // 50) % 50 - 25) for i in range(count)], SCENE.width, SCENE.height
    )


def _served(client) -> int:
    return client.get("/metrics?format=json").get_json()["predictions"]


def test_a_click_of_20000_keypoints_is_refused_before_any_work(tmp_path):
    """Issue 9: a prompt of 20,000 keypoints was accepted and run."""
    client, cache = make_backend(tmp_path)
    answer = client.post("/predict", json=predict_body(context=_points(20_000)))
    assert answer.status_code == 413
    assert answer.get_json()["error"] == (
        "context.result: 20000 keypoints exceed MAX_PROMPT_POINTS=256, the most one click may carry"
    )
    assert answer.status.startswith("413 context.result: 20000 keypoints exceed MAX_PROMPT_POINTS=256")
    assert not (cache / "frames").exists() or not list((cache / "frames").iterdir()), "nothing was decoded"
    assert client.post("/predict", json=predict_body()).status_code == 200


def test_keypoints_up_to_the_limit_are_run_and_the_limit_is_a_setting(tmp_path):
    client, _ = make_backend(tmp_path, max_prompt_points=5)
    accepted = client.post("/predict", json=predict_body(context=_points(5)))
    assert accepted.status_code == 200 and len(accepted.get_json()["results"][0]["result"]) == 1
    refused = client.post("/predict", json=predict_body(context=_points(6)))
    assert refused.status_code == 413 and "6 keypoints exceed MAX_PROMPT_POINTS=5" in refused.get_json()["error"]
    assert _served(client) == 1


def test_rectangles_do_not_count_as_keypoints(tmp_path):
    client, _ = make_backend(tmp_path, max_prompt_points=2)
    context = _points(2)
    rectangle = predict_body()["params"]["context"]["result"][0]
    context["result"] += [rectangle] * 3  # the last rectangle wins; three of them are no keypoints
    assert client.post("/predict", json=predict_body(context=context)).status_code == 200


def test_more_tasks_than_max_tasks_are_refused_naming_the_setting(tmp_path):
    client, _ = make_backend(tmp_path, max_tasks=3)
    body = predict_body()
    body["tasks"] = [{"id": i, "data": {"image": "scene.jpg"}} for i in range(4)]
    answer = client.post("/predict", json=body)
    assert answer.status_code == 413
    assert answer.get_json()["error"].startswith("tasks: 4 tasks exceed MAX_TASKS=3")
    body["tasks"] = body["tasks"][:3]
    assert client.post("/predict", json=body).status_code == 200


def _nested(depth: int, leaf=1) -> object:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize("depth, deeper", [(0, False), (1, False), (5, False), (6, True), (100, True)])
def test_nesting_is_measured_in_levels_of_containers(depth, deeper):
    assert nesting_exceeds(_nested(depth), 5) is deeper
    assert nesting_exceeds({"a": [1, 2, {"b": "x"}]}, 3) is False and nesting_exceeds({"a": [[[]]]}, 3) is True


def test_a_body_nested_past_max_json_depth_is_a_400_and_the_limit_is_a_setting(tmp_path):
    client, _ = make_backend(tmp_path, max_json_depth=12)
    body = predict_body()
    body["tasks"][0]["data"]["meta"] = _nested(8)  # the task's data may hold any JSON: 11 levels in all
    assert client.post("/predict", json=body).status_code == 200
    body["tasks"][0]["data"]["meta"] = _nested(9)
    answer = client.post("/predict", json=body)
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "body: nested deeper than MAX_JSON_DEPTH=12 levels of arrays and objects"


@pytest.mark.parametrize("route", ["/predict", "/setup", "/webhook"])
def test_a_pathologically_nested_body_stops_the_parser_early(tmp_path, route):
    """Ten million brackets: counted past MAX_JSON_ITEMS before parsing (413); with that limit
    lifted, Python's parser gives up at its recursion limit (about 1000 levels) instead of building
    ten million nested lists, and the answer names the depth limit."""
    client, _ = make_backend(tmp_path)
    answer = client.post(route, data=b"[" * 10_000_000, content_type="application/json")
    assert answer.status_code == 413 and "MAX_JSON_ITEMS=1000000" in answer.get_json()["error"]
    client, _ = make_backend(tmp_path, max_json_items=100_000_000)
    answer = client.post(route, data=b"[" * 10_000_000, content_type="application/json")
    assert answer.status_code == 400 and "MAX_JSON_DEPTH=64" in answer.get_json()["error"]
    assert client.get("/health").status_code == 200


def test_the_default_depth_fits_what_label_studio_sends():
    """A /predict body with an accepted polygon annotation nests 10 levels: tasks, a task, its
    annotations, one, its result, a region, its value, points, a point."""
    body = {"tasks": [{"annotations": [{"result": [{"value": {"points": [[1.0, 2.0]]}}]}]}]}
    assert not nesting_exceeds(body, 10) and nesting_exceeds(body, 9)
    assert ServerConfig().max_json_depth == 64


@pytest.mark.parametrize(
    "env, named",
    [
        ({"MAX_JSON_DEPTH": "1000"}, "MAX_JSON_DEPTH='1000' must be >= 2 and <= 512"),
        ({"MAX_JSON_DEPTH": "1"}, "MAX_JSON_DEPTH='1' must be >= 2 and <= 512"),
        ({"MAX_TASKS": "0"}, "MAX_TASKS='0' must be > 0"),
        ({"MAX_PROMPT_POINTS": "many"}, "MAX_PROMPT_POINTS='many' is not a valid int"),
    ],
)
def test_limit_settings_are_checked(env, named):
    with pytest.raises(ConfigError, match=named):
        ServerConfig.from_env(env)


def test_limit_settings_are_read():
    config = ServerConfig.from_env({"MAX_JSON_DEPTH": "20", "MAX_TASKS": "7", "MAX_PROMPT_POINTS": "9"})
    assert (config.max_json_depth, config.max_tasks, config.max_prompt_points) == (20, 7, 9)


# --- extra_params: every error at once ---------------------------------------------------------

THREE_MISTAKES = {
    "subpatching": {"patch_size": 16, "mode": "tiled"},
    "return_format": {"type": "PolygonLabels", "max_points": 2},
}


def test_setup_reports_every_extra_params_error_in_one_line(tmp_path):
    """Issue 9: an extra_params with two mistakes reported only the first."""
    client, _ = make_backend(tmp_path)
    body = json.dumps({"project": PROJECT, "extra_params": THREE_MISTAKES})  # keys in this order, not sorted
    answer = client.post("/setup", data=body, content_type="application/json")
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    fields = [part.split(":")[0] for part in error.split("; ")]
    assert fields == [
        "extra_params.subpatching.patch_size",
        "extra_params.subpatching.mode",
        "extra_params.return_format.max_points",
    ], error
    assert "\n" not in error and answer.status == f"400 {error}", "it fits in Label Studio's reason phrase"


def test_many_errors_fill_the_reason_phrase_with_whole_ones_and_count_the_rest(tmp_path):
    client, _ = make_backend(tmp_path)
    wrong = {f"unknown_{i:02d}": i for i in range(30)}
    answer = client.post("/setup", json={"project": PROJECT, "extra_params": wrong})
    error = answer.get_json()["error"]
    assert error.count("; ") == 29 and error.startswith("extra_params.unknown_00: unknown key")
    reason = answer.status.removeprefix("400 ")
    kept, _, more = reason.rpartition("; and ")
    assert len(reason) <= REASON_LIMIT and more.endswith(" more")
    assert error.startswith(kept + "; "), "the reason holds the first errors, whole"
    assert len(kept.split("; ")) + int(more.split()[0]) == 30


def test_reason_phrase_keeps_whole_problems_in_order():
    assert reason_phrase(["a: 1", "b: 2"]) == "a: 1; b: 2"
    four = ["a: " + "x" * 20, "b: 2", "c: " + "y" * 10, "d: 4"]  # 50 characters joined
    assert reason_phrase(four, limit=50) == "; ".join(four)
    assert reason_phrase(four, limit=45) == four[0] + "; b: 2; and 2 more"
    assert reason_phrase(four, limit=40) == four[0] + "; and 3 more"
    for limit in range(20, 60):
        assert len(reason_phrase(four, limit)) <= limit
    assert reason_phrase(["a: é\nb"]) == "a: ??b"
    assert len(reason_phrase(["x" * 1000])) == REASON_LIMIT


def test_a_stored_setting_with_several_errors_names_them_all_on_read(tmp_path):
    client, cache = make_backend(tmp_path)
    from sam2plus.settings import SettingsStore

    with SettingsStore(cache.parent / "models")._connect() as db:
        db.execute("INSERT INTO project_params VALUES (?, ?, 0)", ("old", json.dumps(THREE_MISTAKES)))
    answer = client.post("/predict", json={**predict_body(), "project": "old"})
    assert answer.status_code == 400 and answer.get_json()["error"].count("; ") == 2
