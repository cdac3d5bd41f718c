"""Pictures of a probe run: the prompt and the returned regions drawn over the image.

The image is decoded, oriented and converted to RGB by the backend's own code
(`sam2plus.images`), and previews and prompts are drawn by `sam2plus.pictures`, so the probe's
picture of an image is the backend's (16-bit, alpha, EXIF and all). Full-frame pictures are
drawn on a downscaled frame (JPEGs are decoded straight at a reduced size); region crops come
from the full-resolution image but cover only the region. A brush region is decoded from its
RLE once (label-studio-sdk's decoder) and immediately cut down to the region's bounding box, so
no other full-resolution mask is ever built; a bitmask region's PNG is read as Label Studio's
editor reads it (`sam2plus.bitmask.decode_bitmask`: alpha > 0) and cropped the same way.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sam2plus.bitmask import decode_bitmask
from sam2plus.errors import RequestError
from sam2plus.images import ImageInfo, decode_frame, read_info
from sam2plus.pictures import draw_prompt, preview_scale, resize, save_picture, scaled_size

from .errors import FAILED, ProbeError
from .prompts import Box, Point

__all__ = ["Shape", "SourceImage", "crop_picture", "draw_items", "draw_shapes", "region_shapes", "save_rgb"]

CROP_MAX_SIDE, CROP_MIN_SIDE = 1024, 256
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
    """The probe's image as the backend sees it (EXIF-oriented 8-bit RGB), decoded only as far as needed."""

    def __init__(self, path: Path, info: ImageInfo):
        self.path = path
        self.info = info
        self._previews: dict[tuple[int, int], np.ndarray] = {}
        self._full: np.ndarray | None = None

    @classmethod
    def open(cls, path: Path) -> SourceImage:
        """Read the image's header; ProbeError (exit code 2) when it is missing or not an image."""
        if not path.exists():
            raise ProbeError(f"image: {path} does not exist")
        if not path.is_file():
            raise ProbeError(f"image: {path} is not a file")
        try:
            return cls(path, read_info(path, sys.maxsize, "image"))  # the backend applies MAX_IMAGE_PIXELS
        except RequestError as exc:
            raise ProbeError(f"image: {path} {exc.problem}") from None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) after EXIF orientation, as the browser shows the image."""
        return self.info.size

    def scale_for(self, requested: float | None) -> float:
        return requested if requested else preview_scale(self.size)

    def preview(self, scale: float) -> np.ndarray:
        """A drawable copy of the whole image at `scale` (a JPEG is decoded at 1/2, 1/4 or 1/8 when
        that suffices); ProbeError (exit code 2) when the image does not decode."""
        target = scaled_size(self.size, scale)
        if target not in self._previews:
            self._previews[target] = resize(self._full, target) if self._full is not None else self._decode(target)
        return self._previews[target].copy()

    def crop(self, box: tuple[int, int, int, int]) -> np.ndarray:
        if self._full is None:
            self._full = self._decode(self.size)
        x0, y0, x1, y1 = box
        return self._full[y0:y1, x0:x1].copy()

    def _decode(self, size: tuple[int, int]) -> np.ndarray:
        try:
            return decode_frame(self.path, self.info, size, "image")
        except RequestError as exc:
            raise ProbeError(f"image: {self.path} {exc.problem}") from None


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
        elif "imageDataURL" in value:
            shape = _bitmask_shape(value["imageDataURL"], width, height, index)
        elif "points" in value:
            ring = np.asarray(value["points"], dtype=np.float64).reshape(-1, 2) / 100 * (width, height)
            shape = Shape("polygon", _bbox(ring, width, height), rings=[ring])
        elif {"x", "y", "width", "height"} <= value.keys():
            x0, y0 = value["x"] / 100 * width, value["y"] / 100 * height
            x1, y1 = x0 + value["width"] / 100 * width, y0 + value["height"] / 100 * height
            shape = Shape(
                "box",
                _bbox(np.array([[x0, y0], [x1, y1]]), width, height),
                rings=[np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])],
            )
        else:
            raise ProbeError(f"result[{index}]: cannot draw a region of type {kind!r}", FAILED)
        if shape is not None:
            shape.label = label
            shapes.append(shape)
    return shapes


def draw_items(canvas: np.ndarray, items: list[Box | Point], scale: float, origin=(0.0, 0.0)) -> np.ndarray:
    """The prompt over a canvas whose pixel = (image pixel - origin) * scale, drawn as the backend's
    artifacts draw it (sam2plus.pictures.draw_prompt)."""
    box = next(((item.x0, item.y0, item.x1, item.y1) for item in items if isinstance(item, Box)), None)
    points = [item for item in items if isinstance(item, Point)]
    return draw_prompt(
        canvas, box, [(p.x, p.y) for p in points], [p.positive for p in points], (-origin[0], -origin[1]), scale
    )


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
        picture = resize(picture, (round(picture.shape[1] * scale), round(picture.shape[0] * scale)))
    origin = (float(box[0]), float(box[1]))
    draw_shapes(picture, [shape], scale, origin)
    return draw_items(picture, items, scale, origin)


def save_rgb(path: Path, rgb: np.ndarray) -> Path:
    """Write a picture (sam2plus.pictures.save_picture); ProbeError (exit code 1) when it cannot."""
    try:
        return save_picture(path, rgb)
    except OSError as exc:
        raise ProbeError(f"cannot write {path} ({exc.strerror or exc})", FAILED) from None


def _mask_shape(rle, width: int, height: int, index: int) -> Shape | None:
    from label_studio_sdk.converter.brush import decode_rle

    flat = decode_rle(rle)
    if flat.size != width * height * 4:
        raise ProbeError(f"result[{index}].value.rle decodes to {flat.size} values, not {width}x{height}x4", FAILED)
    alpha = flat.reshape(height, width, 4)[:, :, 3]  # a view: nothing full-size is copied
    rows = np.flatnonzero(alpha.any(axis=1))
    if not len(rows):
        return None  # an empty mask: nothing to draw
    band = alpha[rows[0] : rows[-1] + 1]
    cols = np.flatnonzero(band.any(axis=0))
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
    return Shape("mask", (x0, y0, x1, y1), mask=band[:, x0:x1] > 0)


def _bitmask_shape(data_url, width: int, height: int, index: int) -> Shape | None:
    try:
        mask, size = decode_bitmask(str(data_url), max_pixels=width * height)
    except ValueError as exc:
        raise ProbeError(f"result[{index}].value.imageDataURL: {exc}", FAILED) from None
    if size != (width, height):
        raise ProbeError(f"result[{index}].value.imageDataURL is {size[0]}x{size[1]}, not {width}x{height}", FAILED)
    if mask.area == 0:
        return None
    h, w = mask.bits.shape
    return Shape("mask", (mask.x, mask.y, mask.x + w, mask.y + h), mask=mask.bits)


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
    inside = inside[sy0 : sy0 + ey - max(cy0, 0), sx0 : sx0 + ex - max(cx0, 0)]
    view = canvas[max(cy0, 0) : ey, max(cx0, 0) : ex]
    view[inside] = (0.55 * view[inside] + 0.45 * np.array(color)).astype(np.uint8)
    contours, _ = cv2.findContours(inside.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(view, contours, -1, color, 2)


def _bbox(points: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0 = np.floor(points.min(axis=0)).astype(int)
    x1, y1 = np.ceil(points.max(axis=0)).astype(int)
    return (
        max(0, int(x0)),
        max(0, int(y0)),
        min(width, max(int(x1), int(x0) + 1)),
        min(height, max(int(y1), int(y0) + 1)),
    )
