"""Pictures of a probe run: the prompt and the returned regions drawn over the image.

Full-frame pictures are drawn on a downscaled frame (JPEGs are decoded straight at a reduced
size); region crops come from the full-resolution image but cover only the region. A brush
region is decoded from its RLE once (label-studio-sdk's decoder) and immediately cut down to
the region's bounding box, so no other full-resolution mask is ever built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from .errors import FAILED, ProbeError
from .prompts import Box, Point

Image.MAX_IMAGE_PIXELS = None
PREVIEW_MAX_SIDE = 2048  # full-frame pictures fit into this unless a scale is given
CROP_MAX_SIDE, CROP_MIN_SIDE = 1024, 256
RED = (255, 0, 0)
WHITE = (255, 255, 255)
PALETTE = [(0, 220, 255), (60, 255, 60), (255, 80, 255), (255, 200, 0), (120, 120, 255), (0, 255, 170)]


@dataclass
class Shape:
    """One returned region in image pixels: a mask cut to its box, polygon rings, or a box."""

    kind: str  # "mask", "polygon" or "box"
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (end exclusive)
    mask: np.ndarray | None = None  # bool, bbox-sized (kind "mask")
    rings: list[np.ndarray] = field(default_factory=list)  # float (n, 2) pixel coordinates (kind "polygon")
    label: str | None = None


class SourceImage:
    """The probe's image as the browser shows it (EXIF-oriented RGB), decoded only as far as needed."""

    def __init__(self, path: Path, size: tuple[int, int]):
        self.path = path
        self.size = size
        self._full: np.ndarray | None = None

    def scale_for(self, requested: float | None) -> float:
        return requested if requested else min(1.0, PREVIEW_MAX_SIDE / max(self.size))

    def preview(self, scale: float) -> np.ndarray:
        """The whole image at `scale` (a JPEG is decoded at 1/2, 1/4 or 1/8 when that suffices)."""
        target = (max(1, round(self.size[0] * scale)), max(1, round(self.size[1] * scale)))
        if self._full is not None:
            return _resize(self._full, target)
        with Image.open(self.path) as image:
            if image.format == "JPEG" and scale < 1:
                swapped = image.size != self.size
                image.draft(None, target[::-1] if swapped else target)
            rgb = _rgb(image)
        return _resize(rgb, target)

    def crop(self, box: tuple[int, int, int, int]) -> np.ndarray:
        if self._full is None:
            with Image.open(self.path) as image:
                self._full = _rgb(image)
        x0, y0, x1, y1 = box
        return self._full[y0:y1, x0:x1].copy()


def region_shapes(regions: list[dict], size: tuple[int, int]) -> list[Shape]:
    """The regions of a /predict answer as shapes in pixels of an image of `size` (width, height)."""
    shapes = []
    for index, region in enumerate(regions):
        value = region.get("value") if isinstance(region, dict) else None
        if not isinstance(value, dict):
            raise ProbeError(f"result[{index}]: the backend returned a region without a value", FAILED)
        width = region.get("original_width") or size[0]
        height = region.get("original_height") or size[1]
        kind = str(region.get("type", "")).lower()
        label = next((v[0] for k, v in value.items() if k.endswith("labels") and isinstance(v, list) and v), None)
        if "rle" in value:
            shape = _mask_shape(value["rle"], width, height, index)
        elif "points" in value:
            ring = np.asarray(value["points"], dtype=np.float64).reshape(-1, 2) / 100 * (width, height)
            shape = Shape("polygon", _bbox(ring, width, height), rings=[ring])
        elif {"x", "y", "width", "height"} <= value.keys():
            x0, y0 = value["x"] / 100 * width, value["y"] / 100 * height
            x1, y1 = x0 + value["width"] / 100 * width, y0 + value["height"] / 100 * height
            shape = Shape("box", _bbox(np.array([[x0, y0], [x1, y1]]), width, height),
                          rings=[np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])])
        else:
            raise ProbeError(f"result[{index}]: cannot draw a region of type {kind!r}", FAILED)
        if shape is not None:
            shape.label = label
            shapes.append(shape)
    return shapes


def draw_prompt(canvas: np.ndarray, items: list[Box | Point], scale: float, origin=(0.0, 0.0)) -> np.ndarray:
    """The prompt in red: the box outlined, positive points filled, negative points crossed."""
    thickness = 2
    for item in items:
        if isinstance(item, Box):
            cv2.rectangle(canvas, _pt((item.x0, item.y0), scale, origin), _pt((item.x1, item.y1), scale, origin),
                          RED, thickness)
    for item in items:
        if isinstance(item, Point):
            center = _pt((item.x, item.y), scale, origin)
            if item.positive:
                cv2.circle(canvas, center, 7, WHITE, -1)
                cv2.circle(canvas, center, 5, RED, -1)
            else:
                cv2.circle(canvas, center, 7, RED, thickness)
                cv2.drawMarker(canvas, center, RED, cv2.MARKER_TILTED_CROSS, 10, thickness)
    return canvas


def draw_shapes(canvas: np.ndarray, shapes: list[Shape], scale: float, origin=(0.0, 0.0)) -> np.ndarray:
    """The regions: masks and polygons tinted with an outline, boxes outlined; one colour per region."""
    for index, shape in enumerate(shapes):
        color = PALETTE[index % len(PALETTE)]
        if shape.kind == "mask":
            _draw_mask(canvas, shape, scale, origin, color)
        else:
            rings = [np.round((ring - origin) * scale).astype(np.int32) for ring in shape.rings]
            if shape.kind == "polygon":
                tint = canvas.copy()
                cv2.fillPoly(tint, rings, color)
                cv2.addWeighted(tint, 0.4, canvas, 0.6, 0, dst=canvas)
            cv2.polylines(canvas, rings, True, color, 2)
    return canvas


def crop_picture(source: SourceImage, shape: Shape, items: list[Box | Point]) -> np.ndarray:
    """A tight crop around one region (a margin of 15%, at least 16 px) with it and the prompt drawn;
    crops are shrunk to 1024 px at most, and tiny ones enlarged by whole pixels to about 256 px."""
    x0, y0, x1, y1 = shape.bbox
    margin = max(16, round(0.15 * max(x1 - x0, y1 - y0)))
    width, height = source.size
    box = (max(0, x0 - margin), max(0, y0 - margin), min(width, x1 + margin), min(height, y1 + margin))
    picture = source.crop(box)
    side = max(picture.shape[:2])
    scale = CROP_MAX_SIDE / side if side > CROP_MAX_SIDE else max(1, CROP_MIN_SIDE // side)
    if scale != 1:  # big crops shrink; tiny ones grow by whole pixels so that they can be seen
        picture = _resize(picture, (round(picture.shape[1] * scale), round(picture.shape[0] * scale)))
    origin = (float(box[0]), float(box[1]))
    draw_shapes(picture, [shape], scale, origin)
    return draw_prompt(picture, items, scale, origin)


def save_rgb(path: Path, rgb: np.ndarray, quality: int = 90) -> Path:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise ProbeError(f"cannot write {path}", FAILED)
    return path


def _mask_shape(rle, width: int, height: int, index: int) -> Shape | None:
    from label_studio_sdk.converter.brush import decode_rle

    flat = decode_rle(rle)
    if flat.size != width * height * 4:
        raise ProbeError(f"result[{index}].value.rle decodes to {flat.size} values, not {width}x{height}x4", FAILED)
    alpha = flat.reshape(height, width, 4)[:, :, 3]  # a view: nothing full-size is copied
    rows = np.flatnonzero(alpha.any(axis=1))
    if not len(rows):
        return None  # an empty mask: nothing to draw
    band = alpha[rows[0]:rows[-1] + 1]
    cols = np.flatnonzero(band.any(axis=0))
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
    return Shape("mask", (x0, y0, x1, y1), mask=band[:, x0:x1] > 0)


def _draw_mask(canvas: np.ndarray, shape: Shape, scale: float, origin, color) -> None:
    x0, y0, x1, y1 = shape.bbox
    cx0, cy0 = math.floor((x0 - origin[0]) * scale), math.floor((y0 - origin[1]) * scale)
    cx1 = max(cx0 + 1, math.ceil((x1 - origin[0]) * scale))
    cy1 = max(cy0 + 1, math.ceil((y1 - origin[1]) * scale))
    small = shape.mask.astype(np.uint8) * 255
    if (cx1 - cx0, cy1 - cy0) != (small.shape[1], small.shape[0]):
        small = cv2.resize(small, (cx1 - cx0, cy1 - cy0), interpolation=cv2.INTER_AREA)
    inside = small >= 128
    # clip to the canvas
    h, w = canvas.shape[:2]
    sx0, sy0 = max(0, -cx0), max(0, -cy0)
    ex, ey = min(cx1, w), min(cy1, h)
    if ex <= max(cx0, 0) or ey <= max(cy0, 0):
        return
    inside = inside[sy0:sy0 + ey - max(cy0, 0), sx0:sx0 + ex - max(cx0, 0)]
    view = canvas[max(cy0, 0):ey, max(cx0, 0):ex]
    view[inside] = (0.55 * view[inside] + 0.45 * np.array(color)).astype(np.uint8)
    contours, _ = cv2.findContours(inside.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(view, contours, -1, color, 2)


def _bbox(points: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0 = np.floor(points.min(axis=0)).astype(int)
    x1, y1 = np.ceil(points.max(axis=0)).astype(int)
    return max(0, int(x0)), max(0, int(y0)), min(width, max(int(x1), int(x0) + 1)), min(height, max(int(y1), int(y0) + 1))


def _rgb(image: Image.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image).copy()


def _resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb.copy()
    shrink = size[0] <= rgb.shape[1] and size[1] <= rgb.shape[0]
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_NEAREST)


def _pt(xy, scale: float, origin) -> tuple[int, int]:
    return int(round((xy[0] - origin[0]) * scale)), int(round((xy[1] - origin[1]) * scale))
