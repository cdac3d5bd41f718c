"""Mask clean-up in patch pixels: component filter, then hole filling, then dilation."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .masks import Mask
from .params import MAX_DILATE_PX, Postprocess

__all__ = ["DILATE_BAND_ROWS", "postprocess", "keep_large_components", "fill_holes", "dilation_radius", "dilate"]

DILATE_BAND_ROWS = 1024


def postprocess(mask: Mask, settings: Postprocess, bounds: tuple[int, int, int, int]) -> Mask:
    """Apply `settings` in the specified order; `bounds` (x0, y0, x1, y1) limit dilation growth."""
    if mask.area == 0 or settings.is_noop:
        return mask
    if settings.mask_size_threshold > 0:
        mask = keep_large_components(mask, settings.mask_size_threshold)
    if settings.fill_holes:
        mask = fill_holes(mask)
    if settings.dilate:
        mask = dilate(mask, dilation_radius(mask, settings.dilate), bounds)
    return mask


def keep_large_components(mask: Mask, threshold: float) -> Mask:
    """Keep 8-connected components whose area is at least `threshold` x the largest one's."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.bits.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    if areas.size <= 1:
        return mask
    keep = np.concatenate([[False], areas >= threshold * areas.max()])
    return Mask(keep[labels], mask.x, mask.y).tight()


def fill_holes(mask: Mask) -> Mask:
    """Fill every background region that does not reach the mask's border."""
    padded = np.pad(mask.bits, 1).astype(np.uint8)
    outside = padded.copy()
    flood_mask = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
    cv2.floodFill(outside, flood_mask, (0, 0), 2, flags=4)
    return Mask((outside != 2)[1:-1, 1:-1], mask.x, mask.y)


def dilation_radius(mask: Mask, dilate: int | float) -> float:
    """An int is pixels; a float is a fraction of the equivalent-circle radius sqrt(area / pi),
    capped at MAX_DILATE_PX (the bound an int has at /setup)."""
    if isinstance(dilate, int):
        return float(dilate)
    return min(dilate * math.sqrt(mask.area / math.pi), float(MAX_DILATE_PX))


def dilate(mask: Mask, radius: float, bounds: tuple[int, int, int, int]) -> Mask:
    """Grow the mask by a disc of `radius` (rounded to whole pixels), staying inside `bounds`.

    A pixel joins the mask when its Euclidean distance to the mask is at most the radius: an
    exact distance transform, whose cost does not grow with the radius as a disc kernel's does.
    It runs over bands of rows, each with `r` rows of context above and below (the nearest mask
    pixel within `r` lies there), so its float distances never cover the whole grown box.
    """
    r = round(radius)
    if r < 1:
        return mask
    h, w = mask.bits.shape
    x0, y0 = max(bounds[0], mask.x - r), max(bounds[1], mask.y - r)
    x1, y1 = min(bounds[2], mask.x + w + r), min(bounds[3], mask.y + h + r)
    outside = np.ones((y1 - y0, x1 - x0), np.uint8)
    outside[mask.y - y0 : mask.y - y0 + h, mask.x - x0 : mask.x - x0 + w] = ~mask.bits
    grown = np.empty(outside.shape, bool)
    for top in range(0, grown.shape[0], DILATE_BAND_ROWS):
        low, high = max(0, top - r), min(grown.shape[0], top + DILATE_BAND_ROWS + r)
        distance = cv2.distanceTransform(outside[low:high], cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        rows = min(DILATE_BAND_ROWS, grown.shape[0] - top)
        grown[top : top + rows] = distance[top - low : top - low + rows] <= r
    return Mask(grown, x0, y0)
