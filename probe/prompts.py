"""The probe's prompt syntax -> prompt items in image pixels -> a Label Studio interactive context.

A prompt is an object, or a list of objects (one rectangle and any number of keypoints):

    {"type": "RectangleLabel", "label": "tooth", "geometry": [x, y, w, h]}
    {"type": "KeyPoint", "geometry": [x, y]}
    {"type": "KeyPointLabel", "points": [[x, y], [x, y, false]]}

`type` is RectangleLabel(s) / Rectangle or KeyPointLabel(s) / KeyPoint, in any case. The
*Label types carry `label` (default "probe"); the bare ones carry none. A geometry of integers
is in pixels (a box as top-left + width/height); a geometry of decimals is relative to the
image (a box as centre + width/height, fractions of the image); one geometry may not mix both.
A keypoint may end with a flag, true for a positive click (the default) and false for a
negative one; `points` lists several keypoints, each following the same rules.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from sam2plus.contexts import context, keypoint_region, rectangle_region
from sam2plus.errors import describe

from .errors import ProbeError

__all__ = ["Box", "Point", "parse_prompt", "to_context"]

DEFAULT_LABEL = "probe"
BOX_TYPES = {"rectanglelabel": True, "rectanglelabels": True, "rectangle": False}
POINT_TYPES = {"keypointlabel": True, "keypointlabels": True, "keypoint": False}
KEYS = ("type", "label", "geometry", "points")
BOX_CONTROL, POINT_CONTROL = "prompt", "point"  # control tag names in the label config


@dataclass(frozen=True)
class Box:
    """A rectangle prompt in image pixels, (x0, y0) top-left and (x1, y1) bottom-right."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str | None = None  # None: a bare Rectangle


@dataclass(frozen=True)
class Point:
    """A keypoint prompt in image pixels; `positive` False for a negative click."""

    x: float
    y: float
    positive: bool = True
    label: str | None = None  # None: a bare KeyPoint


def parse_prompt(raw: Any, size: tuple[int, int]) -> list[Box | Point]:
    """Read a prompt (object, list of objects, or their JSON text) for an image of `size` (w, h)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ProbeError(f"prompt: not valid JSON ({exc.msg} at character {exc.pos})") from None
    if isinstance(raw, dict):
        items = _parse_one(raw, "prompt", size)
    elif isinstance(raw, list) and raw:
        items = [item for i, one in enumerate(raw) for item in _parse_one(one, f"prompt[{i}]", size)]
    else:
        raise ProbeError(f"prompt: must be an object or a non-empty list of objects, got {describe(raw)}")
    if sum(isinstance(item, Box) for item in items) > 1:
        raise ProbeError("prompt: at most one rectangle (the backend uses one box per click)")
    if not any(isinstance(item, Box) or item.positive for item in items):
        raise ProbeError("prompt: only negative keypoints; add a positive keypoint or a rectangle")
    return items


def to_context(items: list[Box | Point], size: tuple[int, int]) -> dict:
    """The `context` Label Studio's editor sends with an interactive click (sam2plus.contexts)."""
    width, height = size
    regions = []
    for item in items:
        labels = None if item.label is None else [item.label]
        if isinstance(item, Box):
            regions.append(
                rectangle_region(
                    (item.x0, item.y0, item.x1, item.y1), width, height, from_name=BOX_CONTROL, labels=labels
                )
            )
        else:
            regions.append(
                keypoint_region(
                    item.x, item.y, width, height, positive=item.positive, from_name=POINT_CONTROL, labels=labels
                )
            )
    return context(*regions)


def _parse_one(raw: Any, path: str, size: tuple[int, int]) -> list[Box | Point]:
    if not isinstance(raw, dict):
        raise ProbeError(f"{path}: must be an object with type and geometry, got {describe(raw)}")
    unknown = [key for key in raw if key not in KEYS]
    if unknown:
        raise ProbeError(f"{path}.{unknown[0]}: unknown key; a prompt has {', '.join(KEYS)}")
    kind = raw.get("type")
    name = kind.lower() if isinstance(kind, str) else None
    if name not in BOX_TYPES and name not in POINT_TYPES:
        raise ProbeError(
            f"{path}.type: must be RectangleLabel, Rectangle, KeyPointLabel or KeyPoint, got {describe(kind)}"
        )
    labelled = BOX_TYPES.get(name, POINT_TYPES.get(name))
    label = raw.get("label", DEFAULT_LABEL if labelled else None)
    if not labelled and label is not None:
        raise ProbeError(f"{path}.label: a bare {kind} carries no label; use {kind}Label for one")
    if labelled and (not isinstance(label, str) or not label.strip()):
        raise ProbeError(f"{path}.label: must be a non-empty string, got {describe(label)}")
    if name in BOX_TYPES:
        if "points" in raw:
            raise ProbeError(f"{path}.points: only keypoints have points; a rectangle has geometry [x, y, w, h]")
        if "geometry" not in raw:
            raise ProbeError(f"{path}.geometry: missing; a rectangle needs [x, y, w, h]")
        return [_box(raw["geometry"], f"{path}.geometry", size, label)]
    if ("geometry" in raw) == ("points" in raw):
        raise ProbeError(f"{path}: a keypoint prompt needs either geometry [x, y] or points [[x, y], ...]")
    if "geometry" in raw:
        return [_point(raw["geometry"], f"{path}.geometry", size, label)]
    points = raw["points"]
    if not isinstance(points, list) or not points:
        raise ProbeError(
            f"{path}.points: must be a non-empty list of [x, y] or [x, y, positive], got {describe(points)}"
        )
    return [_point(p, f"{path}.points[{i}]", size, label) for i, p in enumerate(points)]


def _box(geometry: Any, path: str, size: tuple[int, int], label: str | None) -> Box:
    numbers, pixels = _numbers(geometry, 4, path, "[x, y, w, h]")
    width, height = size
    if pixels:
        x, y, w, h = numbers
        x0, y0, x1, y1 = x, y, x + w, y + h
        if w <= 0 or h <= 0:
            raise ProbeError(f"{path}: width and height must be > 0 pixels, got {describe(geometry)}")
        if x < 0 or y < 0 or x1 > width or y1 > height:
            raise ProbeError(
                f"{path}: the box {describe(geometry)} (pixels: top-left, width, height) "
                f"reaches outside the {width}x{height} image"
            )
        return Box(x0, y0, x1, y1, label)
    cx, cy, w, h = numbers
    if w <= 0 or h <= 0:
        raise ProbeError(f"{path}: width and height must be > 0, got {describe(geometry)}")
    x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    eps = 1e-9
    if x0 < -eps or y0 < -eps or x1 > 1 + eps or y1 > 1 + eps:
        raise ProbeError(
            f"{path}: the box {describe(geometry)} (relative: centre, width, height) reaches outside the image (0..1)"
        )
    return Box(max(0.0, x0) * width, max(0.0, y0) * height, min(1.0, x1) * width, min(1.0, y1) * height, label)


def _point(geometry: Any, path: str, size: tuple[int, int], label: str | None) -> Point:
    positive = True
    if isinstance(geometry, list) and len(geometry) == 3:
        positive = geometry[2]
        if not isinstance(positive, bool):
            raise ProbeError(
                f"{path}[2]: the flag must be true (positive) or false (negative), got {describe(positive)}"
            )
        geometry = geometry[:2]
    (x, y), pixels = _numbers(geometry, 2, path, "[x, y] or [x, y, positive]")
    width, height = size
    if pixels:
        if not (0 <= x <= width and 0 <= y <= height):
            raise ProbeError(f"{path}: the point {describe(geometry)} (pixels) lies outside the {width}x{height} image")
        return Point(float(x), float(y), positive, label)
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise ProbeError(f"{path}: the point {describe(geometry)} (relative) lies outside the image (0..1)")
    return Point(x * width, y * height, positive, label)


def _numbers(geometry: Any, count: int, path: str, shape: str) -> tuple[list[float], bool]:
    """The numbers of a geometry and whether they are pixels (all integers) or relative (all decimals)."""
    if not isinstance(geometry, list) or len(geometry) != count:
        raise ProbeError(f"{path}: must be {shape}, got {describe(geometry)}")
    for value in geometry:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ProbeError(f"{path}: must be {shape} of numbers, got {describe(geometry)}")
    ints = [isinstance(value, int) for value in geometry]
    if any(ints) and not all(ints):
        raise ProbeError(
            f"{path}: mixes integers (pixels) and decimals (relative) in {describe(geometry)}; "
            f"write all as integers or all as decimals, e.g. 100 or 0.5"
        )
    return [float(value) for value in geometry], all(ints)
