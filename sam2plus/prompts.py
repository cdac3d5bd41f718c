"""Label Studio's interactive context -> a `Prompt` in relative image coordinates."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import RequestError, describe

__all__ = ["POINT_TYPES", "BOX_TYPES", "MAX_PROMPT_POINTS", "Prompt", "parse_prompt"]

POINT_TYPES = ("keypointlabels", "keypoint")
BOX_TYPES = ("rectanglelabels", "rectangle")
MAX_PROMPT_POINTS = 256  # keypoints in one click's context, by default (the MAX_PROMPT_POINTS setting)


@dataclass(frozen=True)
class Prompt:
    """What the annotator placed, as fractions (0..1) of the image's width and height.

    `box` is (x0, y0, x1, y1); `labels` hold 1 for a positive point and 0 for a negative one.
    """

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None
    label: str | None = None

    def bounds(self) -> tuple[float, float, float, float]:
        """The smallest (x0, y0, x1, y1) holding the box and every point."""
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        if self.box:
            xs += [self.box[0], self.box[2]]
            ys += [self.box[1], self.box[3]]
        return min(xs), min(ys), max(xs), max(ys)


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
            labels.append(0 if region.get("is_positive", True) in (False, 0, "false") else 1)
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
    return Prompt(points=tuple(points), labels=tuple(labels), box=box, label=label)


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
