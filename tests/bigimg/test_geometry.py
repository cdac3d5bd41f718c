"""Geometry with known answers: drawn discs segmented through the whole pipeline.

The segmenter is the `ColorRegionSegmenter` test double (tests/support), which follows SAM2's
resolution path (1024x1024 input, 256x256 logits); every other stage is the product's own.
Brush masks are decoded with label-studio-sdk, polygons rasterised, rectangles compared with
the disc's bounding box.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sam2plus.params import parse_extra_params
from tests.conftest import make_pipeline
from tests.support.scenes import (DiscScene, box_iou, brush_mask, iou, label_config, point_context,
                                  polygon_mask, rect_context, rectangle_box)

MIN_IOU = 0.97
FORMATS = ("BrushLabels", "PolygonLabels", "RectangleLabels")

# (id, scene, extra_params without return_format, expected mode, expected patch size or None, min IoU)
CASES = [
    ("stock-fullframe", DiscScene(6000, 4000, 3000, 2000, 300), {}, "fullframe", (6000, 4000), MIN_IOU),
    ("resize-fraction", DiscScene(6000, 4000, 2500, 1800, 300), {"fullframe_resize": 0.5}, "fullframe", (3000, 2000), MIN_IOU),
    ("resize-pair", DiscScene(6000, 4000, 2500, 1800, 300), {"fullframe_resize": [2000, 1000]}, "fullframe", (2000, 1000), MIN_IOU),
    ("resize-square", DiscScene(6000, 4000, 2500, 1800, 300), {"fullframe_resize": 1500}, "fullframe", (1500, 1500), MIN_IOU),
    ("patch-default", DiscScene(6000, 4000, 2500, 1800, 300), {"subpatching": {}}, "patch", (1024, 1024), MIN_IOU),
    ("patch-default-at-edge", DiscScene(6000, 4000, 320, 330, 300), {"subpatching": {}}, "patch", (1024, 1024), MIN_IOU),
    ("patch-padding-at-edge", DiscScene(6000, 4000, 320, 330, 300),
     {"subpatching": {"mode": "padding", "padding_fill": "white"}}, "patch", (1024, 1024), MIN_IOU),
    ("patch-oversize-growth", DiscScene(6000, 4000, 3000, 2000, 900), {"subpatching": {"patch_size": 1024}}, "patch",
     (1985, 1985), MIN_IOU),
    ("patch-oversize-fallback", DiscScene(6000, 4000, 3000, 2000, 1900), {"subpatching": {}}, "fallback", (6000, 4000), MIN_IOU),
    ("patch-frame-smaller-than-patch", DiscScene(6000, 4000, 3000, 2000, 600), {"fullframe_resize": 0.1, "subpatching": {}},
     "patch", (1024, 1024), MIN_IOU),
    ("resize-and-patch", DiscScene(6000, 4000, 2500, 1800, 300), {"fullframe_resize": 0.5, "subpatching": {"patch_size": [800, 600]}},
     "patch", (800, 600), MIN_IOU),
    ("resize-oversize-padding", DiscScene(6000, 4000, 3000, 2000, 900),
     {"fullframe_resize": 0.5, "subpatching": {"patch_size": 512, "mode": "padding"}}, "patch", None, MIN_IOU),
    ("big-resize-padding-corner", DiscScene(10000, 10000, 400, 9600, 350),
     {"fullframe_resize": 0.25, "subpatching": {"mode": "padding", "patch_size": 512}}, "patch", (512, 512), MIN_IOU),
]


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    return {case[0]: case[1].write(root / f"{case[0]}.jpg") for case in CASES}, root


def _run(pipeline, scene, path, params: dict, fmt: str, context=None):
    params = parse_extra_params({**params, "return_format": {"type": fmt}})
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
        xy = points / 100 * (scene.width, scene.height)
        cell = max(prediction.frame_map.patch_size[0] / prediction.frame_map.scale[0],
                   prediction.frame_map.patch_size[1] / prediction.frame_map.scale[1]) / 256
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
        if patch_size:
            assert prediction.frame_map.patch_size == patch_size
        score = _check_regions(prediction, scene, fmt, min_iou)
        print(f"{name:32s} {fmt:16s} IoU {score:.4f}")
        assert score >= min_iou, f"{name} {fmt}: IoU {score:.3f} < {min_iou}"
    assert pipeline.segmenter.encoder_runs == 1, "three formats on one window must encode the patch once"


@pytest.mark.slow
def test_padding_mode_fills_outside_the_frame(scene_files):
    files, root = scene_files
    scene = CASES[6][1]
    pipeline = make_pipeline(root)
    params = parse_extra_params({"subpatching": {"mode": "padding", "padding_fill": "white"}})
    task = {"data": {"image": str(files["patch-padding-at-edge"])}}
    prediction = pipeline.run(task, rect_context(scene.box(), scene.width, scene.height),
                              label_config(), params, artifacts=True)
    window = prediction.frame_map.window
    assert window.x < 0 and window.y < 0, "padding mode centres the patch on the prompt past the edge"
    assert math.isclose(window.x + window.width / 2, scene.cx, abs_tol=1)
    import cv2
    patch = cv2.imread(str(prediction.artifacts / "patch.jpg"))
    assert patch.shape[:2] == (1024, 1024)
    assert patch[5, 5].min() > 240, "the padded corner is filled with the padding colour"


@pytest.mark.slow
def test_subpatching_keeps_small_objects_in_10000px_images(tmp_path):
    """The product's claim: a 24 px object in a 10000x10000 image survives only with a patch."""
    scene = DiscScene(10000, 10000, 6200, 3700, 12)
    path = scene.write(tmp_path / "big.jpg")
    pipeline = make_pipeline(tmp_path)
    context = point_context([(scene.cx, scene.cy)], scene.width, scene.height)
    scores = {}
    for label, params in (("fullframe", {}), ("subpatch-1024", {"subpatching": {}})):
        prediction = _run(pipeline, scene, path, params, "BrushLabels", context)
        mask = brush_mask(prediction.regions[0])[int(scene.cy) - 100:int(scene.cy) + 100,
                                                  int(scene.cx) - 100:int(scene.cx) + 100] if prediction.regions else None
        window = (int(scene.cx) - 100, int(scene.cy) - 100, int(scene.cx) + 100, int(scene.cy) + 100)
        scores[label] = iou(mask, scene.truth(window)) if mask is not None else 0.0
    print(f"small disc r=12 in 10000x10000: IoU without subpatching {scores['fullframe']:.3f}, "
          f"with subpatching {scores['subpatch-1024']:.3f}")
    assert scores["subpatch-1024"] >= 0.8
    assert scores["fullframe"] <= 0.3


# A window encoded for an earlier click (on the background, away from the disc) serves the disc's
# rectangle: the disc sits off-centre in it, and must come back exactly where it was drawn.
# (id, scene, extra_params without return_format, the earlier click in image px)
REUSE_CASES = [
    ("reuse-offcentre", DiscScene(6000, 4000, 2500, 1800, 150), {"subpatching": {"patch_size": 1024}}, (2700, 1950)),
    ("reuse-resize-padding-past-edge", DiscScene(6000, 4000, 400, 3500, 120),
     {"fullframe_resize": 0.5, "subpatching": {"patch_size": 512, "mode": "padding", "padding_fill": "white"}},
     (300, 3700)),
    ("reuse-non-square", DiscScene(6000, 4000, 3000, 2000, 100), {"subpatching": {"patch_size": [900, 500]}},
     (2800, 1950)),
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
