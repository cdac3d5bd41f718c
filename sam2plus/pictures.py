"""Pictures for people: downscaled previews, the prompt drawn over them, and JPEG files.

One home for how SAM2Plus shows an image, shared by the backend's review artifacts
(`artifacts.py`) and sam2plus-probe's pictures (`probe/render.py`): a frame decoded by
`images.decode_frame` and drawn here looks the same in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .files import write_atomically

__all__ = [
    "BLUE",
    "GREEN",
    "JPEG_QUALITY",
    "LINE",
    "PREVIEW_MAX_SIDE",
    "RED",
    "WHITE",
    "YELLOW",
    "draw_prompt",
    "preview",
    "preview_scale",
    "resize",
    "save_picture",
    "scaled_size",
    "to_canvas",
]

PREVIEW_MAX_SIDE = 2048  # whole-image pictures fit into this many pixels unless a scale is given
JPEG_QUALITY = 90
RED, GREEN, BLUE, YELLOW, WHITE = (255, 0, 0), (0, 255, 0), (0, 128, 255), (255, 255, 0), (255, 255, 255)
LINE = 2  # outline thickness in canvas pixels
POINT_RADIUS = 5  # a click's dot, with a white rim of 2 pixels around it


def preview_scale(size: tuple[int, int], max_side: int = PREVIEW_MAX_SIDE) -> float:
    """The scale (at most 1) that fits an image of `size` (width, height) into `max_side` pixels."""
    return min(1.0, max_side / max(size))


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """`size` (width, height) times `scale`, rounded, at least one pixel per side."""
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A copy of `rgb` at `size` (width, height): averaged when it shrinks, whole pixels when it grows."""
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb.copy()
    shrink = size[0] <= rgb.shape[1] and size[1] <= rgb.shape[0]
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_NEAREST)


def preview(frame: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
    """A drawable copy of `frame` at `scale` (default: fit into PREVIEW_MAX_SIDE), and that scale."""
    size = (frame.shape[1], frame.shape[0])
    scale = preview_scale(size) if scale is None else scale
    return resize(frame, scaled_size(size, scale)), scale


def to_canvas(xy: Sequence[float], offset: Sequence[float] = (0.0, 0.0), factor: float = 1.0) -> tuple[int, int]:
    """The canvas pixel of point `xy` when canvas = (coordinates + offset) * factor."""
    return int(round((xy[0] + offset[0]) * factor)), int(round((xy[1] + offset[1]) * factor))


def draw_prompt(
    canvas: np.ndarray,
    box: Sequence[float] | None,
    points: Sequence[Sequence[float]],
    positive: Sequence[bool],
    offset: Sequence[float] = (0.0, 0.0),
    factor: float = 1.0,
) -> np.ndarray:
    """The prompt over `canvas` (in place; returned): the box (x0, y0, x1, y1) outlined in red,
    positive clicks as green dots and negative ones as red dots, each with a white rim."""
    if box is not None:
        cv2.rectangle(canvas, to_canvas(box[:2], offset, factor), to_canvas(box[2:], offset, factor), RED, LINE)
    for xy, is_positive in zip(points, positive, strict=True):
        centre = to_canvas(xy, offset, factor)
        cv2.circle(canvas, centre, POINT_RADIUS + 2, WHITE, -1)
        cv2.circle(canvas, centre, POINT_RADIUS, GREEN if is_positive else RED, -1)
    return canvas


def save_picture(path: Path, rgb: np.ndarray, quality: int = JPEG_QUALITY) -> Path:
    """Write an RGB array atomically in the format its suffix names (JPEG at `quality`); OSError on failure."""
    path = Path(path)
    try:
        encoded, data = cv2.imencode(
            path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
        )
    except cv2.error:
        encoded = False
    if not encoded:
        raise OSError(f"cannot encode a picture as {path.name}")
    return write_atomically(path, data.tobytes())
