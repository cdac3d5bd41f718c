"""Where SAM2 looks: the frame (the image after the fullframe resize) and the patch window in it.

Coordinates are continuous: pixel i covers [i, i + 1). One `FrameMap` carries the whole chain
image -> frame (scale) -> patch (offset) and back, so no stage does its own arithmetic: a
`Prompt` (fractions of the image) into the patch (`prompt_to_patch`) or into the frame
(`frame_bounds`, to place the window), and patch coordinates back to Label Studio's percent of
the image (`patch_to_percent`).

Window reuse (subpatching): an annotator refines an object with more clicks and segments its
neighbours next, and re-centring the window on every prompt would re-run SAM2's image encoder
for each of them. So a prompt is served from a window already encoded for the same frame when
its bounds lie at least `REUSE_INSET` (1/8) of the window's size inside it on every side, a side
that reaches the frame's edge excepted (there is nothing more to show there); of several such
windows the one whose centre is nearest the prompt's wins. Only windows of the size this prompt
gets (the patch size, or its oversize growth) qualify. Otherwise the window is centred on the
prompt as before. What it changes in what SAM2 sees: the same pixels at the same scale, but the
prompt may sit off-centre (at least 1/8 of the patch from its edges, so 128 px of context at
1024 instead of up to 512), and which window serves a prompt depends on the windows encoded
before it. Results are mapped back through the window actually used, so they land in the image
exactly as from a centred window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .errors import RequestError
from .params import ROOT, ExtraParams
from .prompts import PatchPrompt, Prompt

__all__ = [
    "REUSE_INSET",
    "Window",
    "FrameMap",
    "frame_size",
    "full_frame",
    "grid_windows",
    "plan_frame",
    "extract_patch",
    "tile_windows",
]

REUSE_INSET = 1 / 8  # of the window's width and height: the least margin between a prompt and a reused window's edge


@dataclass(frozen=True)
class Window:
    """A rectangle of the frame in frame pixels; it may reach past the frame (padding)."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class FrameMap:
    """How the image (`image_size`) reaches SAM2: resized to the frame, and the window of it that is the patch."""

    image_size: tuple[int, int]
    frame_size: tuple[int, int]
    window: Window
    mode: str  # "fullframe", "patch" or "fallback" (a patch would not fit the frame)
    reused: bool = False  # True when the window is one encoded before for another prompt

    @property
    def scale(self) -> tuple[float, float]:
        """Frame pixels per image pixel, per axis."""
        return self.frame_size[0] / self.image_size[0], self.frame_size[1] / self.image_size[1]

    @property
    def patch_size(self) -> tuple[int, int]:
        """The window's (width, height): the patch SAM2 is given, in frame pixels."""
        return self.window.width, self.window.height

    def image_to_patch(self, xy: np.ndarray) -> np.ndarray:
        """Continuous image coordinates (N, 2) -> continuous patch coordinates."""
        sx, sy = self.scale
        return np.asarray(xy, dtype=np.float64) * (sx, sy) - (self.window.x, self.window.y)

    def patch_to_image(self, xy: np.ndarray) -> np.ndarray:
        """Continuous patch coordinates (N, 2) -> continuous image coordinates."""
        sx, sy = self.scale
        return (np.asarray(xy, dtype=np.float64) + (self.window.x, self.window.y)) / (sx, sy)

    def fractions_to_patch(self, xy) -> np.ndarray:
        """Fractions (0..1) of the image's width and height (N, 2) -> continuous patch coordinates."""
        return self.image_to_patch(np.asarray(xy, dtype=np.float64).reshape(-1, 2) * self.image_size)

    def prompt_to_patch(self, prompt: Prompt) -> PatchPrompt:
        """The prompt's points and box in continuous patch coordinates, as SAM2 takes them."""
        box = None if prompt.box is None else self.fractions_to_patch(np.reshape(prompt.box, (2, 2))).reshape(4)
        return PatchPrompt(self.fractions_to_patch(prompt.points), np.array(prompt.labels, dtype=np.int64), box)

    def frame_bounds(self, prompt: Prompt) -> tuple[float, float, float, float]:
        """The prompt's bounds (`Prompt.bounds`) as (x0, y0, x1, y1) continuous frame pixels."""
        x0, y0, x1, y1 = prompt.bounds()
        frame_w, frame_h = self.frame_size
        return x0 * frame_w, y0 * frame_h, x1 * frame_w, y1 * frame_h

    def patch_to_percent(self, xy: np.ndarray) -> np.ndarray:
        """Continuous patch coordinates (N, 2) -> percent (0..100, clipped) of the image's width and
        height, as Label Studio's region values give them."""
        width, height = self.image_size
        return np.clip(self.patch_to_image(xy) / (width, height) * 100, 0, 100)

    def valid_box(self) -> tuple[int, int, int, int]:
        """The part of the patch that lies inside the frame, as (x0, y0, x1, y1) patch pixels."""
        w = self.window
        fw, fh = self.frame_size
        return max(0, -w.x), max(0, -w.y), min(w.width, fw - w.x), min(w.height, fh - w.y)

    @property
    def is_identity(self) -> bool:
        """True when patch pixels are image pixels shifted by an integer offset."""
        return self.frame_size == self.image_size


def frame_size(image_size: tuple[int, int], params: ExtraParams) -> tuple[int, int]:
    """The size of the frame SAM2 works on: the image after the fullframe resize, if any."""
    width, height = image_size
    return params.fullframe_resize.frame_size(width, height) if params.fullframe_resize else image_size


def full_frame(image_size: tuple[int, int], params: ExtraParams) -> FrameMap:
    """The map that hands SAM2 the whole frame (no subpatching)."""
    frame_w, frame_h = frame_size(image_size, params)
    return FrameMap(image_size, (frame_w, frame_h), Window(0, 0, frame_w, frame_h), "fullframe")


def plan_frame(
    image_size: tuple[int, int], prompt: Prompt, params: ExtraParams, encoded: Iterable[Window] = ()
) -> FrameMap:
    """Decide the frame size and the patch window for this prompt on an image of this size.

    `encoded` are the windows already encoded for this frame (same image content, frame size and
    padding fill); a prompt that fits one of them well inside is served from it (module docstring).
    """
    full = full_frame(image_size, params)
    frame_w, frame_h = full.frame_size
    sub = params.subpatching
    if sub is None:
        return full

    bounds = full.frame_bounds(prompt)
    box_w, box_h = bounds[2] - bounds[0], bounds[3] - bounds[1]
    patch_w, patch_h = sub.patch_size
    if box_w > patch_w or box_h > patch_h:
        if not sub.allow_oversize:
            raise RequestError(
                f"{ROOT}.subpatching.allow_oversize",
                f"is false and the prompt ({box_w:.0f}x{box_h:.0f} frame px) exceeds patch_size {patch_w}x{patch_h}",
            )
        # Grow both sides by one factor so that the patch keeps the configured aspect ratio.
        grow = max(box_w / patch_w, box_h / patch_h) * (1 + sub.oversize_padding)
        patch_w, patch_h = math.ceil(patch_w * grow), math.ceil(patch_h * grow)
        if patch_w > frame_w or patch_h > frame_h:
            return FrameMap(image_size, full.frame_size, full.window, "fallback")

    reused = _reusable(encoded, bounds, (patch_w, patch_h), full.frame_size)
    if reused is not None:
        return FrameMap(image_size, full.frame_size, reused, "patch", reused=True)
    centre_x, centre_y = (bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2
    window = Window(
        _place(centre_x, patch_w, frame_w, sub.mode == "padding"),
        _place(centre_y, patch_h, frame_h, sub.mode == "padding"),
        patch_w,
        patch_h,
    )
    return FrameMap(image_size, full.frame_size, window, "patch")


def grid_windows(image_size: tuple[int, int], params: ExtraParams) -> list[FrameMap]:
    """The windows of the patch size that a subpatching project's frame is encoded as at warm-up
    (`subpatching.warm_grid`): every point of the frame lies at least REUSE_INSET inside one of
    them (or inside one that reaches the frame's edge there), so any single click is served by the
    window-reuse rule without an encoder run. Neighbours overlap by twice the inset: n windows
    per side where n = 1 + ceil((frame - patch) / (patch - 2 x ceil(patch x REUSE_INSET)))."""
    full = full_frame(image_size, params)
    patch_w, patch_h = params.subpatching.patch_size
    padding = params.subpatching.mode == "padding"
    xs = _grid_starts(full.frame_size[0], patch_w, padding)
    ys = _grid_starts(full.frame_size[1], patch_h, padding)
    return [FrameMap(image_size, full.frame_size, Window(x, y, patch_w, patch_h), "patch") for y in ys for x in xs]


def _grid_starts(frame: int, size: int, padding: bool) -> list[int]:
    """Window starts along one side: the first at the frame's start, the last at its end, the
    interior edges (an inset in) of neighbours meeting."""
    if size >= frame:
        return [_place(frame / 2, size, frame, padding)]
    stride = size - 2 * math.ceil(size * REUSE_INSET)
    count = 1 + math.ceil((frame - size) / stride)
    return [min(k * stride, frame - size) for k in range(count)]


def _reusable(
    encoded: Iterable[Window], bounds: tuple[float, float, float, float], size: tuple[int, int], frame: tuple[int, int]
) -> Window | None:
    """The encoded window of this size that holds `bounds` (frame px) at least REUSE_INSET inside on
    every side not at the frame's edge, nearest the prompt's centre; None when there is none."""
    x0, y0, x1, y1 = bounds
    inset_x, inset_y = size[0] * REUSE_INSET, size[1] * REUSE_INSET

    def holds(w: Window) -> bool:
        right, bottom = w.x + w.width, w.y + w.height
        return (
            (w.width, w.height) == size
            and w.x <= x0
            and w.y <= y0
            and x1 <= right
            and y1 <= bottom
            and (x0 - w.x >= inset_x or w.x <= 0)
            and (right - x1 >= inset_x or right >= frame[0])
            and (y0 - w.y >= inset_y or w.y <= 0)
            and (bottom - y1 >= inset_y or bottom >= frame[1])
        )

    centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2
    fitting = [w for w in encoded if holds(w)]
    return min(
        fitting,
        key=lambda w: (math.hypot(w.x + w.width / 2 - centre_x, w.y + w.height / 2 - centre_y), w.y, w.x),
        default=None,
    )


def _place(centre: float, size: int, frame: int, padding: bool) -> int:
    """The start of a window of `size` centred on `centre`; kept in the frame unless padding."""
    start = round(centre - size / 2)
    if padding:
        return start
    if size >= frame:  # a frame smaller than the patch sits in the patch's middle
        return -((size - frame) // 2)
    return min(max(start, 0), frame - size)


def tile_windows(image_size: tuple[int, int], params: ExtraParams, overlap: int) -> list[FrameMap]:
    """Windows of the patch size covering the whole frame, row by row, neighbours sharing at least
    `overlap` frame pixels (spread evenly, the last one at the frame's edge); one window of the whole
    frame without subpatching. A frame narrower than a patch gets windows as wide as the frame."""
    full = full_frame(image_size, params)
    if params.subpatching is None:
        return [full]
    frame_w, frame_h = full.frame_size
    patch_w, patch_h = (min(p, f) for p, f in zip(params.subpatching.patch_size, full.frame_size, strict=True))
    xs = _starts(frame_w, patch_w, overlap)
    ys = _starts(frame_h, patch_h, overlap)
    return [FrameMap(image_size, full.frame_size, Window(x, y, patch_w, patch_h), "patch") for y in ys for x in xs]


def _starts(length: int, size: int, overlap: int) -> list[int]:
    """Evenly spread starts of windows of `size` over `length`, neighbours sharing at least `overlap`."""
    if size >= length:
        return [0]
    stride = max(1, size - min(overlap, size - 1))
    count = math.ceil((length - size) / stride) + 1
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


def extract_patch(frame: np.ndarray, frame_map: FrameMap, fill: tuple[int, int, int]) -> np.ndarray:
    """The window's pixels: a view of the frame when the window lies inside it, else a padded copy."""
    w = frame_map.window
    vx0, vy0, vx1, vy1 = frame_map.valid_box()
    inside = frame[w.y + vy0 : w.y + vy1, w.x + vx0 : w.x + vx1]
    if (vx0, vy0, vx1, vy1) == (0, 0, w.width, w.height):
        return inside
    patch = np.empty((w.height, w.width, 3), dtype=np.uint8)
    patch[:] = fill
    patch[vy0:vy1, vx0:vx1] = inside
    return patch
