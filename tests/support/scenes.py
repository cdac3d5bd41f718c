"""Synthetic images with drawn shapes whose masks are known exactly, helpers to score results, and the
contexts and label configs the tests send (built by sam2plus.contexts, as the benchmark and the probe do)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from label_studio_sdk.converter.brush import decode_rle

from sam2plus import contexts
from sam2plus.bitmask import decode_bitmask
from sam2plus.contexts import context, control, keypoint_region, rectangle_region

BACKGROUND = (70, 70, 70)
SHAPE = (210, 180, 40)


@dataclass(frozen=True)
class DiscScene:
    """A `width` x `height` image holding one disc of `radius` at (cx, cy), in image pixels."""

    width: int
    height: int
    cx: float
    cy: float
    radius: float

    def write(self, path: Path) -> Path:
        image = np.empty((self.height, self.width, 3), np.uint8)
        image[:] = BACKGROUND[::-1]
        shift = 4  # draw with sub-pixel precision so the truth below is the same disc
        cv2.circle(
            image,
            (round(self.cx * 16 - 8), round(self.cy * 16 - 8)),
            round(self.radius * 16),
            SHAPE[::-1],
            -1,
            lineType=cv2.LINE_8,
            shift=shift,
        )
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        return path

    def box(self, margin: float = 0.05) -> tuple[float, float, float, float]:
        r = self.radius * (1 + margin)
        return self.cx - r, self.cy - r, self.cx + r, self.cy + r

    def window(self, margin: float = 0.5) -> tuple[int, int, int, int]:
        """A region around the disc (x0, y0, x1, y1) in which IoUs are measured."""
        r = self.radius * (1 + margin) + 8
        return (
            max(0, int(self.cx - r)),
            max(0, int(self.cy - r)),
            min(self.width, int(self.cx + r) + 1),
            min(self.height, int(self.cy + r) + 1),
        )

    def truth(self, window) -> np.ndarray:
        x0, y0, x1, y1 = window
        ys, xs = np.mgrid[y0:y1, x0:x1]
        return (xs + 0.5 - self.cx) ** 2 + (ys + 0.5 - self.cy) ** 2 <= self.radius**2


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def brush_mask(region: dict) -> np.ndarray:
    """The full-size mask a BrushLabels region decodes to with label-studio-sdk."""
    width, height = region["original_width"], region["original_height"]
    return decode_rle(region["value"]["rle"]).reshape(height, width, 4)[:, :, 3] > 0


def bitmask_mask(region: dict) -> np.ndarray:
    """The full-size mask a Bitmask(Labels) region's PNG holds, read as Label Studio's editor reads it
    (alpha > 0); the PNG must have the region's image size."""
    width, height = region["original_width"], region["original_height"]
    mask, size = decode_bitmask(region["value"]["imageDataURL"])
    assert size == (width, height), f"the PNG is {size}, the image {width}x{height}"
    full = np.zeros((height, width), bool)
    full[mask.y : mask.y + mask.bits.shape[0], mask.x : mask.x + mask.bits.shape[1]] = mask.bits
    return full


def polygon_mask(region: dict, window) -> np.ndarray:
    """The polygon rasterised (pixel centres inside) over `window` of the image."""
    x0, y0, x1, y1 = window
    points = (
        np.array(region["value"]["points"], dtype=np.float64)
        / 100
        * (region["original_width"], region["original_height"])
    )
    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(canvas, [np.round((points - (x0, y0) - 0.5) * 16).astype(np.int32)], 1, shift=4)
    return canvas.astype(bool)


def rectangle_box(region: dict) -> tuple[float, float, float, float]:
    v = region["value"]
    w, h = region["original_width"], region["original_height"]
    return v["x"] * w / 100, v["y"] * h / 100, (v["x"] + v["width"]) * w / 100, (v["y"] + v["height"]) * h / 100


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def rect_context(box, width: int, height: int, label: str = "object") -> dict:
    """The editor's context of one smart rectangle (x0, y0, x1, y1) labelled `label`."""
    return context(rectangle_region(box, width, height, labels=[label]))


def point_context(points, width: int, height: int, positive=None, label: str = "object") -> dict:
    """The editor's context of smart key points [(x, y), ...], positive unless `positive` says otherwise."""
    positive = positive or [True] * len(points)
    return context(
        *(
            keypoint_region(x, y, width, height, positive=flag, from_name="point", labels=[label])
            for (x, y), flag in zip(points, positive, strict=True)
        )
    )


def label_config(output_tag: str = "BrushLabels", label: str = "object") -> str:
    """Smart rectangle ("prompt") and key point ("point") controls and the output tag ("output")."""
    return contexts.label_config(
        control("RectangleLabels", "prompt", smart=True, labels=[label]),
        control("KeyPointLabels", "point", smart=True, labels=[label]),
        control(output_tag, "output", labels=[label]),
    )
