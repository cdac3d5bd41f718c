"""End to end: the tests drive a real Label Studio (each version of stack.VERSIONS), which drives a
real SAM2Plus.

Everything goes through Label Studio's own REST API, as its UI does: projects, uploads,
`POST /api/ml` (health + setup), `PATCH /api/ml/<id>` and
`POST /api/ml/<id>/interactive-annotating`, which Label Studio forwards to the backend's
/predict. Label Studio answers interactive-annotating with `{"data": results[0]}` or
`{"errors": [str(requests.HTTPError)]}`.

SAM2Plus runs the real SAM2 architecture with UNTRAINED weights: masks are meaningless, so
these tests assert plumbing and geometry (types, names, labels, image size, and that every
returned point lies in the patch window the prompt allows), never mask quality.

Zero regions is a legitimate answer for one prompt (a mask can be empty). Measured with
untrained hiera-t, a prompt's masks cover 7 % to 95 % of SAM2's input, so an empty answer is
rare; each geometry test therefore sends several prompts, checks every region of every
answer, and requires that at least one prompt produced regions: a backend that always
answers nothing (or drops everything it cannot map back) fails, one unlucky prompt does not.
"""

from __future__ import annotations

import numpy as np
import pytest
import requests
from label_studio_sdk.converter.brush import decode_rle

from tests.e2e.ls import (
    HTTP_ERROR,
    STANDARD_REASONS,
    LabelStudioAPI,
    context,
    keypoint_region,
    label_config,
    rectangle_region,
)
from tests.e2e.stack import IMAGE_SIZE, free_port, sam2plus_backend
from tests.support.regions import require_some

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = IMAGE_SIZE
LABEL = "Obj"
EDGE = 4  # px of slack for contour rounding, dilation and resize rounding

POLYGON_PARAMS = {
    "subpatching": {"patch_size": 256},
    "postprocess": {"mask_size_threshold": 1, "fill_holes": True, "dilate": 2},
    "return_format": {"type": "PolygonLabels", "epsilon": 1, "max_points": 60},
}
# Rectangles far from the origin and from each other: a region reported in patch coordinates,
# or computed on the full frame, lands outside the allowed window.
BOXES = [(990, 680, 1130, 820), (300, 250, 420, 340), (1290, 150, 1430, 250)]


# -- helpers ---------------------------------------------------------------------------------------
def window(box, patch: float, scale: float = 1.0):
    """Where any result may lie: the union of all patch windows that contain the prompt box.

    A patch of `patch` px in the (resized by `scale`) frame is `patch / scale` px of the
    original image, and it must contain the prompt, so results lie within one patch of it.
    """
    size = patch / scale
    x0, y0, x1, y1 = box
    return (
        max(0.0, x1 - size - EDGE),
        max(0.0, y1 - size - EDGE),
        min(WIDTH, x0 + size + EDGE),
        min(HEIGHT, y0 + size + EDGE),
    )


def inside(x: float, y: float, area) -> bool:
    x0, y0, x1, y1 = area
    return x0 <= x <= x1 and y0 <= y <= y1


def regions_of(answer: dict) -> list[dict]:
    """The regions Label Studio hands the editor; fails on `errors`."""
    assert "errors" not in answer, f"Label Studio reported errors: {answer['errors']}"
    data = answer["data"]
    assert isinstance(data, dict) and isinstance(data.get("result"), list), answer
    return data["result"]


def check_common(region: dict, kind: str) -> dict:
    assert region["type"] == kind, region
    assert region["from_name"] == "output" and region["to_name"] == "image", region
    assert (region.get("original_width"), region.get("original_height")) == (WIDTH, HEIGHT), region
    return region["value"]


def check_polygon(region: dict, area, max_points: int) -> None:
    value = check_common(region, "polygonlabels")
    assert value["polygonlabels"] == [LABEL], value
    points = value["points"]
    assert 3 <= len(points) <= max_points, f"{len(points)} points"
    for x, y in points:
        assert 0 <= x <= 100 and 0 <= y <= 100, (x, y)
        px, py = x * WIDTH / 100, y * HEIGHT / 100
        assert inside(px, py, area), f"polygon point ({px:.0f}, {py:.0f}) px lies outside {area}"


def brush_mask(region: dict) -> np.ndarray:
    value = check_common(region, "brushlabels")
    assert value["brushlabels"] == [LABEL], value
    assert value["format"] == "rle", value
    decoded = decode_rle(value["rle"])
    assert decoded.size == WIDTH * HEIGHT * 4, f"RLE decodes to {decoded.size} values, not {WIDTH}x{HEIGHT}x4"
    return decoded.reshape(HEIGHT, WIDTH, 4)[:, :, 3] > 0


def check_brush(region: dict, area) -> None:
    mask = brush_mask(region)
    assert mask.any(), "a brush region with an empty mask"
    ys, xs = np.nonzero(mask)
    corners = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert inside(corners[0], corners[1], area) and inside(corners[2], corners[3], area), (
        f"mask pixels span {corners}, outside {area}"
    )


def check_rectangle(region: dict, area) -> None:
    value = check_common(region, "rectangle")
    assert "rectanglelabels" not in value and "labels" not in value, f"unlabelled Rectangle carries labels: {value}"
    x, y, w, h = value["x"], value["y"], value["width"], value["height"]
    assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 100 + 1e-6 and y + h <= 100 + 1e-6, value
    for px, py in ((x, y), (x + w, y + h)):
        px, py = px * WIDTH / 100, py * HEIGHT / 100
        assert inside(px, py, area), f"rectangle corner ({px:.0f}, {py:.0f}) px lies outside {area}"


def our_reason(message: str, route: str) -> str:
    """The reason phrase inside str(requests.HTTPError): a 4xx with our one-line message."""
    match = HTTP_ERROR.match(message)
    assert match, f"not an HTTP error of the backend: {message!r}"
    assert match["url"].endswith(route), message
    assert match["status"].startswith("4"), f"expected a 4xx for bad input: {message!r}"
    reason = match["reason"]
    assert reason.isascii() and "\n" not in reason and len(reason) > 10, reason
    assert reason.strip().lower() not in STANDARD_REASONS, f"the generic reason phrase {reason!r} says nothing"
    return reason


def setup_refusal(answer: requests.Response) -> str:
    """Label Studio's message for a backend whose /setup refused; returns our reason."""
    assert answer.status_code == 400, f"{answer.status_code}: {answer.text[:1000]}"
    messages = answer.json()["validation_errors"]["non_field_errors"]
    assert len(messages) == 1, messages
    text = messages[0]
    assert "Reason: " in text, text
    error = text.split("Reason: ", 1)[1].split("\n", 1)[0].removesuffix(".")
    return our_reason(error, "/setup")


def connect(api: LabelStudioAPI, project: int, backend: str, extra_params) -> dict:
    added = api.add_ml_backend(project, backend, extra_params)
    assert added.status_code == 201, f"{added.status_code}: {added.text[:2000]}"
    ml = api.ml_backend(added.json()["id"])
    assert ml["state"] == "CO" and ml["readable_state"] == "Connected", ml
    assert ml["is_interactive"] is True and ml["extra_params"] == extra_params, ml
    assert "untrained" in (ml["model_version"] or ""), f"model version {ml['model_version']!r} hides untrained weights"
    return ml


@pytest.fixture(scope="module")
def api(label_studio) -> LabelStudioAPI:
    return label_studio.api()


@pytest.fixture(scope="module")
def polygon_project(api, backend, image_path):
    """RectangleLabels (smart) prompt, PolygonLabels output, an uploaded image, params A."""
    project = api.create_project(label_config("RectangleLabels", "PolygonLabels"))
    task = api.upload_image(project, image_path)
    assert task["data"]["image"].startswith("/data/upload/"), task["data"]
    ml = connect(api, project, backend, POLYGON_PARAMS)
    return project, task, ml


def polygon_answers(api, ml, task) -> list[list[dict]]:
    per_prompt = []
    for box in BOXES:
        answer = api.interactive(ml["id"], task["id"], context(rectangle_region(box, WIDTH, HEIGHT, labels=[LABEL])))
        regions = regions_of(answer)
        for region in regions:
            check_polygon(region, window(box, 256), max_points=60)
        per_prompt.append(regions)
    return per_prompt


# -- the tests -------------------------------------------------------------------------------------
def test_rectangle_prompt_on_uploaded_image_returns_polygons_inside_the_patch_window(api, polygon_project):
    """Smart RectangleLabels -> PolygonLabels with subpatching + postprocess, image fetched with the key."""
    project, task, ml = polygon_project
    require_some(polygon_answers(api, ml, task))


def test_keypoints_two_positive_one_negative_return_a_brush_mask_of_the_image_size(api, backend, image_path):
    params = {"subpatching": {"patch_size": 320}, "return_format": {"type": "BrushLabels"}}
    project = api.create_project(label_config("KeyPointLabels", "BrushLabels"))
    task = api.upload_image(project, image_path)
    ml = connect(api, project, backend, params)
    prompts = [
        [(700, 500, True), (730, 520, True), (800, 470, False)],
        [(1060, 750, True), (1090, 730, True), (1000, 820, False)],
    ]
    per_prompt = []
    for points in prompts:
        regions = regions_of(
            api.interactive(
                ml["id"],
                task["id"],
                context(
                    *(
                        keypoint_region(x, y, WIDTH, HEIGHT, positive=positive, labels=[LABEL])
                        for x, y, positive in points
                    )
                ),
            )
        )
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        for region in regions:
            check_brush(region, window((min(xs), min(ys), max(xs), max(ys)), 320))
        per_prompt.append(regions)
    require_some(per_prompt)


def test_keypoint_prompt_returns_unlabelled_rectangles(api, backend, image_path):
    """Bare KeyPoint (smart) -> Rectangle, with a full-frame resize and a patch mapped back."""
    params = {"fullframe_resize": 0.5, "subpatching": {"patch_size": 200}, "return_format": {"type": "Rectangle"}}
    project = api.create_project(label_config("KeyPoint", "Rectangle"))
    task = api.upload_image(project, image_path)
    ml = connect(api, project, backend, params)
    per_prompt = []
    for x, y in [(1060, 750), (360, 300), (1360, 200)]:
        regions = regions_of(api.interactive(ml["id"], task["id"], context(keypoint_region(x, y, WIDTH, HEIGHT))))
        for region in regions:
            check_rectangle(region, window((x, y, x, y), 200, scale=0.5))
        per_prompt.append(regions)
    require_some(per_prompt)


INVALID_PARAMS = [
    # (extra_params, the key path our message must name)
    ({"return_format": {"type": "BrushLabels"}, "subpatching": {"patch_sise": 512}}, "subpatching.patch_sise"),
    ({"return_format": {"type": "PolygonLabel"}}, "return_format.type"),
    ({"postprocess": {"fill_holes": False}, "return_format": {"type": "PolygonLabels"}}, "postprocess.fill_holes"),
]


def test_invalid_extra_params_are_refused_with_our_message_and_the_project_keeps_its_settings(
    api, backend, polygon_project
):
    project, task, ml = polygon_project
    for params, key in INVALID_PARAMS:
        reason = setup_refusal(api.edit_ml_backend(ml, extra_params=params))
        assert key in reason, f"the message shown to the user does not name {key}: {reason!r}"

    # No GET /api/ml first: that would make Label Studio re-send the stored params to /setup
    # and hide a backend that kept (part of) a refused edit. The first refused edit asked for
    # BrushLabels: polygons prove the previous settings still rule.
    require_some(polygon_answers(api, ml, task))

    stored = api.ml_backend(ml["id"])
    assert stored["extra_params"] == POLYGON_PARAMS and stored["state"] == "CO", stored

    # Adding a backend with invalid params is refused the same way, and nothing is added.
    other = api.create_project(label_config("RectangleLabels", "PolygonLabels"))
    reason = setup_refusal(api.add_ml_backend(other, backend, INVALID_PARAMS[0][0]))
    assert "subpatching.patch_sise" in reason, reason
    assert api.ml_backends(other) == []


@pytest.fixture(scope="module")
def broken_prompts(api, backend, image_path):
    """Tasks and prompts the backend cannot serve, in a project with a stock (brush) backend."""
    project = api.create_project(label_config("RectangleLabels", "BrushLabels"))
    good = api.upload_image(project, image_path)
    closed = free_port()
    tasks = api.import_tasks(
        project,
        [
            {"image": f"/data/upload/{project}/does-not-exist.jpg"},
            {"image": f"http://127.0.0.1:{closed}/nothing-here.jpg"},
        ],
    )
    by_image = {task["data"]["image"]: task for task in tasks}
    ml = connect(api, project, backend, None)
    box = context(rectangle_region(BOXES[0], WIDTH, HEIGHT, labels=[LABEL]))
    flat = context(rectangle_region((990, 680, 990, 820), WIDTH, HEIGHT, labels=[LABEL]))
    return ml, {
        "missing-upload": (by_image[f"/data/upload/{project}/does-not-exist.jpg"], box),
        "unreachable-host": (by_image[f"http://127.0.0.1:{closed}/nothing-here.jpg"], box),
        "zero-width-rectangle": (good, flat),
    }


@pytest.mark.parametrize("case", ["missing-upload", "unreachable-host", "zero-width-rectangle"])
def test_a_prompt_the_backend_cannot_serve_gives_the_annotator_our_one_line_reason(api, broken_prompts, case):
    ml, cases = broken_prompts
    task, prompt = cases[case]
    answer = api.interactive(ml["id"], task["id"], prompt)
    assert "data" not in answer and len(answer.get("errors", [])) == 1, answer
    reason = our_reason(answer["errors"][0], "/predict")
    if case != "zero-width-rectangle":
        assert "image" in reason.lower(), f"the reason does not say the image is the problem: {reason!r}"


def test_uploaded_images_are_fetched_with_a_legacy_token(label_studio, backend, image_path):
    """SAM2Plus downloads /data/upload/... with LABEL_STUDIO_API_KEY, the user's legacy token."""
    _fetch_and_segment(label_studio.api(), backend, image_path)


@pytest.mark.label_studio_feature("personal-access-tokens")
def test_uploaded_images_are_fetched_with_a_personal_access_token(label_studio, image_path, tmp_path):
    """SAM2Plus downloads /data/upload/... with a personal access token as LABEL_STUDIO_API_KEY.

    Legacy tokens are switched off for the organization meanwhile, so neither the backend nor
    Label Studio's /setup `access_token` (always the legacy key) can stand in.
    """
    pat = label_studio.personal_access_token()
    api = LabelStudioAPI(label_studio.url, pat, personal=True)
    label_studio.set_legacy_tokens(api, False)
    try:
        with sam2plus_backend(tmp_path / "pat-backend", label_studio.url, pat) as pat_backend:
            run = _fetch_and_segment(api, pat_backend, image_path)
            legacy = requests.get(
                f"{label_studio.url}{run['task']['data']['image']}",
                headers={"Authorization": f"Token {label_studio.token}"},
                timeout=30,
            )
            assert legacy.status_code == 401, "legacy tokens were meant to be off during this test"
    finally:
        label_studio.set_legacy_tokens(api, True)


def _fetch_and_segment(api: LabelStudioAPI, backend: str, image_path) -> dict:
    """Stock settings (no extra_params): the full image to SAM2, a brush mask back."""
    project = api.create_project(label_config("RectangleLabels", "BrushLabels"))
    task = api.upload_image(project, image_path)
    ml = connect(api, project, backend, None)
    per_prompt = []
    for box in BOXES[:2]:
        regions = regions_of(
            api.interactive(ml["id"], task["id"], context(rectangle_region(box, WIDTH, HEIGHT, labels=[LABEL])))
        )
        for region in regions:
            check_brush(region, (0, 0, WIDTH, HEIGHT))
        per_prompt.append(regions)
    require_some(per_prompt)
    return {"project": project, "task": task, "ml": ml}
