"""Automatic masks for pre-annotation: every object of an image, without a prompt.

SAM2's automatic mask generator, run through our `Segmenter` (its embedding cache, its encoder
lock, clicks first): a grid of single-point prompts per window, each giving SAM2's three
candidate masks, kept when SAM2's predicted IoU and the mask's stability (the IoU of the mask
thresholded at -1 and at +1 logits) are high enough, de-duplicated by box overlap within the
window. On an image larger than a window (subpatching) the windows tile the frame with an
overlap (`frames.tile_windows`); an object the overlap holds whole is found whole in one window
and its cut pieces in the others are merged into it; a larger object cut by a window's edge is
merged from its pieces where they agree inside the overlap. Masks live in image pixels, each only
over its own bounding box (`Mask`), so a 100-megapixel image never has a full-size mask.

Bounded: at most `max_regions` per image (highest scores first), none smaller than `min_area`
image pixels, at most MAX_HELD_BYTES of masks held at once, and the work stops at its deadline:
windows not reached are missing from the answer, which says so. A mask that touches all four
edges of its window is taken for the background and dropped: an object larger than a window
both ways is found only from the windows that hold its outline (a hole may remain where a window
saw nothing but it; give such images a larger patch, or none).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .frames import FrameMap, extract_patch, tile_windows
from .masks import Mask, mask_from_logits, mask_in_image
from .params import AutoAnnotation, ExtraParams

__all__ = ["MAX_HELD_BYTES", "Proposal", "AutoMasks", "point_grid", "stability_scores", "auto_masks"]

STABILITY_OFFSET = 1.0  # logits, as SAM2's generator
MERGE_AGREEMENT = 0.5  # of the smaller piece's pixels inside the windows' overlap, shared by both pieces
SAME_OBJECT_IOU = 0.7  # two masks of different windows overlapping this much are one object
POINTS_PER_BATCH = 64  # as SAM2's generator
# The masks of one image held at once (each over its own bounding box, in image pixels). Huge
# masks of a huge image without subpatching (a 100-megapixel background is 100 MB) beyond it are dropped.
MAX_HELD_BYTES = 1 << 30


@dataclass
class Proposal:
    """One object as one window saw it, in image pixels; `cut`: it touches an edge of its window
    that is not the frame's edge (the object may go on in the neighbouring window)."""

    mask: Mask
    score: float
    window: int
    cut: bool


@dataclass
class AutoMasks:
    """The objects of one image, best first, and whether every window was done within the budget."""

    masks: list[Mask]
    scores: list[float]
    windows: int
    windows_done: int
    encoder_runs: int

    @property
    def complete(self) -> bool:
        return self.windows_done == self.windows


def point_grid(side: int) -> np.ndarray:
    """`side` x `side` points at the centres of a regular grid over [0, 1]^2, as (N, 2) fractions."""
    centres = (np.arange(side) + 0.5) / side
    xs, ys = np.meshgrid(centres, centres)
    return np.column_stack((xs.ravel(), ys.ravel()))


def stability_scores(logits: np.ndarray, offset: float = STABILITY_OFFSET) -> np.ndarray:
    """Per mask (..., H, W): pixels above +offset over pixels above -offset (1 for an empty mask)."""
    high = np.count_nonzero(logits > offset, axis=(-2, -1))
    low = np.count_nonzero(logits > -offset, axis=(-2, -1))
    return np.where(low > 0, high / np.maximum(low, 1), 1.0)


def auto_masks(
    segmenter,
    frame: np.ndarray,
    image_size: tuple[int, int],
    digest: str,
    params: ExtraParams,
    key: Callable[[str, FrameMap], tuple],
    deadline: float,
    pause: Callable[[], None] = lambda: None,
) -> AutoMasks:
    """The objects of the image whose frame is `frame`, window by window until `deadline`
    (time.monotonic()); `key(digest, frame_map)` names a window's embedding as clicks name it;
    `pause()` runs before each window (it waits while clicks are in flight)."""
    auto = params.auto_annotation or AutoAnnotation()
    windows = tile_windows(image_size, params, _overlap(params, auto))
    runs_before = getattr(segmenter, "encoder_runs", 0)
    proposals: list[Proposal] = []
    held = done = 0
    for index, frame_map in enumerate(windows):
        if time.monotonic() >= deadline:
            break
        pause()
        found = window_proposals(segmenter, frame, frame_map, key(digest, frame_map), auto, index, deadline)
        if found is None:  # the deadline passed inside the window: its part is not kept
            break
        for proposal in found:
            if held + proposal.mask.bits.nbytes <= MAX_HELD_BYTES:  # best first: the worst are dropped
                proposals.append(proposal)
                held += proposal.mask.bits.nbytes
        done += 1
    masks, scores = merge(proposals, windows, auto)
    return AutoMasks(masks, scores, len(windows), done, getattr(segmenter, "encoder_runs", 0) - runs_before)


def window_proposals(
    segmenter,
    frame: np.ndarray,
    frame_map: FrameMap,
    key: tuple,
    auto: AutoAnnotation,
    index: int,
    deadline: float = math.inf,
) -> list[Proposal] | None:
    """The objects one window shows: the grid's candidates kept by score, stability and box NMS,
    at most `max_regions`; None when `deadline` (time.monotonic()) passed first. The decoder takes
    POINTS_PER_BATCH points at a time and only the kept candidates' logits stay (a 32 x 32 grid's
    3072 candidates would be 800 MB of logits)."""
    vx0, vy0, vx1, vy1 = frame_map.valid_box()
    points = point_grid(auto.points_per_side) * (vx1 - vx0, vy1 - vy0) + (vx0, vy0)
    patch = extract_patch(frame, frame_map, (0, 0, 0))
    pw, ph = frame_map.patch_size
    kept_logits, kept_iou = [], []
    sx, sy = frame_map.scale
    for start in range(0, len(points), POINTS_PER_BATCH):
        if time.monotonic() >= deadline:
            return None
        logits, iou = segmenter.predict_points(patch, key, points[start : start + POINTS_PER_BATCH])
        logits = logits.reshape(-1, *logits.shape[-2:])
        iou = iou.reshape(-1)
        lh, lw = logits.shape[-2:]
        valid = (vx0 * lw / pw, vy0 * lh / ph, vx1 * lw / pw, vy1 * lh / ph)  # in logits
        keep = np.flatnonzero(iou >= auto.pred_iou_thresh)
        keep = keep[stability_scores(logits[keep]) >= auto.stability_score_thresh]
        # the area in image pixels, from the logits: the small ones go before they are upsampled
        area = np.count_nonzero(logits[keep] > 0, axis=(-2, -1)) * (pw / lw) * (ph / lh) / (sx * sy)
        keep = keep[area >= 0.5 * auto.min_area]
        keep = keep[_box_nms(logits[keep], iou[keep], auto.box_nms_thresh, valid)]  # per batch: bounded memory
        kept_logits.append(logits[keep])
        kept_iou.append(iou[keep])
    logits, iou = np.concatenate(kept_logits), np.concatenate(kept_iou)
    box = _image_box(frame_map)
    edges = _window_edges(frame_map)
    proposals = []
    for i in _box_nms(logits, iou, auto.box_nms_thresh, valid):  # best first
        if time.monotonic() >= deadline:
            return None
        if len(proposals) >= auto.max_regions:
            break
        mask = mask_in_image(mask_from_logits(logits[i], frame_map), frame_map)
        if mask.area < max(1, auto.min_area) or _touches(mask, box, every=True):
            continue
        proposals.append(Proposal(mask, float(iou[i]), index, _touches(mask, edges)))
    return proposals


def merge(proposals: list[Proposal], windows: list[FrameMap], auto: AutoAnnotation) -> tuple[list[Mask], list[float]]:
    """One mask per object: pieces of different windows joined (union) where one is cut and they
    agree inside the windows' overlap, or where they are the same object (IoU); best score first,
    at most `max_regions`."""
    parent = list(range(len(proposals)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    bounds = [_image_box(frame_map) for frame_map in windows]
    for i, a in enumerate(proposals):
        for j in range(i + 1, len(proposals)):
            b = proposals[j]
            if a.window != b.window and _same_object(a, b, bounds):
                parent[root(j)] = root(i)
    groups: dict[int, list[Proposal]] = {}
    for i, proposal in enumerate(proposals):
        groups.setdefault(root(i), []).append(proposal)
    objects = sorted(
        ((_union([p.mask for p in group]), max(p.score for p in group)) for group in groups.values()),
        key=lambda item: (-item[1], -item[0].area),
    )
    objects = [(mask, score) for mask, score in objects if mask.area >= auto.min_area][: auto.max_regions]
    return [mask for mask, _ in objects], [score for _, score in objects]


# -- geometry -------------------------------------------------------------------------------------


def _overlap(params: ExtraParams, auto: AutoAnnotation) -> int:
    if auto.overlap is not None:
        return auto.overlap
    return min(params.subpatching.patch_size) // 4 if params.subpatching else 0


def _box_nms(logits: np.ndarray, iou: np.ndarray, threshold: float, valid) -> list[int]:
    """Greedy non-maximum suppression of the kept candidates by their boxes (low-res pixels), best
    first; a candidate reaching all four edges of the `valid` box (the background) goes first, so
    that it suppresses no object."""
    boxes = {}
    for i in range(len(logits)):
        rows = np.flatnonzero((logits[i] > 0).any(axis=1))
        cols = np.flatnonzero((logits[i] > 0).any(axis=0))
        if not rows.size:
            continue
        box = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        if box[0] > valid[0] + 1 or box[1] > valid[1] + 1 or box[2] < valid[2] - 1 or box[3] < valid[3] - 1:
            boxes[int(i)] = box
    chosen: list[int] = []
    for i in sorted(boxes, key=lambda i: -iou[i]):
        if all(_box_iou(boxes[i], boxes[j]) <= threshold for j in chosen):
            chosen.append(i)
    return chosen


def _box_iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _image_box(frame_map: FrameMap) -> tuple[int, int, int, int]:
    """The window's part inside the frame, in whole image pixels (x0, y0, x1, y1)."""
    vx0, vy0, vx1, vy1 = frame_map.valid_box()
    sx, sy = frame_map.scale
    w = frame_map.window
    return (
        math.floor((w.x + vx0) / sx),
        math.floor((w.y + vy0) / sy),
        math.ceil((w.x + vx1) / sx),
        math.ceil((w.y + vy1) / sy),
    )


def _window_edges(frame_map: FrameMap) -> tuple[int | None, int | None, int | None, int | None]:
    """The window's edges in image pixels (x0, y0, x1, y1), None where the edge is the image's own."""
    x0, y0, x1, y1 = _image_box(frame_map)
    width, height = frame_map.image_size
    return (x0 if x0 > 0 else None, y0 if y0 > 0 else None, x1 if x1 < width else None, y1 if y1 < height else None)


def _touches(mask: Mask, edges, slack: int = 2, every: bool = False) -> bool:
    """Whether the mask reaches one of the edges (x0, y0, x1, y1; None: no edge), or all four."""
    h, w = mask.bits.shape
    x0, y0, x1, y1 = edges
    touched = (
        x0 is not None and mask.x <= x0 + slack,
        y0 is not None and mask.y <= y0 + slack,
        x1 is not None and mask.x + w >= x1 - slack,
        y1 is not None and mask.y + h >= y1 - slack,
    )
    return all(touched) if every else any(touched)


def _same_object(a: Proposal, b: Proposal, bounds: list[tuple[int, int, int, int]]) -> bool:
    shared = _count(a.mask, b.mask)
    if shared == 0:
        return False
    if shared >= SAME_OBJECT_IOU * (a.mask.area + b.mask.area - shared):
        return True
    if not (a.cut or b.cut):
        return False
    wa, wb = bounds[a.window], bounds[b.window]
    overlap = (max(wa[0], wb[0]), max(wa[1], wb[1]), min(wa[2], wb[2]), min(wa[3], wb[3]))
    inside = min(_count_in(a.mask, overlap), _count_in(b.mask, overlap))
    return inside > 0 and shared >= MERGE_AGREEMENT * inside


def _crop(mask: Mask, box) -> np.ndarray:
    """The part of `mask` inside the image box (x0, y0, x1, y1), in that box's coordinates' order."""
    x0, y0, x1, y1 = box
    h, w = mask.bits.shape
    c0, r0 = max(0, x0 - mask.x), max(0, y0 - mask.y)
    c1, r1 = min(w, x1 - mask.x), min(h, y1 - mask.y)
    if c1 <= c0 or r1 <= r0:
        return np.zeros((0, 0), bool)
    return mask.bits[r0:r1, c0:c1]


def _count_in(mask: Mask, box) -> int:
    return int(np.count_nonzero(_crop(mask, box)))


def _count(a: Mask, b: Mask) -> int:
    """Pixels inside both masks."""
    ah, aw = a.bits.shape
    bh, bw = b.bits.shape
    box = (max(a.x, b.x), max(a.y, b.y), min(a.x + aw, b.x + bw), min(a.y + ah, b.y + bh))
    if box[2] <= box[0] or box[3] <= box[1]:
        return 0
    return int(np.count_nonzero(_crop(a, box) & _crop(b, box)))


def _union(masks: list[Mask]) -> Mask:
    if len(masks) == 1:
        return masks[0]
    x0 = min(m.x for m in masks)
    y0 = min(m.y for m in masks)
    x1 = max(m.x + m.bits.shape[1] for m in masks)
    y1 = max(m.y + m.bits.shape[0] for m in masks)
    bits = np.zeros((y1 - y0, x1 - x0), bool)
    for m in masks:
        h, w = m.bits.shape
        bits[m.y - y0 : m.y - y0 + h, m.x - x0 : m.x - x0 + w] |= m.bits
    return Mask(bits, x0, y0)
