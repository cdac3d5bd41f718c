"""sam2plus.results: a patch-pixel mask -> Label Studio regions, checked against drawn masks with known answers.

Blobs are axis-aligned rectangles of pixels, so every region has an exact expected value: a
rectangle's box, a polygon's four vertices at the corner pixels' centres, a brush mask equal
(decoded with label-studio-sdk) to the drawn pixels placed in the image.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from sam2plus.frames import FrameMap, Window
from sam2plus.labelconfig import find_output_control
from sam2plus.masks import Mask
from sam2plus.params import RETURN_TYPES, parse_extra_params
from sam2plus.results import component_boxes, polygons, regions, simplify
from tests.support.scenes import DiscScene, bitmask_mask, brush_mask, label_config, rect_context

# Blobs (x0, y0, x1, y1) in mask pixels, listed top to bottom, with areas 600, 2400, 100 and
# 2 x 25 (two squares touching at a corner: one 8-connected blob). Largest first is L, M, S, D:
# neither the raster order of the blobs nor its reverse.
M, L, S = (20, 5, 50, 25), (100, 40, 160, 80), (10, 90, 20, 100)
D = ((170, 100, 175, 105), (175, 105, 180, 110))
BY_AREA = [L, M, S, (170, 100, 180, 110)]
OFFSET = (10, 20)  # where the mask's top-left pixel lies in the patch

# Patch pixels are image pixels (a whole 300x200 image as the patch) ...
IDENTITY = FrameMap((300, 200), (300, 200), Window(0, 0, 300, 200), "fullframe")
# ... or the frame is the image at half size and the patch a window at (40, 30) of it.
SCALED = FrameMap((600, 400), (300, 200), Window(40, 30, 220, 160), "patch")


def blobs() -> Mask:
    bits = np.zeros((120, 200), bool)
    for x0, y0, x1, y1 in (M, L, S, *D):
        bits[y0:y1, x0:x1] = True
    return Mask(bits, *OFFSET)


def fmt(type_: str, **keys):
    return parse_extra_params({"return_format": {"type": type_, **keys}}).return_format


def answer(mask: Mask, frame_map: FrameMap, type_: str, label: str | None = "tooth", **keys) -> list[dict]:
    control = find_output_control(label_config(type_), type_)
    return regions(mask, frame_map, fmt(type_, **keys), control, label, 0.75)


def in_image(frame_map: FrameMap, patch_xy) -> np.ndarray:
    """Patch coordinates -> image pixels, by hand: (patch + window offset) / scale."""
    w = frame_map.window
    return (np.asarray(patch_xy, dtype=np.float64) + (w.x, w.y)) / frame_map.scale


def pixels(region: dict, points) -> np.ndarray:
    """Percent of the image -> image pixels."""
    return np.asarray(points, dtype=np.float64) / 100 * (region["original_width"], region["original_height"])


# ----------------------------------------------------------------------------- rectangles


@pytest.mark.parametrize("frame_map", [IDENTITY, SCALED], ids=["identity", "scaled"])
def test_each_blob_becomes_one_rectangle_largest_first(frame_map):
    found = answer(blobs(), frame_map, "RectangleLabels")
    assert len(found) == len(BY_AREA)
    ox, oy = OFFSET
    for region, (x0, y0, x1, y1) in zip(found, BY_AREA, strict=True):
        value = region["value"]
        corners = pixels(
            region, [(value["x"], value["y"]), (value["x"] + value["width"], value["y"] + value["height"])]
        )
        expected = in_image(frame_map, [(ox + x0, oy + y0), (ox + x1, oy + y1)])
        assert np.allclose(corners, expected), (corners, expected)
        assert value["rotation"] == 0 and value["rectanglelabels"] == ["tooth"]


def test_component_boxes_are_patch_pixel_edges():
    ox, oy = OFFSET
    assert component_boxes(blobs()) == [(ox + x0, oy + y0, ox + x1, oy + y1) for x0, y0, x1, y1 in BY_AREA]


# ----------------------------------------------------------------------------- polygons


@pytest.mark.parametrize("frame_map", [IDENTITY, SCALED], ids=["identity", "scaled"])
def test_each_blob_becomes_one_polygon_largest_first(frame_map):
    found = answer(blobs(), frame_map, "PolygonLabels")
    assert len(found) == len(BY_AREA)
    ox, oy = OFFSET
    for region, (x0, y0, x1, y1) in zip(found, BY_AREA, strict=True):
        assert region["value"]["closed"] is True and region["value"]["polygonlabels"] == ["tooth"]
        points = pixels(region, region["value"]["points"])
        # The ring runs through the centres of the blob's border pixels.
        low, high = in_image(frame_map, [(ox + x0 + 0.5, oy + y0 + 0.5), (ox + x1 - 0.5, oy + y1 - 0.5)])
        assert np.allclose(points.min(axis=0), low) and np.allclose(points.max(axis=0), high)
        if (x0, y0, x1, y1) != BY_AREA[-1]:  # a rectangle of pixels: exactly its four corners
            corners = {(x, y) for x in (low[0], high[0]) for y in (low[1], high[1])}
            assert {tuple(p) for p in np.round(points, 9)} == {tuple(np.round(c, 9)) for c in corners}


def test_polygon_rings_are_in_continuous_patch_coordinates_largest_first():
    rings = polygons(blobs(), fmt("Polygon"))
    ox, oy = OFFSET
    assert [tuple(ring.min(axis=0)) for ring in rings] == [(ox + x0 + 0.5, oy + y0 + 0.5) for x0, y0, *_ in BY_AREA]


def test_a_blob_too_thin_for_a_ring_gives_no_polygon_but_a_rectangle():
    bits = np.zeros((10, 10), bool)
    bits[4, 2:8] = True  # one row of pixels: its outer contour is a line, not a ring
    assert answer(Mask(bits), IDENTITY, "Polygon") == []
    (rectangle,) = answer(Mask(bits), IDENTITY, "Rectangle")
    assert pixels(rectangle, [(rectangle["value"]["width"], rectangle["value"]["height"])]).tolist() == [[6, 1]]


# ----------------------------------------------------------------------------- brush


def test_all_blobs_become_one_brush_region_equal_to_the_mask_in_the_image():
    mask = blobs()
    (region,) = answer(mask, IDENTITY, "BrushLabels")
    value = region["value"]
    assert value["format"] == "rle" and value["brushlabels"] == ["tooth"]
    decoded = decode_rle(value["rle"]).reshape(200, 300, 4)[:, :, 3] > 0
    expected = np.zeros((200, 300), bool)
    expected[OFFSET[1] : OFFSET[1] + 120, OFFSET[0] : OFFSET[0] + 200] = mask.bits
    assert np.array_equal(decoded, expected)


def test_a_brush_on_a_half_size_frame_covers_each_mask_pixel_with_two_by_two_image_pixels():
    mask = blobs()
    (region,) = answer(mask, SCALED, "Brush")
    assert "brushlabels" not in region["value"]
    decoded = decode_rle(region["value"]["rle"]).reshape(400, 600, 4)[:, :, 3] > 0
    expected = np.zeros((400, 600), bool)
    x, y = (OFFSET[0] + 40) * 2, (OFFSET[1] + 30) * 2
    expected[y : y + 240, x : x + 400] = np.kron(mask.bits, np.ones((2, 2), bool))
    assert np.array_equal(decoded, expected)


# ----------------------------------------------------------------------------- bitmask


@pytest.mark.parametrize("frame_map", [IDENTITY, SCALED], ids=["identity", "scaled"])
def test_a_bitmask_holds_exactly_the_pixels_of_the_brush_of_the_same_mask(frame_map):
    (brush,) = answer(blobs(), frame_map, "BrushLabels")
    (bitmask,) = answer(blobs(), frame_map, "BitmaskLabels")
    assert bitmask["type"] == "bitmasklabels" and bitmask["value"]["bitmasklabels"] == ["tooth"]
    assert set(bitmask["value"]) == {"imageDataURL", "bitmasklabels"}
    assert np.array_equal(bitmask_mask(bitmask), brush_mask(brush))  # both of the image's size


def test_a_click_answers_the_same_pixels_in_brushlabels_and_bitmasklabels(geometry_pipeline, tmp_path):
    scene = DiscScene(900, 700, 400, 300, 120)
    task = {"data": {"image": str(scene.write(tmp_path / "disc.jpg"))}}
    context = rect_context(scene.box(), scene.width, scene.height, label="object")
    answers = {}
    for type_ in ("BrushLabels", "BitmaskLabels"):
        params = parse_extra_params({"subpatching": {"patch_size": 512}, "return_format": {"type": type_}})
        (answers[type_],) = geometry_pipeline.run(task, context, label_config(type_), params).regions
    brush = brush_mask(answers["BrushLabels"])
    assert brush.sum() > 0.9 * np.pi * 120**2
    assert np.array_equal(bitmask_mask(answers["BitmaskLabels"]), brush)
    assert answers["BitmaskLabels"]["value"]["bitmasklabels"] == ["object"]


# ----------------------------------------------------------------------------- every format


@pytest.mark.parametrize("type_", RETURN_TYPES)
def test_an_empty_mask_gives_no_region(type_):
    assert answer(Mask.empty(), IDENTITY, type_) == []
    assert answer(Mask(np.zeros((5, 5), bool), 3, 3), IDENTITY, type_) == []


@pytest.mark.parametrize("type_", RETURN_TYPES)
def test_labels_and_the_region_frame(type_):
    labelled, unlabelled = answer(blobs(), SCALED, type_), answer(blobs(), SCALED, type_, label=None)
    assert labelled and len(labelled) == len(unlabelled)
    key = type_.lower()
    for region in labelled:
        assert region["type"] == key and (region["from_name"], region["to_name"]) == ("output", "image")
        assert (region["original_width"], region["original_height"]) == (600, 400)
        assert region["score"] == 0.75 and region["image_rotation"] == 0 and region["readonly"] is False
        assert region["value"].get(key) == (["tooth"] if type_.endswith("Labels") else None)
    for region in unlabelled:  # no label at all: a labelled type carries an empty list
        assert region["value"].get(key) == ([] if type_.endswith("Labels") else None)
    assert len({region["id"] for region in labelled + unlabelled}) == 2 * len(labelled)


LABELS_CONFIG = (
    '<View><Image name="image" value="$image"/><Rectangle name="box" toName="image" smart="true"/>'
    '<RectangleLabels name="prompt" toName="image" smart="true"><Label value="second"/></RectangleLabels>'
    '<PolygonLabels name="output" toName="image"><Label value="first"/><Label value="second"/>'
    "</PolygonLabels></View>"
)


def test_a_prompt_without_a_label_takes_the_output_tags_first_label(geometry_pipeline, tmp_path):
    scene = DiscScene(400, 300, 200, 150, 60)
    task = {"data": {"image": str(scene.write(tmp_path / "disc.jpg"))}}
    params = parse_extra_params({"return_format": {"type": "PolygonLabels"}})
    labelled = rect_context(scene.box(), scene.width, scene.height, label="second")
    bare = {
        "result": [
            {
                **labelled["result"][0],
                "type": "rectangle",
                "from_name": "box",
                "value": {k: v for k, v in labelled["result"][0]["value"].items() if k != "rectanglelabels"},
            }
        ]
    }
    for context, expected in ((bare, ["first"]), (labelled, ["second"])):
        (region,) = geometry_pipeline.run(task, context, LABELS_CONFIG, params).regions
        assert region["value"]["polygonlabels"] == expected


# ----------------------------------------------------------------------------- max_points bisection

RADIUS = 200


@pytest.fixture(scope="module")
def circle() -> np.ndarray:
    """The outer contour of a drawn disc of radius 200 px (1128 points)."""
    image = np.zeros((500, 500), np.uint8)
    cv2.circle(image, (250, 250), RADIUS, 1, -1)
    (contour,), _ = cv2.findContours(image, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return contour


def spent(ring: np.ndarray, contour: np.ndarray) -> float:
    """The tolerance a Douglas-Peucker ring used up: the largest distance of a contour point from the
    line through the two ring vertices that enclose it along the contour."""
    points = contour.reshape(-1, 2).astype(np.float64)
    index = {tuple(p): i for i, p in enumerate(contour.reshape(-1, 2))}
    corners = [index[tuple(p)] for p in ring.reshape(-1, 2)]
    worst = 0.0
    for i, j in zip(corners, corners[1:] + corners[:1], strict=True):
        arc = points[np.arange(i, j + (len(points) if j <= i else 0)) % len(points)]
        (ax, ay), (dx, dy) = points[i], points[j] - points[i]
        worst = max(worst, float((np.abs((arc[:, 0] - ax) * dy - (arc[:, 1] - ay) * dx) / math.hypot(dx, dy)).max()))
    return worst


def test_with_room_to_spare_the_ring_is_douglas_peucker_at_epsilon(circle):
    fine = simplify(circle, 1, 100)
    assert np.array_equal(fine, cv2.approxPolyDP(circle, 1, True)) and spent(fine, circle) <= 1
    # epsilon < 1: a fraction of the perimeter (2 pi 200 px, so 0.003 allows about 3.8 px)
    coarse = simplify(circle, 0.003, 100)
    assert np.array_equal(coarse, cv2.approxPolyDP(circle, 0.003 * cv2.arcLength(circle, True), True))
    assert 1 < spent(coarse, circle) <= 0.003 * cv2.arcLength(circle, True) and len(coarse) < len(fine)


@pytest.mark.parametrize("max_points", [8, 12, 16, 24, 40])
def test_max_points_raises_epsilon_to_the_least_that_meets_it(circle, max_points):
    assert len(cv2.approxPolyDP(circle, 1, True)) > max_points, "the cap binds at epsilon 1"
    ring = simplify(circle, 1, max_points)
    assert 3 <= len(ring) <= max_points
    contour = {tuple(p) for p in circle.reshape(-1, 2)}
    assert all(tuple(p) in contour for p in ring.reshape(-1, 2)), "vertices are contour points"
    assert all(abs(math.hypot(x - 250, y - 250) - RADIUS) <= 1 for x, y in ring.reshape(-1, 2))
    # The least tolerance that meets the cap: the ring is Douglas-Peucker at the tolerance it used up,
    # and a hair less gives more vertices than allowed.
    used = spent(ring, circle)
    assert np.array_equal(cv2.approxPolyDP(circle, used, True), ring)
    assert len(cv2.approxPolyDP(circle, used - 1e-3, True)) > max_points


def test_max_points_holds_for_every_blob_of_a_mask():
    bits = np.zeros((400, 700), bool)
    cv2.circle(bits.view(np.uint8), (150, 200), 120, 1, -1)
    cv2.circle(bits.view(np.uint8), (500, 200), 150, 1, -1)
    rings = polygons(Mask(bits), fmt("Polygon", max_points=10))
    assert len(rings) == 2 and all(3 <= len(ring) <= 10 for ring in rings)
    assert rings[0][:, 0].min() > 340, "the bigger disc (on the right) comes first"
