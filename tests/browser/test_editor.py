"""Label Studio's own editor, in headless Chromium, driving SAM2Plus as an annotator does.

The backend here is the product's own app and model class with the geometry TEST DOUBLE
(`ColorRegionSegmenter`) in place of SAM2, so a click on a drawn disc has a known right
answer: what is checked is everything around the model, end to end through Label Studio's
UI: which prompts the editor sends, where the returned regions land, which label they
carry, what Alt+click and Auto-Accept do, what a refused prompt leaves behind, and what
Submit saves (read back through Label Studio's API and decoded with label-studio-sdk).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.browser.backends import image_host
from tests.browser.editor import Shown
from tests.browser.projects import new_project, outline_distance, pixels, write_discs
from tests.e2e.ls import HTTP_ERROR, label_config
from tests.support.scenes import DiscScene, brush_mask, iou, polygon_mask

pytestmark = pytest.mark.slow

LABEL = "Disc"
BRUSH = Shown("brushregion", LABEL, False)
KEYPOINT_PROMPT = Shown("keypointregion", LABEL, True)
DISC = DiscScene(1200, 800, 430.0, 370.0, 130.0)
# Two discs of the same colour side by side: a prompt resent for the first would segment it again.
LEFT, RIGHT = DiscScene(1200, 800, 380.0, 400.0, 120.0), DiscScene(1200, 800, 720.0, 400.0, 120.0)
BIG = DiscScene(6000, 4000, 4321.0, 2345.0, 150.0)
SUBPATCH_POLYGON = {"subpatching": {"patch_size": 1024}, "return_format": {"type": "PolygonLabels"}}
MIN_IOU = 0.95


def saved_results(api, task: int) -> list[dict]:
    """The results of the task's one annotation, read back through Label Studio's API."""
    annotations = api.ok("GET", f"/api/tasks/{task}/annotations")
    assert len(annotations) == 1, annotations
    return annotations[0]["result"]


def brush_iou(region: dict, scene: DiscScene) -> float:
    """IoU of a saved brush region, decoded with label-studio-sdk, with the drawn disc."""
    return iou(brush_mask(region), scene.truth((0, 0, scene.width, scene.height)))


def keypoints(context: dict) -> list[tuple[float, float, bool]]:
    """The (x, y, is_positive) of every key point a request carried, in image pixels."""
    regions = context["result"]
    assert all(r["type"] == "keypointlabels" and r["value"]["keypointlabels"] == [LABEL] for r in regions), regions
    return [(*pixels(r), r["is_positive"]) for r in regions]


def test_one_click_on_a_disc_gives_a_brush_region_that_is_saved_as_the_disc(api, geometry_backend, editor, tmp_path):
    """Smart KeyPointLabels -> BrushLabels with Auto-Accept on: one click, one labelled brush region."""
    image = DISC.write(tmp_path / "disc.jpg")
    project, task = new_project(api, geometry_backend.url, label_config("KeyPointLabels", "BrushLabels", LABEL), image)
    editor.open(project, task, (DISC.width, DISC.height)).auto_annotation().auto_accept(True).smart_tool()
    editor.choose_label(LABEL)

    reply = editor.click(DISC.cx, DISC.cy)

    assert [r["type"] for r in reply["data"]["result"]] == ["brushlabels"], reply
    assert editor.regions() == [BRUSH]  # the prompt was accepted and removed, the region kept its label
    editor.shot("brush-region")
    [request] = [r.context for r in geometry_backend.recorder.predictions(task) if r.context]
    [(x, y, positive)] = keypoints(request)
    assert positive and np.hypot(x - DISC.cx, y - DISC.cy) <= 2 * editor.pixel_size(), request

    editor.submit(task)
    [region] = saved_results(api, task)
    assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == [LABEL], region
    assert brush_iou(region, DISC) >= MIN_IOU


def test_a_box_around_a_small_disc_in_a_big_image_gives_its_polygon(api, geometry_backend, editor, tmp_path):
    """Smart RectangleLabels -> PolygonLabels on 6000x4000 with 1024 px subpatching."""
    image = BIG.write(tmp_path / "big.jpg")
    project, task = new_project(
        api, geometry_backend.url, label_config("RectangleLabels", "PolygonLabels", LABEL), image, SUBPATCH_POLYGON
    )
    assert all(r.body["extra_params"] == SUBPATCH_POLYGON for r in geometry_backend.recorder.setups(project))
    editor.open(project, task, (BIG.width, BIG.height)).auto_annotation().auto_accept(True).smart_tool()
    editor.choose_label(LABEL)
    box = BIG.box(margin=0.5)

    reply = editor.drag_box(box)

    assert [r["type"] for r in reply["data"]["result"]] == ["polygonlabels"], reply
    assert editor.regions() == [Shown("polygonregion", LABEL, False)]
    editor.shot("polygon-region")
    [request] = [r.context for r in geometry_backend.recorder.predictions(task) if r.context]
    [prompt] = request["result"]
    assert prompt["type"] == "rectanglelabels" and prompt["value"]["rectanglelabels"] == [LABEL], prompt
    assert np.abs(pixels(prompt) - box).max() <= 2 * editor.pixel_size(), (pixels(prompt), box)

    editor.submit(task)
    [region] = saved_results(api, task)
    assert region["type"] == "polygonlabels" and region["value"]["polygonlabels"] == [LABEL], region
    points = np.array(region["value"]["points"]) / 100 * (BIG.width, BIG.height)
    assert len(points) >= 8, points
    assert outline_distance(points, BIG).max() <= 0.01 * min(BIG.width, BIG.height), outline_distance(points, BIG)
    window = BIG.window()
    assert iou(polygon_mask(region, window), BIG.truth(window)) >= 0.9


def test_refining_clicks_with_auto_accept_off_send_every_point_of_the_object(api, geometry_backend, editor, tmp_path):
    """Auto-Accept off: two positive clicks and an Alt+click negative; every request carries them all."""
    image = DISC.write(tmp_path / "disc.jpg")
    project, task = new_project(api, geometry_backend.url, label_config("KeyPointLabels", "BrushLabels", LABEL), image)
    editor.open(project, task, (DISC.width, DISC.height)).auto_annotation().auto_accept(False).smart_tool()
    clicks = [
        (DISC.cx, DISC.cy, True),
        (DISC.cx + 50, DISC.cy - 60, True),
        (DISC.cx + DISC.radius + 90, DISC.cy, False),
    ]

    for done, (x, y, positive) in enumerate(clicks, 1):
        editor.choose_label(LABEL)
        reply = editor.click(x, y, negative=not positive)
        assert [r["type"] for r in reply["data"]["result"]] == ["brushlabels"], reply
        assert editor.suggestions() == 1  # the latest answer replaces the previous suggestion
        assert editor.regions() == [KEYPOINT_PROMPT] * done  # prompts stay while the object is refined
    editor.shot("suggestion-after-three-points")

    requests = [r.context for r in geometry_backend.recorder.predictions(task) if r.context]
    assert len(requests) == len(clicks)
    slack = 2 * editor.pixel_size()
    for sent, request in enumerate(requests, 1):
        received = keypoints(request)
        assert [positive for *_, positive in received] == [positive for *_, positive in clicks[:sent]], request
        pairs = zip(received, clicks[:sent], strict=True)
        assert max(np.hypot(x - cx, y - cy) for (x, y, _), (cx, cy, _) in pairs) <= slack, request

    editor.accept_suggestions()
    assert editor.regions() == [BRUSH]  # accepting removes the prompts
    editor.submit(task)
    [region] = saved_results(api, task)
    assert region["type"] == "brushlabels" and brush_iou(region, DISC) >= MIN_IOU


def test_a_second_object_of_the_same_label_sends_only_its_own_prompt(api, geometry_backend, editor, tmp_path):
    """Auto-Accept on: the first object's prompt is gone when the second is clicked."""
    image = write_discs(tmp_path / "two-discs.jpg", LEFT, RIGHT)
    project, task = new_project(api, geometry_backend.url, label_config("KeyPointLabels", "BrushLabels", LABEL), image)
    editor.open(project, task, (LEFT.width, LEFT.height)).auto_annotation().auto_accept(True).smart_tool()
    editor.choose_label(LABEL)
    editor.click(LEFT.cx, LEFT.cy)
    editor.choose_label(LABEL)

    reply = editor.click(RIGHT.cx, RIGHT.cy)

    assert editor.regions() == [BRUSH, BRUSH]
    editor.shot("two-objects")
    last = [r.context for r in geometry_backend.recorder.predictions(task) if r.context][-1]
    [(x, y, positive)] = keypoints(last)
    assert positive and np.hypot(x - RIGHT.cx, y - RIGHT.cy) <= 2 * editor.pixel_size(), last
    [answer] = reply["data"]["result"]

    editor.submit(task)
    saved = {region["id"]: region for region in saved_results(api, task)}
    assert len(saved) == 2 and answer["id"] in saved, (answer["id"], list(saved))
    second = saved.pop(answer["id"])
    [first] = saved.values()
    assert brush_iou(second, RIGHT) >= MIN_IOU and brush_iou(second, LEFT) == 0
    assert brush_iou(first, LEFT) >= MIN_IOU and brush_iou(first, RIGHT) == 0


def test_a_refused_prompt_leaves_the_editor_usable_and_saves_nothing_for_it(api, geometry_backend, editor, tmp_path):
    """An image on a host the backend may not fetch from: not Label Studio's, not in IMAGE_HOSTS."""
    images = tmp_path / "host"
    images.mkdir()
    DISC.write(images / "disc.jpg")
    with image_host(images) as port:
        project, _ = new_project(api, geometry_backend.url, label_config("KeyPointLabels", "BrushLabels", LABEL))
        [task] = [t["id"] for t in api.import_tasks(project, [{"image": f"http://localhost:{port}/disc.jpg"}])]
        editor.open(project, task, (DISC.width, DISC.height)).auto_annotation().auto_accept(True).smart_tool()
        replies = []
        for x, y in [(DISC.cx, DISC.cy), (DISC.cx + 40, DISC.cy + 40)]:
            editor.choose_label(LABEL)
            replies.append(editor.click(x, y))
            editor.shot(f"refused-{len(replies)}")

        for reply in replies:
            # Label Studio hands the editor the backend's one-line reason as `errors`; its 1.23.2
            # editor draws nothing for it (DataManager.jsx reads only `data`) and keeps working.
            assert "data" not in reply and len(reply["errors"]) == 1, reply
            error = HTTP_ERROR.match(reply["errors"][0])
            assert error and error["status"] == "400" and "tasks[0].data.image" in error["reason"], reply
        assert editor.regions() == [KEYPOINT_PROMPT] * 2  # the prompts stay, no region came back
        assert len([r for r in geometry_backend.recorder.predictions(task) if r.context]) == 2
        assert not editor.page_errors, editor.page_errors

        editor.submit(task)
    assert [r["type"] for r in saved_results(api, task)] == ["keypointlabels"] * 2


def test_opening_a_task_calls_predict_without_context_before_the_first_click(api, geometry_backend, editor, tmp_path):
    """With "Use predictions to prelabel tasks" on, Label Studio asks the backend when a task opens."""
    image = DISC.write(tmp_path / "disc.jpg")
    config = label_config("KeyPointLabels", "BrushLabels", LABEL)
    recorder = geometry_backend.recorder
    quiet, quiet_task = new_project(
        api,
        geometry_backend.url,
        config,
        image,
        show_collab_predictions=False,
        evaluate_predictions_automatically=False,
    )
    editor.open(quiet, quiet_task, (DISC.width, DISC.height))
    assert recorder.predictions(quiet_task) == []  # the control: these settings send nothing on open

    project, task = new_project(
        api, geometry_backend.url, config, image, show_collab_predictions=True, evaluate_predictions_automatically=False
    )
    assert recorder.predictions(task) == []
    editor.open(project, task, (DISC.width, DISC.height))
    opened = recorder.predictions(task)
    assert opened and all(r.context is None for r in opened), opened
    editor.shot("opened")

    editor.auto_annotation().auto_accept(True).smart_tool().choose_label(LABEL)
    editor.click(DISC.cx, DISC.cy)
    clicked = [r for r in recorder.predictions(task) if r.context]
    assert len(clicked) == 1 and clicked[0].seq > max(r.seq for r in opened)
    assert editor.regions() == [BRUSH]
