"""Project `extra_params` -> a frozen, validated `ExtraParams`.

Keys may use dashes or underscores (normalised to underscores). Unknown, misplaced and
duplicate keys are errors naming the key's path, e.g. ``extra_params.subpatching.patch_size``.
A section given as null is the same as a section left out.
Empty extra_params mean the stock backend: full image in, one BrushLabels RLE out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

from PIL import ImageColor

from .errors import RequestError, describe
from .jsonbody import refuse_bad_text
from .keys import underscore_keys

__all__ = [
    "ROOT",
    "MIN_PATCH_SIZE",
    "MAX_PATCH_SIZE",
    "MAX_DILATE_PX",
    "MAX_DILATE_FRACTION",
    "MAX_EPSILON",
    "MAX_POINTS",
    "MAX_PARAMS_TEXT",
    "MAX_POINTS_PER_SIDE",
    "MAX_REGIONS",
    "MAX_TIME_BUDGET",
    "AutoAnnotation",
    "RETURN_TYPES",
    "SECTION_KEYS",
    "TOP_KEYS",
    "POLYGON_ONLY_KEYS",
    "FullframeResize",
    "Subpatching",
    "Postprocess",
    "ReturnFormat",
    "ExtraParams",
    "parse_extra_params",
]

ROOT = "extra_params"
# Bounds on every setting that scales a click's work (docs/security.md, Limits).
MIN_PATCH_SIZE = 32
MAX_PATCH_SIZE = 8192  # per side: a padded patch is allocated whole (8192 x 8192 RGB = 192 MiB)
MAX_DILATE_PX = 256  # also caps a float dilate once its fraction is applied (postprocess.dilation_radius)
MAX_DILATE_FRACTION = 2.0
MAX_EPSILON = 1024.0  # polygon tolerance in patch pixels
MAX_POINTS = 10_000
MAX_PREFETCH = 8  # next tasks prepared when a task opens
MAX_POINTS_PER_SIDE = 64  # auto_annotation: a 64 x 64 grid is 4096 prompts per window
MAX_REGIONS = 2000  # auto_annotation: regions of one image
# Label Studio 1.23.2 waits ML_TIMEOUT_PREDICT = 100 s for a /predict (ml/api_connector.py); an
# auto-annotation answers within its time budget, at most this, so that the answer arrives.
MAX_TIME_BUDGET = 90.0
MAX_PARAMS_TEXT = 65536  # characters of extra_params given as a JSON string (a full one is ~500)

RETURN_TYPES = (
    "BrushLabels",
    "Brush",
    "PolygonLabels",
    "Polygon",
    "RectangleLabels",
    "Rectangle",
    "BitmaskLabels",  # Label Studio 1.21 and newer
    "Bitmask",
)
SECTION_KEYS = {
    "subpatching": ("patch_size", "mode", "padding_fill", "allow_oversize", "oversize_padding", "warm_grid"),
    "postprocess": ("mask_size_threshold", "fill_holes", "dilate"),
    "return_format": ("type", "epsilon", "max_points"),
    "auto_annotation": (
        "label",
        "points_per_side",
        "pred_iou_thresh",
        "stability_score_thresh",
        "box_nms_thresh",
        "min_area",
        "max_regions",
        "overlap",
        "time_budget",
    ),
}
TOP_KEYS = ("fullframe_resize", *SECTION_KEYS, "prefetch")
POLYGON_ONLY_KEYS = ("epsilon", "max_points")


@dataclass(frozen=True)
class FullframeResize:
    """Downscale of the whole image before anything else: a fraction, or an exact size."""

    scale: float | None = None
    size: tuple[int, int] | None = None

    def frame_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) of the frame for an image of this size; refuses upscaling."""
        if self.scale is not None:
            return max(1, round(width * self.scale)), max(1, round(height * self.scale))
        fw, fh = self.size
        if fw > width or fh > height:
            raise RequestError(
                f"{ROOT}.fullframe_resize",
                f"{fw}x{fh} would upscale the {width}x{height} image (only downscaling is allowed)",
            )
        return fw, fh


@dataclass(frozen=True)
class Subpatching:
    """The patch cropped around the prompt and fed to SAM2."""

    patch_size: tuple[int, int] = (1024, 1024)
    mode: str = "default"  # "default": inside the frame; "padding": centred on the prompt
    padding_fill: tuple[int, int, int] = (0, 0, 0)
    allow_oversize: bool = True
    oversize_padding: float = 0.05
    warm_grid: bool = False  # encode the frame at warm-up as a grid of windows (frames.grid_windows)


@dataclass(frozen=True)
class Postprocess:
    """Mask clean-up, applied in this order: component filter, hole filling, dilation."""

    mask_size_threshold: float = 0.0
    fill_holes: bool = False
    dilate: int | float = 0  # int: pixels of the patch; float: fraction of sqrt(area / pi), at most MAX_DILATE_PX

    @property
    def is_noop(self) -> bool:
        return self.mask_size_threshold == 0 and not self.fill_holes and self.dilate == 0


@dataclass(frozen=True)
class ReturnFormat:
    """The Label Studio geometry of the answer."""

    type: str = "BrushLabels"
    epsilon: float = 1.0
    max_points: int = 100

    @property
    def kind(self) -> str:
        """'brush', 'polygon', 'rectangle' or 'bitmask'."""
        return self.type.lower().removesuffix("labels")

    @property
    def labelled(self) -> bool:
        return self.type.endswith("Labels")


@dataclass(frozen=True)
class AutoAnnotation:
    """Automatic masks for a prompt-less /predict (pre-annotation): SAM2's point grid per window,
    scored and de-duplicated, objects cut by a window's edge merged; bounded in regions, area
    and time. Opt-in: the section's presence turns it on."""

    label: str | None = None  # None: the output tag's first label
    points_per_side: int = 32  # a grid of this many x this many point prompts per window
    pred_iou_thresh: float = 0.8  # SAM2's predicted IoU of a mask, at least
    stability_score_thresh: float = 0.95  # IoU of the mask thresholded at -1 and +1 logits, at least
    box_nms_thresh: float = 0.7  # masks of one window whose boxes overlap more are one object
    min_area: int = 100  # image pixels; smaller regions are dropped
    max_regions: int = 200  # per image, highest scores first
    overlap: int | None = None  # frame pixels neighbouring windows share; None: a quarter of the patch
    time_budget: float = 60.0  # seconds for one /predict, all its tasks together


@dataclass(frozen=True)
class ExtraParams:
    fullframe_resize: FullframeResize | None = None
    subpatching: Subpatching | None = None
    postprocess: Postprocess = field(default_factory=Postprocess)
    return_format: ReturnFormat = field(default_factory=ReturnFormat)
    prefetch: int = 2  # the next tasks (sequential order) prepared when a task opens; 0: none
    auto_annotation: AutoAnnotation | None = None
    source: dict = field(default_factory=dict, compare=False)  # the normalised JSON, for storage

    @property
    def is_stock(self) -> bool:
        return self == ExtraParams()


def parse_extra_params(raw: Any) -> ExtraParams:
    """Validate extra_params as Label Studio sends them (a JSON object, a JSON string or null).

    Every error found is reported, in the order of the keys as given: one RequestError naming
    the first one's field, all of them `; `-separated in its message and listed in its `problems`."""
    if isinstance(raw, str):
        if not raw.strip():
            return ExtraParams()
        if len(raw) > MAX_PARAMS_TEXT:  # parsed below, past the body's own bounds
            raise RequestError(ROOT, f"a JSON string of {len(raw)} characters, more than {MAX_PARAMS_TEXT}")
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestError(ROOT, f"not valid JSON ({exc.msg} at character {exc.pos})") from None
        except RecursionError:
            raise RequestError(ROOT, "a JSON string nested too deep to parse") from None
        refuse_bad_text(raw, ROOT)
    if raw is None:
        return ExtraParams()
    problems = _Problems()
    obj = _normalised_object(raw, ROOT, problems)
    _reject_unknown(obj, TOP_KEYS, ROOT, problems)

    def section(key: str, parse, *args):
        return problems.take(parse, obj[key], problems, *args) if obj.get(key) is not None else None

    return_format = section("return_format", _return_format) or ReturnFormat()
    params = ExtraParams(
        fullframe_resize=problems.take(_fullframe_resize, obj["fullframe_resize"])
        if obj.get("fullframe_resize") is not None
        else None,
        subpatching=section("subpatching", _subpatching),
        postprocess=problems.take(_postprocess, obj.get("postprocess"), problems, return_format) or Postprocess(),
        return_format=return_format,
        prefetch=problems.take(_prefetch, obj["prefetch"], f"{ROOT}.prefetch", default=2) if "prefetch" in obj else 2,
        auto_annotation=section("auto_annotation", _auto_annotation),
        source=obj,
    )
    problems.raise_any(order=list(obj))
    return params


class _Problems:
    """The errors found so far: `take` runs one check and keeps its error instead of raising it."""

    def __init__(self):
        self.errors: list[RequestError] = []

    def add(self, error: RequestError) -> None:
        self.errors.append(error)

    def take(self, check, *args, default=None):
        try:
            return check(*args)
        except RequestError as exc:
            self.errors.append(exc)
            return default

    def raise_any(self, order: list[str]) -> None:
        """Raise every error found as one, sorted by the position of its top-level key in `order`."""
        if not self.errors:
            return
        rank = {key: index for index, key in enumerate(order)}
        self.errors.sort(key=lambda error: rank.get(error.field.removeprefix(ROOT + ".").split(".")[0], -1))
        raise RequestError.combine(self.errors)


# -- sections -----------------------------------------------------------------------------


def _fullframe_resize(value: Any) -> FullframeResize:
    path = f"{ROOT}.fullframe_resize"
    if _is_int(value):
        return FullframeResize(size=(_positive_int(value, path), value))
    if _is_number(value):
        if not 0 < value <= 1:
            raise RequestError(path, f"a fraction must be > 0 and <= 1 (only downscaling), got {describe(value)}")
        return FullframeResize(scale=float(value))
    if isinstance(value, list):
        return FullframeResize(size=_size_pair(value, path, minimum=1))
    raise RequestError(path, f"must be a fraction, an int or [width, height], got {describe(value)}")


def _subpatching(value: Any, problems: _Problems) -> Subpatching:
    path = f"{ROOT}.subpatching"
    obj = _normalised_object(value, path, problems)
    _reject_unknown(obj, SECTION_KEYS["subpatching"], path, problems)
    d = Subpatching()
    return Subpatching(
        patch_size=problems.take(
            _patch_size, obj.get("patch_size", d.patch_size), f"{path}.patch_size", default=d.patch_size
        ),
        mode=problems.take(_mode, obj.get("mode", d.mode), f"{path}.mode", default=d.mode),
        padding_fill=problems.take(
            _color, obj.get("padding_fill", "black"), f"{path}.padding_fill", default=d.padding_fill
        ),
        allow_oversize=problems.take(
            _bool, obj.get("allow_oversize", d.allow_oversize), f"{path}.allow_oversize", default=d.allow_oversize
        ),
        oversize_padding=problems.take(
            _number_in,
            obj.get("oversize_padding", d.oversize_padding),
            f"{path}.oversize_padding",
            0.0,
            10.0,
            default=d.oversize_padding,
        ),
        warm_grid=problems.take(_bool, obj.get("warm_grid", d.warm_grid), f"{path}.warm_grid", default=d.warm_grid),
    )


def _prefetch(value: Any, path: str) -> int:
    if not _is_int(value) or not 0 <= value <= MAX_PREFETCH:
        raise RequestError(path, f"must be an int from 0 to {MAX_PREFETCH}, got {describe(value)}")
    return value


def _patch_size(size: Any, path: str) -> tuple[int, int]:
    if _is_int(size):
        size = [size, size]
    if not isinstance(size, (list, tuple)):
        raise RequestError(path, f"must be an int or [width, height], got {describe(size)}")
    return _size_pair(size, path, minimum=MIN_PATCH_SIZE, maximum=MAX_PATCH_SIZE)


def _mode(mode: Any, path: str) -> str:
    if not isinstance(mode, str) or mode.lower() not in ("default", "padding"):
        raise RequestError(path, f"must be 'default' or 'padding', got {describe(mode)}")
    return mode.lower()


def _postprocess(value: Any, problems: _Problems, return_format: ReturnFormat) -> Postprocess:
    path = f"{ROOT}.postprocess"
    polygon = return_format.kind == "polygon"
    if value is None:
        return Postprocess(fill_holes=polygon)
    obj = _normalised_object(value, path, problems)
    _reject_unknown(obj, SECTION_KEYS["postprocess"], path, problems)
    fill_holes = problems.take(_bool, obj.get("fill_holes", polygon), f"{path}.fill_holes", default=polygon)
    if polygon and not fill_holes:
        problems.add(
            RequestError(
                f"{path}.fill_holes",
                f"cannot be false with return_format.type {return_format.type} (a polygon ring cannot hold holes)",
            )
        )
    return Postprocess(
        mask_size_threshold=problems.take(
            _number_in, obj.get("mask_size_threshold", 0), f"{path}.mask_size_threshold", 0.0, 1.0, default=0.0
        ),
        fill_holes=fill_holes,
        dilate=problems.take(_dilate, obj.get("dilate", 0), f"{path}.dilate", default=0),
    )


def _dilate(dilate: Any, path: str) -> int | float:
    if _is_int(dilate):
        return int(_number_in(dilate, path, 0, MAX_DILATE_PX))
    if _is_number(dilate):
        return _number_in(dilate, path, 0.0, MAX_DILATE_FRACTION)
    raise RequestError(path, f"must be an int (pixels) or a float (fraction of the radius), got {describe(dilate)}")


def _return_format(value: Any, problems: _Problems) -> ReturnFormat:
    path = f"{ROOT}.return_format"
    obj = _normalised_object(value, path, problems)
    _reject_unknown(obj, SECTION_KEYS["return_format"], path, problems)
    type_ = problems.take(_return_type, obj.get("type", ReturnFormat.type), f"{path}.type")
    d = ReturnFormat()
    if type_ is not None and not type_.startswith("Polygon"):
        for key in POLYGON_ONLY_KEYS:
            if key in obj:
                problems.add(RequestError(f"{path}.{key}", f"only applies to polygon return formats, not {type_}"))
        return ReturnFormat(type=type_)
    return ReturnFormat(
        type=type_ or d.type,
        epsilon=problems.take(_epsilon, obj.get("epsilon", d.epsilon), f"{path}.epsilon", default=d.epsilon),
        max_points=problems.take(
            _max_points, obj.get("max_points", d.max_points), f"{path}.max_points", default=d.max_points
        ),
    )


def _auto_annotation(value: Any, problems: _Problems) -> AutoAnnotation:
    path = f"{ROOT}.auto_annotation"
    obj = _normalised_object(value, path, problems)
    _reject_unknown(obj, SECTION_KEYS["auto_annotation"], path, problems)
    d = AutoAnnotation()

    def take(key: str, check, *args):
        if key not in obj or (key in ("label", "overlap") and obj[key] is None):
            return getattr(d, key)
        return problems.take(check, obj[key], f"{path}.{key}", *args, default=getattr(d, key))

    return AutoAnnotation(
        label=take("label", _label),
        points_per_side=take("points_per_side", _int_in, 1, MAX_POINTS_PER_SIDE),
        pred_iou_thresh=take("pred_iou_thresh", _number_in, 0.0, 1.0),
        stability_score_thresh=take("stability_score_thresh", _number_in, 0.0, 1.0),
        box_nms_thresh=take("box_nms_thresh", _number_in, 0.0, 1.0),
        min_area=take("min_area", _int_in, 0, 1 << 40),
        max_regions=take("max_regions", _int_in, 1, MAX_REGIONS),
        overlap=take("overlap", _int_in, 0, MAX_PATCH_SIZE // 2),
        time_budget=float(take("time_budget", _number_in, 1.0, MAX_TIME_BUDGET)),
    )


def _label(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise RequestError(path, f"must be a label of the output tag (1 to 200 characters), got {describe(value)}")
    return value


def _int_in(value: Any, path: str, low: int, high: int) -> int:
    if not _is_int(value) or not low <= value <= high:
        raise RequestError(path, f"must be an int from {low} to {high}, got {describe(value)}")
    return int(value)


def _max_points(value: Any, path: str) -> int:
    if not _is_int(value) or not 3 <= value <= MAX_POINTS:
        raise RequestError(path, f"must be an int from 3 to {MAX_POINTS}, got {describe(value)}")
    return int(value)


def _epsilon(value: Any, path: str) -> float:
    if not _is_number(value) or not 0 < value <= MAX_EPSILON:  # NaN fails both comparisons
        raise RequestError(path, f"must be a number > 0 and <= {MAX_EPSILON:g}, got {describe(value)}")
    return float(value)


def _return_type(value: Any, path: str) -> str:
    if isinstance(value, str):
        for known in RETURN_TYPES:
            if value.lower() == known.lower():
                return known
            if value.lower() == known.lower().removesuffix("s") and known.endswith("Labels"):
                raise RequestError(path, f"{describe(value)} is not a return format (did you mean {known}?)")
    raise RequestError(path, f"must be one of {', '.join(RETURN_TYPES)}, got {describe(value)}")


# -- primitives ---------------------------------------------------------------------------


def _normalised_object(value: Any, path: str, problems: _Problems) -> dict:
    """A dict with dash keys turned to underscores; the same key in both forms is an error (the
    first spelling is kept), a value that is not an object an error raised at once."""
    if not isinstance(value, dict):
        raise RequestError(path, f"must be a JSON object, got {describe(value)}")
    strings = {}
    for key, item in value.items():
        if isinstance(key, str):
            strings[key] = item
        else:
            problems.add(RequestError(path, f"keys must be strings, got {describe(key)}"))
    out, clashes = underscore_keys(strings)
    for norm, first, second in clashes:
        problems.add(RequestError(f"{path}.{norm}", f"given twice (as {describe(first)} and {describe(second)})"))
    return out


def _reject_unknown(obj: dict, allowed: tuple[str, ...], path: str, problems: _Problems) -> None:
    for key in obj:
        if key in allowed:
            continue
        home = [f"{ROOT}.{section}" for section, keys in SECTION_KEYS.items() if key in keys]
        if key in TOP_KEYS:
            home = [ROOT]
        hint = f"it belongs in {home[0]}" if home else f"known keys here: {', '.join(allowed)}"
        problems.add(RequestError(f"{path}.{key}", f"unknown key ({hint})"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _positive_int(value: Any, path: str, minimum: int = 1) -> int:
    if not _is_int(value) or value < minimum:
        raise RequestError(path, f"must be an int >= {minimum}, got {describe(value)}")
    return value


def _size_pair(value: Any, path: str, minimum: int, maximum: int | None = None) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise RequestError(path, f"must be [width, height], got {describe(value)}")
    width, height = value
    if not (_is_int(width) and _is_int(height)) or min(width, height) < minimum:
        raise RequestError(path, f"[width, height] must be ints >= {minimum}, got {describe(value)}")
    if maximum is not None and max(width, height) > maximum:
        raise RequestError(path, f"[width, height] must be at most {maximum} per side, got {describe(value)}")
    return width, height


def _number_in(value: Any, path: str, low: float, high: float) -> float:
    if not _is_number(value) or not low <= value <= high:
        raise RequestError(path, f"must be a number from {low:g} to {high:g}, got {describe(value)}")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise RequestError(path, f"must be true or false, got {describe(value)}")
    return value


def _color(value: Any, path: str) -> tuple[int, int, int]:
    if _is_int(value) and 0 <= value <= 255:
        return value, value, value
    if isinstance(value, list) and len(value) == 3 and all(_is_int(c) and 0 <= c <= 255 for c in value):
        return tuple(value)
    if isinstance(value, str):
        try:
            return ImageColor.getrgb(value)[:3]
        except ValueError:
            pass
    raise RequestError(path, f"must be a color name, '#rrggbb', a gray level 0-255 or [r, g, b], got {describe(value)}")
