"""Project `extra_params` -> a frozen, validated `ExtraParams`.

Keys may use dashes or underscores (normalised to underscores); unknown, misplaced and
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
from .keys import underscore_keys

ROOT = "extra_params"
# Bounds on every setting that scales a click's work (README: Security, Limits).
MIN_PATCH_SIZE = 32
MAX_PATCH_SIZE = 8192  # per side: a padded patch is allocated whole (8192 x 8192 RGB = 192 MiB)
MAX_DILATE_PX = 256  # also caps a float dilate once its fraction is applied (postprocess.dilation_radius)
MAX_DILATE_FRACTION = 2.0
MAX_EPSILON = 1024.0  # polygon tolerance in patch pixels
MAX_POINTS = 10_000

RETURN_TYPES = ("BrushLabels", "Brush", "PolygonLabels", "Polygon", "RectangleLabels", "Rectangle")
SECTION_KEYS = {
    "subpatching": ("patch_size", "mode", "padding_fill", "allow_oversize", "oversize_padding"),
    "postprocess": ("mask_size_threshold", "fill_holes", "dilate"),
    "return_format": ("type", "epsilon", "max_points"),
}
TOP_KEYS = ("fullframe_resize", *SECTION_KEYS)
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
                f"{fw}x{fh} would upscale the {width}x{height} image; only downscaling is allowed",
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
        """'brush', 'polygon' or 'rectangle'."""
        return self.type.lower().removesuffix("labels")

    @property
    def labelled(self) -> bool:
        return self.type.endswith("Labels")


@dataclass(frozen=True)
class ExtraParams:
    fullframe_resize: FullframeResize | None = None
    subpatching: Subpatching | None = None
    postprocess: Postprocess = field(default_factory=Postprocess)
    return_format: ReturnFormat = field(default_factory=ReturnFormat)
    source: dict = field(default_factory=dict, compare=False)  # the normalised JSON, for storage

    @property
    def is_stock(self) -> bool:
        return self == ExtraParams()


def parse_extra_params(raw: Any) -> ExtraParams:
    """Validate extra_params as Label Studio sends them (a JSON object, a JSON string or null)."""
    if isinstance(raw, str):
        if not raw.strip():
            return ExtraParams()
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestError(ROOT, f"not valid JSON ({exc.msg} at character {exc.pos})") from None
    if raw is None:
        return ExtraParams()
    obj = _normalised_object(raw, ROOT)
    _reject_unknown(obj, TOP_KEYS, ROOT)

    return_format = _return_format(obj.get("return_format"))
    postprocess = _postprocess(obj.get("postprocess"), return_format)
    return ExtraParams(
        fullframe_resize=_fullframe_resize(obj["fullframe_resize"]) if obj.get("fullframe_resize") is not None else None,
        subpatching=_subpatching(obj["subpatching"]) if obj.get("subpatching") is not None else None,
        postprocess=postprocess,
        return_format=return_format,
        source=obj,
    )


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


def _subpatching(value: Any) -> Subpatching:
    path = f"{ROOT}.subpatching"
    obj = _normalised_object(value, path)
    _reject_unknown(obj, SECTION_KEYS["subpatching"], path)
    default = Subpatching()
    size = obj.get("patch_size", default.patch_size)
    if _is_int(size):
        size = [size, size]
    if not isinstance(size, (list, tuple)):
        raise RequestError(f"{path}.patch_size", f"must be an int or [width, height], got {describe(size)}")
    mode = obj.get("mode", default.mode)
    if not isinstance(mode, str) or mode.lower() not in ("default", "padding"):
        raise RequestError(f"{path}.mode", f"must be 'default' or 'padding', got {describe(mode)}")
    return Subpatching(
        patch_size=_size_pair(size, f"{path}.patch_size", minimum=MIN_PATCH_SIZE, maximum=MAX_PATCH_SIZE),
        mode=mode.lower(),
        padding_fill=_color(obj.get("padding_fill", "black"), f"{path}.padding_fill"),
        allow_oversize=_bool(obj.get("allow_oversize", default.allow_oversize), f"{path}.allow_oversize"),
        oversize_padding=_number_in(obj.get("oversize_padding", default.oversize_padding),
                                    f"{path}.oversize_padding", 0.0, 10.0),
    )


def _postprocess(value: Any, return_format: ReturnFormat) -> Postprocess:
    path = f"{ROOT}.postprocess"
    polygon = return_format.kind == "polygon"
    if value is None:
        return Postprocess(fill_holes=polygon)
    obj = _normalised_object(value, path)
    _reject_unknown(obj, SECTION_KEYS["postprocess"], path)
    fill_holes = _bool(obj.get("fill_holes", polygon), f"{path}.fill_holes")
    if polygon and not fill_holes:
        raise RequestError(f"{path}.fill_holes",
                           f"cannot be false with return_format.type {return_format.type} "
                           "(a polygon ring cannot hold holes)")
    dilate = obj.get("dilate", 0)
    if _is_int(dilate):
        dilate = int(_number_in(dilate, f"{path}.dilate", 0, MAX_DILATE_PX))
    elif _is_number(dilate):
        dilate = _number_in(dilate, f"{path}.dilate", 0.0, MAX_DILATE_FRACTION)
    else:
        raise RequestError(f"{path}.dilate", f"must be an int (pixels) or a float (fraction of the radius), "
                                             f"got {describe(dilate)}")
    return Postprocess(
        mask_size_threshold=_number_in(obj.get("mask_size_threshold", 0), f"{path}.mask_size_threshold", 0.0, 1.0),
        fill_holes=fill_holes,
        dilate=dilate,
    )


def _return_format(value: Any) -> ReturnFormat:
    path = f"{ROOT}.return_format"
    if value is None:
        return ReturnFormat()
    obj = _normalised_object(value, path)
    _reject_unknown(obj, SECTION_KEYS["return_format"], path)
    type_ = _return_type(obj.get("type", ReturnFormat.type), f"{path}.type")
    if not type_.startswith("Polygon"):
        for key in POLYGON_ONLY_KEYS:
            if key in obj:
                raise RequestError(f"{path}.{key}", f"only applies to polygon return formats, not {type_}")
    max_points = obj.get("max_points", ReturnFormat.max_points)
    if not _is_int(max_points) or not 3 <= max_points <= MAX_POINTS:
        raise RequestError(f"{path}.max_points", f"must be an int from 3 to {MAX_POINTS}, got {describe(max_points)}")
    epsilon = obj.get("epsilon", ReturnFormat.epsilon)
    if not _is_number(epsilon) or not 0 < epsilon <= MAX_EPSILON:  # NaN fails both comparisons
        raise RequestError(f"{path}.epsilon", f"must be a number > 0 and <= {MAX_EPSILON:g}, got {describe(epsilon)}")
    return ReturnFormat(type=type_, epsilon=float(epsilon), max_points=int(max_points))


def _return_type(value: Any, path: str) -> str:
    if isinstance(value, str):
        for known in RETURN_TYPES:
            if value.lower() == known.lower():
                return known
            if value.lower() == known.lower().removesuffix("s") and known.endswith("Labels"):
                raise RequestError(path, f"{describe(value)} is not a return format; did you mean {known}?")
    raise RequestError(path, f"must be one of {', '.join(RETURN_TYPES)}, got {describe(value)}")


# -- primitives ---------------------------------------------------------------------------

def _normalised_object(value: Any, path: str) -> dict:
    """A dict with dash keys turned to underscores; the same key in both forms is an error."""
    if not isinstance(value, dict):
        raise RequestError(path, f"must be a JSON object, got {describe(value)}")
    for key in value:
        if not isinstance(key, str):
            raise RequestError(path, f"keys must be strings, got {describe(key)}")
    out, clashes = underscore_keys(value)
    if clashes:
        norm, first, second = clashes[0]
        raise RequestError(f"{path}.{norm}", f"given twice (as {describe(first)} and {describe(second)})")
    return out


def _reject_unknown(obj: dict, allowed: tuple[str, ...], path: str) -> None:
    for key in obj:
        if key in allowed:
            continue
        home = [f"{ROOT}.{section}" for section, keys in SECTION_KEYS.items() if key in keys]
        if key in TOP_KEYS:
            home = [ROOT]
        hint = f"; it belongs in {home[0]}" if home else f"; known keys here: {', '.join(allowed)}"
        raise RequestError(f"{path}.{key}", f"unknown key{hint}")


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
