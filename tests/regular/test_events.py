"""The interactive event protocol (`context.event`) of HumanSignal's segment_anything_video_interactive
example, through the app's test client around SAM2Plus with the `ColorRegionSegmenter` test double.

Request and reply shapes follow that example's code and tests: `capabilities` is task-agnostic and
lists prompts and targets; `prewarm` answers a `prewarm_ack` and warms the task up; `predict` is a
click whose keypoints may carry `value.positive`; `release` drops the task's frames and embeddings.
The classic context (no `event`) keeps its own tests (test_server.py, test_warmup.py, e2e, browser).
"""

from __future__ import annotations

import time

import pytest

from sam2plus.events import EVENTS, OUTPUTS, parse_event
from sam2plus.params import RETURN_TYPES
from tests.support.inprocess import SCENE, make_backend, predict_body
from tests.support.scenes import brush_mask, iou, point_context

WAIT = 30


def post(client, context, **body):
    answer = client.post("/predict", json=predict_body(context=context, **body))
    return answer.status_code, answer.get_json()


def only_region(answer: dict) -> dict:
    [prediction] = answer["results"]
    [region] = prediction["result"]
    return region


def test_capabilities_list_the_prompts_and_every_output_tag_without_a_task(tmp_path):
    client, _ = make_backend(tmp_path)
    status, answer = post(client, {"event": "capabilities"}, tasks=[])
    assert status == 200, answer
    region = only_region(answer)
    assert region["type"] == "capabilities"
    value = region["value"]
    assert value["prompts"] == ["point", "box"]
    assert {target["tag"] for target in value["targets"]} == set(RETURN_TYPES)
    assert {t["tag"]: t["output"] for t in value["targets"]}["BitmaskLabels"] == "mask"
    assert value["model_info"]["name"] == "SAM2Plus" and value["model_info"]["version"] == answer["model_version"]
    assert OUTPUTS["PolygonLabels"] == "polygon" and OUTPUTS["Rectangle"] == "bbox"


def test_prewarm_acknowledges_and_warms_the_task_up_before_its_first_click(tmp_path):
    client, cache = make_backend(tmp_path)
    status, answer = post(client, {"event": "prewarm", "frame": 0, "window": 10})
    assert status == 200, answer
    region = only_region(answer)
    assert region["type"] == "prewarm_ack" and (region["from_name"], region["to_name"]) == ("output", "image")
    assert region["value"]["status"] == "ok" and region["value"]["queued"] == 1
    assert region["value"]["pending"] == [0]
    deadline = time.monotonic() + WAIT
    while not list((cache / "frames").glob("*.rgb")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((cache / "frames").glob("*.rgb")), "the warm-up stored the task's frame"


def test_predict_is_a_click_and_value_positive_false_makes_a_negative_point(tmp_path):
    client, _ = make_backend(tmp_path)
    click = point_context([(SCENE.cx, SCENE.cy)], SCENE.width, SCENE.height)
    status, answer = post(client, {"event": "predict", **click})
    assert status == 200, answer
    region = only_region(answer)
    assert region["type"] == "brushlabels"
    assert iou(brush_mask(region), SCENE.truth((0, 0, SCENE.width, SCENE.height))) >= 0.95
    only_negative = point_context([(SCENE.cx, SCENE.cy)], SCENE.width, SCENE.height)
    for point in only_negative["result"]:
        point.pop("is_positive", None)
        point["value"]["positive"] = False
    status, answer = post(client, {"event": "predict", **only_negative})
    assert status == 400 and "only negative keypoints" in answer["error"], answer


def test_predict_without_a_prompt_answers_no_regions(tmp_path):
    client, _ = make_backend(tmp_path)
    status, answer = post(client, {"event": "predict", "result": []})
    assert status == 200 and answer["results"] == [], answer


def test_release_drops_the_tasks_frames_and_embeddings(tmp_path):
    client, cache = make_backend(tmp_path)
    click = point_context([(SCENE.cx, SCENE.cy)], SCENE.width, SCENE.height)
    assert post(client, click)[0] == 200
    frames_before = list((cache / "frames").glob("*.rgb"))
    assert frames_before, "the click stored its frame"
    status, answer = post(client, {"event": "release"})
    assert status == 200, answer
    region = only_region(answer)
    assert region["type"] == "release_ack" and region["value"]["status"] == "released"
    assert region["value"]["frames"] == len(frames_before) and region["value"]["embeddings"] == 1
    assert not list((cache / "frames").glob("*.rgb"))
    status, answer = post(client, {"event": "release"})
    assert only_region(answer)["value"] == {"status": "released", "frames": 0, "embeddings": 0}, "nothing is left"
    assert post(client, click)[0] == 200, "the next click works again"


def test_release_of_a_task_never_seen_releases_nothing(tmp_path):
    client, _ = make_backend(tmp_path)
    status, answer = post(client, {"event": "release"}, image="never-seen.jpg")
    assert status == 200 and only_region(answer)["value"] == {"status": "released", "frames": 0, "embeddings": 0}


@pytest.mark.parametrize("event", ["track", "track_progress", "track_cancel"])
def test_video_events_are_refused_naming_the_event(tmp_path, event):
    client, _ = make_backend(tmp_path)
    status, answer = post(client, {"event": event, "result": []})
    assert status == 400 and answer["error"].startswith("context.event:") and f'"{event}"' in answer["error"]
    assert "video" in answer["error"]


@pytest.mark.parametrize("event", ["explode", "", None, 3, ["predict"]])
def test_unknown_events_are_refused_naming_the_event(tmp_path, event):
    client, _ = make_backend(tmp_path)
    status, answer = post(client, {"event": event})
    assert status == 400 and answer["error"].startswith("context.event:"), answer
    assert all(name in answer["error"] for name in EVENTS)
    assert client.get("/health").status_code == 200, "the server keeps serving"


def test_the_classic_context_has_no_event():
    assert parse_event(None) is None and parse_event({"result": []}) is None
    assert parse_event({"event": "prewarm"}) == "prewarm"


def test_the_embedding_cache_drops_every_patch_of_one_image_and_its_bytes():
    import torch

    from sam2plus.segmenter import EmbeddingCache

    cache = EmbeddingCache(1 << 20)
    for key in (("a", (10, 10), 1), ("a", (10, 10), 2), ("b", (10, 10), 1)):
        cache.put(key, {"image_embed": torch.zeros(16)})
    assert cache.discard("a") == 2 and cache.keys() == [("b", (10, 10), 1)] and cache.bytes == 64
