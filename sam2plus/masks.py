"""Masks as small arrays placed in a larger grid, and SAM2's logits turned into them.

A full-resolution mask of a 100-megapixel image is never built: a `Mask` holds only the
region around the object and where it sits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .bands import row_bands
from .frames import FrameMap

__all__ = ["Mask", "mask_from_logits", "mask_in_image"]


@dataclass(frozen=True)
class Mask:
    """`bits` (bool, h x w) placed with its top-left pixel at (x, y) of some grid."""

    bits: np.ndarray
    x: int = 0
    y: int = 0

    @classmethod
    def empty(cls) -> Mask:
        return cls(np.zeros((0, 0), dtype=bool))

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.bits))

    def tight(self) -> Mask:
        """The same mask cropped to its nonzero pixels."""
        rows = np.flatnonzero(self.bits.any(axis=1))
        if rows.size == 0:
            return Mask.empty()
        cols = np.flatnonzero(self.bits.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        return Mask(self.bits[r0:r1, c0:c1], self.x + int(c0), self.y + int(r0))


def mask_from_logits(low_res_logits: np.ndarray, frame_map: FrameMap) -> Mask:
    """Upsample SAM2's low-resolution logits (e.g. 256x256) to patch pixels, as SAM2 does
    (bilinear, half-pixel centres, edge clamped), but only around the positive logits and only
    inside the frame; threshold at 0."""
    positive = low_res_logits > 0
    if not positive.any():
        return Mask.empty()
    lh, lw = low_res_logits.shape
    pw, ph = frame_map.patch_size
    ax, ay = pw / lw, ph / lh  # patch pixels per logit
    rows = np.flatnonzero(positive.any(axis=1))
    cols = np.flatnonzero(positive.any(axis=0))
    vx0, vy0, vx1, vy1 = frame_map.valid_box()
    # One logit of margin: bilinear interpolation can turn a pixel positive that far out.
    x0 = max(vx0, math.floor((cols[0] - 1) * ax))
    x1 = min(vx1, math.ceil((cols[-1] + 2) * ax))
    y0 = max(vy0, math.floor((rows[0] - 1) * ay))
    y1 = min(vy1, math.ceil((rows[-1] + 2) * ay))
    if x1 <= x0 or y1 <= y0:
        return Mask.empty()
    start = ((x0 + 0.5) / ax - 0.5, (y0 + 0.5) / ay - 0.5)
    bits = _resample(
        low_res_logits.astype(np.float32),
        (1 / ax, 1 / ay),
        start,
        (x1 - x0, y1 - y0),
        cv2.BORDER_REPLICATE,
        np.greater,
        0,
    )
    return Mask(bits, x0, y0).tight()


def mask_in_image(mask: Mask, frame_map: FrameMap) -> Mask:
    """A patch-pixel mask resampled onto the original image's pixel grid (only its own region)."""
    if mask.area == 0:
        return Mask.empty()
    w = frame_map.window
    width, height = frame_map.image_size
    if frame_map.is_identity:
        return _clip(Mask(mask.bits, mask.x + w.x, mask.y + w.y), width, height)
    sx, sy = frame_map.scale
    h, wd = mask.bits.shape
    fx0, fy0 = mask.x + w.x, mask.y + w.y  # the mask's origin in frame pixels
    x0 = max(0, math.floor(fx0 / sx))
    y0 = max(0, math.floor(fy0 / sy))
    x1 = min(width, math.ceil((fx0 + wd) / sx))
    y1 = min(height, math.ceil((fy0 + h) / sy))
    if x1 <= x0 or y1 <= y0:
        return Mask.empty()
    start = ((x0 + 0.5) * sx - fx0 - 0.5, (y0 + 0.5) * sy - fy0 - 0.5)
    bits = _resample(
        mask.bits.astype(np.float32), (sx, sy), start, (x1 - x0, y1 - y0), cv2.BORDER_CONSTANT, np.greater_equal, 0.5
    )
    return Mask(bits, x0, y0).tight()


def _resample(
    source: np.ndarray,
    step: tuple[float, float],
    start: tuple[float, float],
    size: tuple[int, int],
    border: int,
    compare,
    threshold: float,
) -> np.ndarray:
    """compare(bilinear sample, threshold) on a grid of `size` (w, h) whose pixel (c, r) samples
    `source` at pixel coordinates start + (c, r) * step. In bands of rows, so that float samples
    over a whole 100-megapixel frame (400 MB) never exist at once; only the boolean result does."""
    width, height = size
    bits = np.empty((height, width), dtype=bool)
    for top, bottom in row_bands(height, width):
        rows = bottom - top
        matrix = np.array([[step[0], 0, start[0]], [0, step[1], start[1] + top * step[1]]])
        band = cv2.warpAffine(
            source, matrix, (width, rows), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=border
        )
        compare(band, threshold, out=bits[top : top + rows])
    return bits


def _clip(mask: Mask, width: int, height: int) -> Mask:
    h, w = mask.bits.shape
    c0, r0 = max(0, -mask.x), max(0, -mask.y)
    c1, r1 = min(w, width - mask.x), min(h, height - mask.y)
    if c1 <= c0 or r1 <= r0:
        return Mask.empty()
    return Mask(mask.bits[r0:r1, c0:c1], mask.x + c0, mask.y + r0)
