"""A patch-pixel mask -> Label Studio regions (brush RLE, bitmask PNG, polygons, rectangles) in image percent."""

from __future__ import annotations

import uuid

import cv2
import numpy as np

from .bitmask import bitmask_data_url
from .frames import FrameMap
from .labelconfig import OutputControl
from .masks import Mask, mask_in_image
from .params import ReturnFormat
from .rle import encode_brush_rle

__all__ = ["regions", "polygons", "simplify", "component_boxes"]


def regions(
    mask: Mask, frame_map: FrameMap, fmt: ReturnFormat, control: OutputControl, label: str | None, score: float
) -> list[dict]:
    """The Label Studio `result` list for this mask; empty when the mask is empty."""
    if mask.area == 0:
        return []
    if fmt.kind in ("brush", "bitmask"):  # the same pixels of the image, in two encodings
        image_mask = mask_in_image(mask, frame_map)
        if image_mask.area == 0:
            return []
        placed = (image_mask.bits, image_mask.x, image_mask.y, *frame_map.image_size)
        if fmt.kind == "brush":
            values = [{"format": "rle", "rle": encode_brush_rle(*placed)}]
        else:
            values = [{"imageDataURL": bitmask_data_url(*placed)}]
    elif fmt.kind == "polygon":
        values = [{"points": frame_map.patch_to_percent(ring).tolist(), "closed": True} for ring in polygons(mask, fmt)]
    else:
        values = [_rectangle_value(frame_map, box) for box in component_boxes(mask)]
    return [_region(value, fmt, control, label, score, frame_map.image_size) for value in values]


def polygons(mask: Mask, fmt: ReturnFormat) -> list[np.ndarray]:
    """One simplified outer ring per 8-connected blob, largest blob first, as (N, 2) continuous patch coordinates."""
    bits = mask.bits.astype(np.uint8)
    contours, _ = cv2.findContours(bits, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    labels, stats = _blobs(bits)

    def area(contour: np.ndarray) -> int:  # the pixel area of the blob this outer contour bounds
        x, y = contour[0, 0]
        return int(stats[labels[y, x], cv2.CC_STAT_AREA])

    rings = []
    for contour in sorted(contours, key=area, reverse=True):
        ring = simplify(contour, fmt.epsilon, fmt.max_points)
        if len(ring) >= 3:
            rings.append(ring.reshape(-1, 2).astype(np.float64) + (mask.x + 0.5, mask.y + 0.5))
    return rings


def simplify(contour: np.ndarray, epsilon: float, max_points: int) -> np.ndarray:
    """Douglas-Peucker with `epsilon` (>= 1: pixels, < 1: fraction of the perimeter), raised by
    bisection until the ring has at most `max_points` vertices."""
    tolerance = epsilon if epsilon >= 1 else epsilon * cv2.arcLength(contour, True)
    ring = cv2.approxPolyDP(contour, tolerance, True)
    if len(ring) <= max_points:
        return ring
    low, high = tolerance, max(tolerance, 1.0)
    while len(cv2.approxPolyDP(contour, high, True)) > max_points:
        low, high = high, high * 2
    for _ in range(30):
        middle = (low + high) / 2
        if len(cv2.approxPolyDP(contour, middle, True)) > max_points:
            low = middle
        else:
            high = middle
    return cv2.approxPolyDP(contour, high, True)


def component_boxes(mask: Mask) -> list[tuple[int, int, int, int]]:
    """The (x0, y0, x1, y1) patch-pixel box of each 8-connected blob, largest first."""
    _, stats = _blobs(mask.bits.astype(np.uint8))
    order = np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable") + 1
    return [
        (
            mask.x + int(stats[i, 0]),
            mask.y + int(stats[i, 1]),
            mask.x + int(stats[i, 0] + stats[i, 2]),
            mask.y + int(stats[i, 1] + stats[i, 3]),
        )
        for i in order
    ]


def _blobs(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8-connected blobs of a 0/1 image: the label of every pixel, and each label's stats (0: background)."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(bits, connectivity=8)
    return labels, stats


def _rectangle_value(frame_map: FrameMap, box: tuple[int, int, int, int]) -> dict:
    (x0, y0), (x1, y1) = frame_map.patch_to_percent(np.array([box[:2], box[2:]], dtype=np.float64))
    return {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0, "rotation": 0}


def _region(
    value: dict, fmt: ReturnFormat, control: OutputControl, label: str | None, score: float, image_size: tuple[int, int]
) -> dict:
    type_ = fmt.type.lower()
    if fmt.labelled:
        value = {**value, type_: [label] if label else []}
    return {
        "id": uuid.uuid4().hex[:10],
        "from_name": control.from_name,
        "to_name": control.to_name,
        "type": type_,
        "original_width": image_size[0],
        "original_height": image_size[1],
        "image_rotation": 0,
        "value": value,
        "score": score,
        "readonly": False,
    }
