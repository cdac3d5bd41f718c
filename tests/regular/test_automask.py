"""Automatic masks (pre-annotation) checked by geometry: discs drawn at known places, segmented by
the `ColorRegionSegmenter` TEST DOUBLE (it segments the uniformly coloured region under a point, as
a perfect SAM2 would), run window by window as subpatching tiles the image.

Every disc must come back as exactly one region (IoU >= 0.97 with the drawn disc), none twice,
whether it lies inside one window, crosses a window's edge (found whole in a neighbouring window:
its cut pieces are merged into it) or is larger than any window (only pieces: merged into one).
The scene's 30 windows take about 5 s an annotation on 2 cores: those tests are marked slow.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from sam2plus.automask import point_grid, stability_scores
from sam2plus.frames import tile_windows
from sam2plus.params import parse_extra_params
from sam2plus.preannotate import PARTIAL, annotate_task, pre_annotate
from sam2plus.warmup import Warmup
from tests.support.inprocess import PROJECT, SCENE, make_backend, predict_body
from tests.support.scenes import BACKGROUND, bitmask_mask, brush_mask, iou, label_config


@dataclass(frozen=True)
class Disc:
    cx: int
    cy: int
    r: int
    colour: tuple[int, int, int]

    def truth(self, width: int, height: int) -> np.ndarray:
        ys, xs = np.mgrid[0:height, 0:width]
        return (xs + 0.5 - self.cx) ** 2 + (ys + 0.5 - self.cy) ** 2 <= self.r**2


WIDTH, HEIGHT = 2400, 1800
PATCH = 512  # windows start at x 0, 378, 755, 1133, 1510, 1888 and y 0, 322, 644, 966, 1288: 30 of them
DISCS = [
    Disc(300, 250, 150, (200, 60, 60)),  # inside window (0, 0)
    Disc(512, 900, 110, (60, 200, 60)),  # across window 0's right edge and window 2's top edge
    Disc(1320, 1000, 270, (60, 60, 210)),  # wider than a window: only pieces
    Disc(2100, 430, 160, (210, 200, 60)),  # across the edges of four windows
    Disc(900, 1520, 130, (200, 60, 200)),
]
PARAMS = {
    "subpatching": {"patch_size": PATCH},
    "return_format": {"type": "BrushLabels"},
    "auto_annotation": {"label": "object", "points_per_side": 12, "min_area": 500},
}


def write_scene(path) -> str:
    image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    image[:] = BACKGROUND[::-1]
    for disc in DISCS:
        cv2.circle(image, (disc.cx, disc.cy), disc.r, disc.colour[::-1], -1, lineType=cv2.LINE_8)
    cv2.imwrite(str(path), image)
    return str(path)


def matches(masks: list[np.ndarray]) -> list[list[float]]:
    """For each disc, the IoU of every region that overlaps it by more than half of either."""
    out = []
    for disc in DISCS:
        truth = disc.truth(WIDTH, HEIGHT)
        out.append([iou(mask, truth) for mask in masks if (mask & truth).sum() > 0.5 * min(mask.sum(), truth.sum())])
    return out


@pytest.fixture
def scene_task(tmp_path):
    return {"id": 1, "data": {"image": write_scene(tmp_path / "discs.png")}}


def test_the_windows_tile_the_frame_with_the_overlap():
    windows = tile_windows((WIDTH, HEIGHT), parse_extra_params(PARAMS), 128)
    xs = sorted({w.window.x for w in windows})
    ys = sorted({w.window.y for w in windows})
    assert xs[0] == 0 and xs[-1] + PATCH == WIDTH and ys[0] == 0 and ys[-1] + PATCH == HEIGHT
    assert all(b - a <= PATCH - 128 for a, b in zip(xs, xs[1:], strict=False))
    assert len(windows) == len(xs) * len(ys) and {w.patch_size for w in windows} == {(PATCH, PATCH)}
    [whole] = tile_windows((WIDTH, HEIGHT), parse_extra_params({}), 128)
    assert whole.window.width == WIDTH and whole.mode == "fullframe"


@pytest.mark.slow
def test_every_disc_is_one_region_none_twice_and_discs_cut_by_windows_are_merged(geometry_pipeline, scene_task):
    params = parse_extra_params(PARAMS)
    result, found = annotate_task(
        geometry_pipeline, scene_task, label_config("BrushLabels"), params, time.monotonic() + 300
    )
    assert found.complete and found.windows == 30 and found.encoder_runs == 30
    masks = [brush_mask(region) for region in result]
    per_disc = matches(masks)
    assert [len(m) for m in per_disc] == [1] * len(DISCS), f"regions per disc: {per_disc}"
    assert min(m[0] for m in per_disc) >= 0.97, per_disc
    assert len(result) == len(DISCS), "nothing but the discs (the background is no region)"
    assert all(region["value"]["brushlabels"] == ["object"] for region in result)


@pytest.mark.slow
def test_the_same_objects_come_back_in_bitmask_format_from_the_embedding_cache(geometry_pipeline, scene_task):
    brush = parse_extra_params(PARAMS)
    annotate_task(geometry_pipeline, scene_task, label_config("BrushLabels"), brush, time.monotonic() + 300)
    bitmask = parse_extra_params({**PARAMS, "return_format": {"type": "BitmaskLabels"}})
    result, found = annotate_task(
        geometry_pipeline, scene_task, label_config("BitmaskLabels"), bitmask, time.monotonic() + 300
    )
    assert found.encoder_runs == 0, "every window's embedding came from the cache"
    per_disc = matches([bitmask_mask(region) for region in result])
    assert [len(m) for m in per_disc] == [1] * len(DISCS) and min(m[0] for m in per_disc) >= 0.97


@pytest.mark.slow
def test_regions_per_image_and_smallest_area_are_bounded(geometry_pipeline, scene_task):
    params = parse_extra_params({**PARAMS, "auto_annotation": {**PARAMS["auto_annotation"], "max_regions": 2}})
    result, _ = annotate_task(
        geometry_pipeline, scene_task, label_config("BrushLabels"), params, time.monotonic() + 300
    )
    assert len(result) == 2
    big = parse_extra_params({**PARAMS, "auto_annotation": {**PARAMS["auto_annotation"], "min_area": 60_000}})
    result, _ = annotate_task(geometry_pipeline, scene_task, label_config("BrushLabels"), big, time.monotonic() + 300)
    per_disc = matches([brush_mask(region) for region in result])
    assert [len(m) for m in per_disc] == [1 if d.r >= 150 else 0 for d in DISCS], "only discs of 60000 px and more"


@pytest.mark.slow
def test_the_time_budget_ends_the_work_with_a_partial_answer_and_tasks_not_reached(geometry_pipeline, scene_task):
    params = parse_extra_params(PARAMS)
    answers = pre_annotate(geometry_pipeline, [scene_task, scene_task], label_config("BrushLabels"), params, "v1")
    assert [a["model_version"] for a in answers] == ["v1", "v1"] and all("result" in a for a in answers)
    past = parse_extra_params({**PARAMS, "auto_annotation": {**PARAMS["auto_annotation"], "time_budget": 1}})
    slow = {"calls": 0}

    def pause():  # every window takes half a second: two windows fit in the budget
        slow["calls"] += 1
        time.sleep(0.5)

    answers = pre_annotate(geometry_pipeline, [scene_task, scene_task], label_config("BrushLabels"), past, "v1", pause)
    assert answers[0]["model_version"] == "v1" + PARTIAL and 1 <= slow["calls"] < 30
    assert "result" not in answers[1] and "time_budget" in answers[1]["error"], "the second task was not reached"


@pytest.mark.slow
def test_a_task_whose_image_fails_gets_an_entry_without_result(geometry_pipeline, scene_task):
    params = parse_extra_params(PARAMS)
    bad = {"id": 2, "data": {"image": "missing.png"}}
    answers = pre_annotate(geometry_pipeline, [bad, scene_task], label_config("BrushLabels"), params, "v1")
    assert "result" not in answers[0] and "tasks[0].data.image" in answers[0]["error"]
    assert len(answers[1]["result"]) == len(DISCS)


def test_point_grid_and_stability():
    grid = point_grid(4)
    assert grid.shape == (16, 2) and grid.min() == 0.125 and grid.max() == 0.875
    logits = np.full((2, 8, 8), -5.0)
    logits[0, 2:6, 2:6] = 5.0  # crisp: stable
    logits[1, 2:6, 2:6] = 0.5  # barely above 0: unstable
    assert stability_scores(logits).tolist() == [1.0, 0.0]


def test_a_promptless_predict_of_a_project_with_auto_annotation_answers_each_task_with_its_objects(tmp_path):
    """What Label Studio's Retrieve predictions sends (every task, context null), in-process: each
    task gets its disc as a region of the project's format; the project without the section keeps
    the warm-up's empty answer."""
    client, _ = make_backend(tmp_path)
    params = {"return_format": {"type": "BitmaskLabels"}, "auto_annotation": {"points_per_side": 8}}
    setup = client.post(
        "/setup", json={"project": PROJECT, "schema": label_config("BitmaskLabels"), "extra_params": params}
    )
    assert setup.status_code == 200, setup.get_json()
    body = predict_body("BitmaskLabels", tasks=[{"id": 1, "data": {"image": "scene.jpg"}}] * 2)
    body["params"]["context"] = None
    answer = client.post("/predict", json=body).get_json()
    assert len(answer["results"]) == 2
    for entry in answer["results"]:
        [region] = entry["result"]
        assert region["type"] == "bitmasklabels" and region["value"]["bitmasklabels"] == ["object"]
        assert iou(bitmask_mask(region), SCENE.truth((0, 0, SCENE.width, SCENE.height))) >= 0.95
        assert entry["model_version"] == answer["model_version"] and entry["score"] > 0
    refused = client.post(
        "/setup",
        json={
            "project": PROJECT,
            "schema": label_config("BitmaskLabels"),
            "extra_params": {**params, "auto_annotation": {"label": "nothing-like-it"}},
        },
    )
    assert refused.status_code == 400 and "extra_params.auto_annotation.label" in refused.get_json()["error"]


def test_clicks_go_first_a_window_waits_while_a_click_is_in_flight(geometry_pipeline, tmp_path):
    task = {"id": 1, "data": {"image": SCENE.write(tmp_path / "scene.jpg").as_posix()}}
    params = parse_extra_params({"auto_annotation": {"points_per_side": 4}})
    warmup = Warmup(geometry_pipeline)
    answers = []

    def annotate():
        answers.append(pre_annotate(geometry_pipeline, [task], label_config(), params, "v1", warmup.wait_for_clicks))

    with warmup.click():
        worker = threading.Thread(target=annotate)
        worker.start()
        time.sleep(0.5)
        assert worker.is_alive() and geometry_pipeline.segmenter.encoder_runs == 0, "no window while a click runs"
    worker.join(30)
    assert not worker.is_alive() and geometry_pipeline.segmenter.encoder_runs == 1
    [[entry]] = answers
    assert len(entry["result"]) == 1 and entry["model_version"] == "v1"


def test_a_request_may_bring_its_own_pre_annotation_budget_within_bounds(tmp_path):
    client, _ = make_backend(tmp_path)
    params = {"auto_annotation": {"points_per_side": 4, "time_budget": 1}}
    setup = client.post("/setup", json={"project": PROJECT, "schema": label_config(), "extra_params": params})
    assert setup.status_code == 200, setup.get_json()
    body = predict_body()
    body["params"]["context"] = None
    for budget in (0, 3601, "60", True):
        answer = client.post("/predict", json={**body, "time_budget": budget})
        assert answer.status_code == 400 and answer.get_json()["error"].startswith("time_budget:"), answer.get_json()
    answer = client.post("/predict", json={**body, "time_budget": 600}).get_json()
    [entry] = answer["results"]
    assert len(entry["result"]) == 1 and entry["model_version"] == answer["model_version"]
