"""Geometry with known answers: drawn discs segmented through the whole pipeline.

The segmenter is the `ColorRegionSegmenter` test double (tests/support), which follows SAM2's
resolution path (1024x1024 input, 256x256 logits); every other stage is the product's own.
Brush masks are decoded with label-studio-sdk, polygons rasterised, rectangles compared with
the disc's bounding box. What this shows is the precision of the coordinate mapping and what
resolution loses on the way to a 1024 px input, never SAM2's segmentation quality.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from sam2plus.params import parse_extra_params
from tests.conftest import make_pipeline
from tests.support.scenes import (
    DiscScene,
    box_iou,
    brush_mask,
    iou,
    label_config,
    point_context,
    polygon_mask,
    rect_context,
    rectangle_box,
)

MIN_IOU = 0.97
FORMATS = ("BrushLabels", "PolygonLabels", "RectangleLabels")
# Douglas-Peucker at epsilon 1 gives a disc of r patch px about pi * sqrt(r / 2) vertices: 39 at
# r = 300, 67 at r = 900; this cap binds for the big discs and leaves the small ones alone.
MAX_POINTS = 48

# (id, scene, extra_params without return_format, expected mode, expected patch size, min IoU).
# Oversize growth: the prompt box is the disc's with 5 % margin; the patch grows by
# box / patch_size * (1 + oversize_padding 0.05), rounded up, and falls back to the whole frame
# when that does not fit.
CASES = [
    ("stock-fullframe", DiscScene(6000, 4000, 3000, 2000, 300), {}, "fullframe", (6000, 4000), MIN_IOU),
    (
        "resize-fraction",
        DiscScene(6000, 4000, 2500, 1800, 300),
        {"fullframe_resize": 0.5},
        "fullframe",
        (3000, 2000),
        MIN_IOU,
    ),
    (
        "resize-pair",
        DiscScene(6000, 4000, 2500, 1800, 300),
        {"fullframe_resize": [2000, 1000]},
        "fullframe",
        (2000, 1000),
        MIN_IOU,
    ),
    (
        "resize-square",
        DiscScene(6000, 4000, 2500, 1800, 300),
        {"fullframe_resize": 1500},
        "fullframe",
        (1500, 1500),
        MIN_IOU,
    ),
    ("patch-default", DiscScene(6000, 4000, 2500, 1800, 300), {"subpatching": {}}, "patch", (1024, 1024), MIN_IOU),
    (
        "patch-default-at-edge",
        DiscScene(6000, 4000, 320, 330, 300),
        {"subpatching": {}},
        "patch",
        (1024, 1024),
        MIN_IOU,
    ),
    (
        "patch-padding-at-edge",
        DiscScene(6000, 4000, 320, 330, 300),
        {"subpatching": {"mode": "padding", "padding_fill": "white"}},
        "patch",
        (1024, 1024),
        MIN_IOU,
    ),
    (
        "patch-oversize-growth",
        DiscScene(6000, 4000, 3000, 2000, 900),
        {"subpatching": {"patch_size": 1024}},
        "patch",
        (1985, 1985),
        MIN_IOU,
    ),
    (
        "patch-oversize-fallback",
        DiscScene(6000, 4000, 3000, 2000, 1900),
        {"subpatching": {}},
        "fallback",
        (6000, 4000),
        MIN_IOU,
    ),
    # r 950 frame px: box 1995, grown 1024 * 1995 / 1024 * 1.05 = 2095 > the 2000 px high frame
    (
        "resize-oversize-fallback",
        DiscScene(6000, 4000, 3000, 2000, 1900),
        {"fullframe_resize": 0.5, "subpatching": {}},
        "fallback",
        (3000, 2000),
        MIN_IOU,
    ),
    (
        "patch-frame-smaller-than-patch",
        DiscScene(6000, 4000, 3000, 2000, 600),
        {"fullframe_resize": 0.1, "subpatching": {}},
        "patch",
        (1024, 1024),
        MIN_IOU,
    ),
    (
        "resize-and-patch",
        DiscScene(6000, 4000, 2500, 1800, 300),
        {"fullframe_resize": 0.5, "subpatching": {"patch_size": [800, 600]}},
        "patch",
        (800, 600),
        MIN_IOU,
    ),
    # r 450 frame px: box 945, grown 512 * 945 / 512 * 1.05 = 992.25 -> 993
    (
        "resize-oversize-padding",
        DiscScene(6000, 4000, 3000, 2000, 900),
        {"fullframe_resize": 0.5, "subpatching": {"patch_size": 512, "mode": "padding"}},
        "patch",
        (993, 993),
        MIN_IOU,
    ),
    # box 1050, grown 512 * 1050 / 512 * 1.05 = 1102.5 -> 1103, centred on (530, 530): starts 22 px outside the image
    (
        "oversize-padding-at-edge",
        DiscScene(6000, 4000, 530, 530, 500),
        {"subpatching": {"patch_size": 512, "mode": "padding", "padding_fill": "white"}},
        "patch",
        (1103, 1103),
        MIN_IOU,
    ),
    (
        "big-resize-padding-corner",
        DiscScene(10000, 10000, 400, 9600, 350),
        {"fullframe_resize": 0.25, "subpatching": {"mode": "padding", "patch_size": 512}},
        "patch",
        (512, 512),
        MIN_IOU,
    ),
]


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    return {case[0]: case[1].write(root / f"{case[0]}.jpg") for case in CASES}, root


def _run(pipeline, scene, path, params: dict, fmt: str, context=None):
    shape = {"max_points": MAX_POINTS} if fmt.startswith("Polygon") else {}
    params = parse_extra_params({**params, "return_format": {"type": fmt, **shape}})
    task = {"id": 1, "data": {"image": str(path)}}
    context = context or rect_context(scene.box(), scene.width, scene.height)
    return pipeline.run(task, context, label_config(fmt), params)


def _check_regions(prediction, scene, fmt, min_iou):
    regions = prediction.regions
    assert len(regions) == 1, f"{fmt}: expected one region for one disc, got {len(regions)}"
    region = regions[0]
    assert (region["original_width"], region["original_height"]) == (scene.width, scene.height)
    assert region["value"][fmt.lower()] == ["object"]
    window = scene.window()
    if fmt == "BrushLabels":
        mask = brush_mask(region)
        assert mask.shape == (scene.height, scene.width)
        x0, y0, x1, y1 = window
        assert not mask.sum() - mask[y0:y1, x0:x1].sum(), "mask pixels outside the disc's neighbourhood"
        return iou(mask[y0:y1, x0:x1], scene.truth(window))
    if fmt == "PolygonLabels":
        points = np.array(region["value"]["points"])
        assert ((points >= 0) & (points <= 100)).all()
        assert 3 <= len(points) <= MAX_POINTS, f"{len(points)} vertices, max_points is {MAX_POINTS}"
        xy = points / 100 * (scene.width, scene.height)
        cell = (
            max(
                prediction.frame_map.patch_size[0] / prediction.frame_map.scale[0],
                prediction.frame_map.patch_size[1] / prediction.frame_map.scale[1],
            )
            / 256
        )
        distance = np.abs(np.hypot(xy[:, 0] - scene.cx, xy[:, 1] - scene.cy) - scene.radius)
        assert distance.max() <= 1.5 * cell + 2, f"a vertex lies {distance.max():.1f} px off the circle"
        return iou(polygon_mask(region, window), scene.truth(window))
    box = rectangle_box(region)
    r = scene.radius
    return box_iou(box, (scene.cx - r, scene.cy - r, scene.cx + r, scene.cy + r))


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_drawn_disc_comes_back_in_every_format(case, scene_files, tmp_path):
    name, scene, params, mode, patch_size, min_iou = case
    files, root = scene_files
    pipeline = make_pipeline(root)
    for fmt in FORMATS:
        prediction = _run(pipeline, scene, files[name], params, fmt)
        assert prediction.frame_map.mode == mode
        assert prediction.frame_map.patch_size == patch_size
        score = _check_regions(prediction, scene, fmt, min_iou)
        vertices = f", {len(prediction.regions[0]['value']['points'])} vertices" if fmt == "PolygonLabels" else ""
        print(f"{name:32s} {fmt:16s} IoU {score:.4f}{vertices}")
        assert score >= min_iou, f"{name} {fmt}: IoU {score:.3f} < {min_iou}"
    assert pipeline.segmenter.encoder_runs == 1, "three formats on one window must encode the patch once"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["patch-padding-at-edge", "oversize-padding-at-edge"])
def test_padding_mode_fills_outside_the_frame(scene_files, name):
    files, root = scene_files
    _, scene, params, _, patch_size, _ = next(case for case in CASES if case[0] == name)
    pipeline = make_pipeline(root)
    task = {"data": {"image": str(files[name])}}
    prediction = pipeline.run(
        task,
        rect_context(scene.box(), scene.width, scene.height),
        label_config(),
        parse_extra_params(params),
        artifacts=True,
    )
    window = prediction.frame_map.window
    assert window.x < 0 and window.y < 0, "padding mode centres the patch on the prompt past the edge"
    assert math.isclose(window.x + window.width / 2, scene.cx, abs_tol=1)
    assert math.isclose(window.y + window.height / 2, scene.cy, abs_tol=1)
    patch = cv2.imread(str(prediction.artifacts / "patch.jpg"))
    assert patch.shape[1::-1] == patch_size
    assert patch[5, 5].min() > 240, "the padded corner is filled with the padding colour"


@pytest.mark.slow
def test_subpatching_keeps_small_objects_in_10000px_images(tmp_path):
    """A 24 px disc in a 10000x10000 image survives only with a patch (with this test double: what
    resolution loses, not what SAM2 would see)."""
    scene = DiscScene(10000, 10000, 6200, 3700, 12)
    path = scene.write(tmp_path / "big.jpg")
    pipeline = make_pipeline(tmp_path)
    context = point_context([(scene.cx, scene.cy)], scene.width, scene.height)
    scores = {}
    for label, params in (("fullframe", {}), ("subpatch-1024", {"subpatching": {}})):
        prediction = _run(pipeline, scene, path, params, "BrushLabels", context)
        mask = (
            brush_mask(prediction.regions[0])[
                int(scene.cy) - 100 : int(scene.cy) + 100, int(scene.cx) - 100 : int(scene.cx) + 100
            ]
            if prediction.regions
            else None
        )
        window = (int(scene.cx) - 100, int(scene.cy) - 100, int(scene.cx) + 100, int(scene.cy) + 100)
        scores[label] = iou(mask, scene.truth(window)) if mask is not None else 0.0
    print(
        f"small disc r=12 in 10000x10000: IoU without subpatching {scores['fullframe']:.3f}, "
        f"with subpatching {scores['subpatch-1024']:.3f}"
    )
    assert scores["subpatch-1024"] >= 0.95  # measured 0.98 (docs/extra-params.md, subpatching)
    assert scores["fullframe"] <= 0.05  # measured 0.00: the disc is 2.5 px wide in the 1024 px view


# A window encoded for an earlier click (on the background, away from the disc) serves the disc's
# rectangle: the disc sits off-centre in it, and must come back exactly where it was drawn.
# (id, scene, extra_params without return_format, the earlier click in image px)
REUSE_CASES = [
    ("reuse-offcentre", DiscScene(6000, 4000, 2500, 1800, 150), {"subpatching": {"patch_size": 1024}}, (2700, 1950)),
    (
        "reuse-resize-padding-past-edge",
        DiscScene(6000, 4000, 400, 3500, 120),
        {"fullframe_resize": 0.5, "subpatching": {"patch_size": 512, "mode": "padding", "padding_fill": "white"}},
        (300, 3700),
    ),
    (
        "reuse-non-square",
        DiscScene(6000, 4000, 3000, 2000, 100),
        {"subpatching": {"patch_size": [900, 500]}},
        (2800, 1950),
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", REUSE_CASES, ids=[c[0] for c in REUSE_CASES])
def test_a_disc_served_from_an_off_centre_reused_window_maps_back_exactly(case, tmp_path):
    name, scene, params, (px, py) = case
    path = scene.write(tmp_path / f"{name}.jpg")
    fresh = _run(make_pipeline(tmp_path), scene, path, params, "BrushLabels").frame_map
    pipeline = make_pipeline(tmp_path)
    earlier = _run(pipeline, scene, path, params, "BrushLabels", point_context([(px, py)], scene.width, scene.height))
    window = earlier.frame_map.window
    assert window != fresh.window, "the case must put the disc off-centre, away from where it would be placed"
    for fmt in FORMATS:
        prediction = _run(pipeline, scene, path, params, fmt)
        assert prediction.frame_map.reused and prediction.frame_map.window == window
        score = _check_regions(prediction, scene, fmt, MIN_IOU)
        print(f"{name:32s} {fmt:16s} IoU {score:.4f} window {window}")
        assert score >= MIN_IOU, f"{name} {fmt}: IoU {score:.3f} < {MIN_IOU}"
    assert pipeline.segmenter.encoder_runs == 1, "the disc's prompts ran no encoder of their own"
