"""Where SAM2 looks: the frame (the image after the fullframe resize) and the patch window in it.

Coordinates are continuous: pixel i covers [i, i + 1). One `FrameMap` carries the whole chain
image -> frame (scale) -> patch (offset) and back, so no stage does its own arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import RequestError
from .params import ROOT, ExtraParams
from .prompts import Prompt


@dataclass(frozen=True)
class Window:
    """A rectangle of the frame in frame pixels; it may reach past the frame (padding)."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class FrameMap:
    image_size: tuple[int, int]
    frame_size: tuple[int, int]
    window: Window
    mode: str  # "fullframe", "patch" or "fallback" (a patch would not fit the frame)

    @property
    def scale(self) -> tuple[float, float]:
        """Frame pixels per image pixel, per axis."""
        return self.frame_size[0] / self.image_size[0], self.frame_size[1] / self.image_size[1]

    @property
    def patch_size(self) -> tuple[int, int]:
        return self.window.width, self.window.height

    def image_to_patch(self, xy: np.ndarray) -> np.ndarray:
        """Continuous image coordinates (N, 2) -> continuous patch coordinates."""
        sx, sy = self.scale
        return np.asarray(xy, dtype=np.float64) * (sx, sy) - (self.window.x, self.window.y)

    def patch_to_image(self, xy: np.ndarray) -> np.ndarray:
        """Continuous patch coordinates (N, 2) -> continuous image coordinates."""
        sx, sy = self.scale
        return (np.asarray(xy, dtype=np.float64) + (self.window.x, self.window.y)) / (sx, sy)

    def valid_box(self) -> tuple[int, int, int, int]:
        """The part of the patch that lies inside the frame, as (x0, y0, x1, y1) patch pixels."""
        w = self.window
        fw, fh = self.frame_size
        return max(0, -w.x), max(0, -w.y), min(w.width, fw - w.x), min(w.height, fh - w.y)

    @property
    def is_identity(self) -> bool:
        """True when patch pixels are image pixels shifted by an integer offset."""
        return self.frame_size == self.image_size


def plan_frame(image_size: tuple[int, int], prompt: Prompt, params: ExtraParams) -> FrameMap:
    """Decide the frame size and the patch window for this prompt on an image of this size."""
    width, height = image_size
    frame_w, frame_h = (params.fullframe_resize.frame_size(width, height)
                        if params.fullframe_resize else image_size)
    full = FrameMap(image_size, (frame_w, frame_h), Window(0, 0, frame_w, frame_h), "fullframe")
    sub = params.subpatching
    if sub is None:
        return full

    x0, y0, x1, y1 = prompt.bounds()
    box_w, box_h = (x1 - x0) * frame_w, (y1 - y0) * frame_h
    patch_w, patch_h = sub.patch_size
    if box_w > patch_w or box_h > patch_h:
        if not sub.allow_oversize:
            raise RequestError(f"{ROOT}.subpatching.allow_oversize",
                               f"is false and the prompt ({box_w:.0f}x{box_h:.0f} frame px) "
                               f"exceeds patch_size {patch_w}x{patch_h}")
        # Grow both sides by one factor so that the patch keeps the configured aspect ratio.
        grow = max(box_w / patch_w, box_h / patch_h) * (1 + sub.oversize_padding)
        patch_w, patch_h = math.ceil(patch_w * grow), math.ceil(patch_h * grow)
        if patch_w > frame_w or patch_h > frame_h:
            return FrameMap(image_size, (frame_w, frame_h), full.window, "fallback")

    centre_x, centre_y = (x0 + x1) / 2 * frame_w, (y0 + y1) / 2 * frame_h
    window = Window(
        _place(centre_x, patch_w, frame_w, sub.mode == "padding"),
        _place(centre_y, patch_h, frame_h, sub.mode == "padding"),
        patch_w,
        patch_h,
    )
    return FrameMap(image_size, (frame_w, frame_h), window, "patch")


def _place(centre: float, size: int, frame: int, padding: bool) -> int:
    """The start of a window of `size` centred on `centre`; kept in the frame unless padding."""
    start = round(centre - size / 2)
    if padding:
        return start
    if size >= frame:  # a frame smaller than the patch sits in the patch's middle
        return -((size - frame) // 2)
    return min(max(start, 0), frame - size)


def extract_patch(frame: np.ndarray, frame_map: FrameMap, fill: tuple[int, int, int]) -> np.ndarray:
    """The window's pixels: a view of the frame when the window lies inside it, else a padded copy."""
    w = frame_map.window
    vx0, vy0, vx1, vy1 = frame_map.valid_box()
    inside = frame[w.y + vy0:w.y + vy1, w.x + vx0:w.x + vx1]
    if (vx0, vy0, vx1, vy1) == (0, 0, w.width, w.height):
        return inside
    patch = np.empty((w.height, w.width, 3), dtype=np.uint8)
    patch[:] = fill
    patch[vy0:vy1, vx0:vx1] = inside
    return patch
