"""Label Studio's interactive context -> a `Prompt` in relative image coordinates.

`parse_prompt` is the one reader of a click's context: everything later stages need from it
(the points, the box, the label, the image size it declares) is in the `Prompt`. `FrameMap`
(`sam2plus.frames`) maps a `Prompt` into patch pixels, a `PatchPrompt`, which SAM2 is given.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import RequestError, describe
from .logtext import logtext

__all__ = ["POINT_TYPES", "BOX_TYPES", "MAX_PROMPT_POINTS", "Prompt", "PatchPrompt", "parse_prompt"]

log = logging.getLogger(__name__)

POINT_TYPES = ("keypointlabels", "keypoint")
BOX_TYPES = ("rectanglelabels", "rectangle")
MAX_PROMPT_POINTS = 256  # keypoints in one click's context, by default (the MAX_PROMPT_POINTS setting)


@dataclass(frozen=True)
class Prompt:
    """What the annotator placed, as fractions (0..1) of the image's width and height.

    `box` is (x0, y0, x1, y1); `labels` hold 1 for a positive point and 0 for a negative one.
    `declared_size` is the image's (original_width, original_height) as the context's first region
    states it, the values as sent (None when either is missing); the decoded size is what counts.
    """

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None
    label: str | None = None
    declared_size: tuple[Any, Any] | None = None

    def bounds(self) -> tuple[float, float, float, float]:
        """The smallest (x0, y0, x1, y1) holding the box and every point."""
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        if self.box:
            xs += [self.box[0], self.box[2]]
            ys += [self.box[1], self.box[3]]
        return min(xs), min(ys), max(xs), max(ys)

    def check_image_size(self, size: tuple[int, int]) -> None:
        """Log a warning when the context declared another size than the image decodes to (`size`,
        which is used): Label Studio's editor then showed another image or another orientation."""
        if self.declared_size is not None and tuple(self.declared_size) != size:
            log.warning(
                "context says the image is %sx%s but it decodes to %sx%s; using the decoded size",
                *map(logtext, self.declared_size),
                *size,
            )


@dataclass(frozen=True)
class PatchPrompt:
    """The prompt in continuous patch coordinates (`FrameMap.prompt_to_patch`), as SAM2 takes it."""

    points: np.ndarray  # (N, 2) float
    labels: np.ndarray  # (N,) int, 1 positive / 0 negative
    box: np.ndarray | None  # (4,) x0, y0, x1, y1


def _check_prompt_size(result: list, max_points: int) -> None:
    """Refuse more than `max_points` keypoints (MAX_PROMPT_POINTS) before any of them is read."""
    if len(result) <= max_points:
        return
    points = sum(
        1 for region in result if isinstance(region, dict) and str(region.get("type", "")).lower() in POINT_TYPES
    )
    if points > max_points:
        raise RequestError(
            "context.result",
            f"{points} keypoints exceed MAX_PROMPT_POINTS={max_points}, the most one click may carry",
            413,
        )


def parse_prompt(context: Any, max_points: int = MAX_PROMPT_POINTS) -> Prompt:
    """Read the keypoints and the rectangle of `context.result` (the last rectangle wins); more than
    `max_points` keypoints are refused first."""
    if not isinstance(context, dict) or not isinstance(context.get("result"), list) or not context["result"]:
        raise RequestError("context.result", "no prompt: expected a list of keypoint or rectangle regions")
    _check_prompt_size(context["result"], max_points)
    points: list[tuple[float, float]] = []
    labels: list[int] = []
    box = None
    label = None
    for index, region in enumerate(context["result"]):
        path = f"context.result[{index}]"
        if not isinstance(region, dict) or not isinstance(region.get("value"), dict):
            raise RequestError(path, f"must be a region object with a 'value', got {describe(region)}")
        kind = str(region.get("type", "")).lower()
        value = region["value"]
        if kind in POINT_TYPES:
            points.append((_fraction(value, "x", path), _fraction(value, "y", path)))
            # the classic editor sends a top-level is_positive; the event protocol value.positive
            positive = region.get("is_positive", value.get("positive", True))
            labels.append(0 if positive in (False, 0, "false") else 1)
        elif kind in BOX_TYPES:
            x0, y0 = _fraction(value, "x", path), _fraction(value, "y", path)
            x1 = min(1.0, x0 + _extent(value, "width", path))
            y1 = min(1.0, y0 + _extent(value, "height", path))
            if value.get("rotation") not in (None, 0, 0.0):
                raise RequestError(
                    f"{path}.value.rotation", f"rotated rectangles are not supported, got {describe(value['rotation'])}"
                )
            if x1 <= x0 or y1 <= y0:
                raise RequestError(f"{path}.value", "the rectangle has no area inside the image")
            box = (x0, y0, x1, y1)
        else:
            raise RequestError(
                f"{path}.type",
                f"must be keypointlabels, keypoint, rectanglelabels or rectangle, got {describe(region.get('type'))}",
            )
        label = _label(value, kind) or label
    if labels and not any(labels) and box is None:
        raise RequestError(
            "context.result", "only negative keypoints: place at least one positive keypoint or a rectangle"
        )
    return Prompt(tuple(points), tuple(labels), box, label, _declared_size(context["result"][0]))


def _declared_size(region: dict) -> tuple[Any, Any] | None:
    """(original_width, original_height) of a region as sent; None when either is missing."""
    given = (region.get("original_width"), region.get("original_height"))
    return None if None in given else given


def _number(value: dict, key: str, path: str) -> float:
    number = value.get(key)
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise RequestError(f"{path}.value.{key}", f"must be a number (percent of the image), got {describe(number)}")
    return float(number)


def _fraction(value: dict, key: str, path: str) -> float:
    number = _number(value, key, path)
    if not 0 <= number <= 100:
        raise RequestError(f"{path}.value.{key}", f"lies outside the image (0..100 percent), got {describe(number)}")
    return number / 100


def _extent(value: dict, key: str, path: str) -> float:
    number = _number(value, key, path)
    if number <= 0:
        raise RequestError(f"{path}.value.{key}", f"a rectangle needs a {key} > 0, got {describe(number)}")
    return number / 100


def _label(value: dict, kind: str) -> str | None:
    labels = value.get(kind) if kind.endswith("labels") else None
    if isinstance(labels, list) and labels and isinstance(labels[0], str):
        return labels[0]
    return None
