"""extra_params parsing: key naming, each section's values, and every error's field path."""

import json

import pytest

from sam2plus.errors import RequestError
from sam2plus.params import (
    MAX_EPSILON,
    MAX_POINTS,
    ExtraParams,
    FullframeResize,
    Postprocess,
    ReturnFormat,
    Subpatching,
    parse_extra_params,
)


def _error(raw) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_extra_params(raw)
    return info.value


def _assert_error(raw, field, *fragments):
    err = _error(raw)
    assert err.field == field
    assert err.status == 400
    assert err.message.startswith(field + ": ")
    for fragment in fragments:
        assert fragment in err.message, (fragment, err.message)
    return err


# -- stock ----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, {}, "", "   ", "{}", "null"])
def test_empty_extra_params_are_stock(raw):
    params = parse_extra_params(raw)
    assert params.is_stock
    assert params == ExtraParams()
    assert params.fullframe_resize is None
    assert params.subpatching is None
    assert params.postprocess.is_noop
    assert params.return_format.type == "BrushLabels"


def test_json_string_form_equals_object_form():
    obj = {
        "fullframe_resize": 0.5,
        "subpatching": {"patch_size": 512},
        "postprocess": {"dilate": 3},
        "return_format": {"type": "Polygon", "epsilon": 0.003},
    }
    parsed = parse_extra_params(json.dumps(obj))
    assert parsed == parse_extra_params(obj)
    assert not parsed.is_stock
    assert parsed.subpatching.patch_size == (512, 512)


def test_explicit_defaults_are_stock():
    assert parse_extra_params({"return_format": {"type": "brushlabels"}, "postprocess": {}}).is_stock


def test_shipped_example_parses():
    params = parse_extra_params(
        {
            "fullframe_resize": 0.5,
            "subpatching": {"patch_size": 1024},
            "postprocess": {"mask_size_threshold": 1, "fill_holes": True, "dilate": 0},
            "return_format": {"type": "PolygonLabels", "epsilon": 0.003, "max_points": 100},
        }
    )
    assert params.fullframe_resize == FullframeResize(scale=0.5)
    assert params.subpatching == Subpatching(patch_size=(1024, 1024))
    assert params.postprocess == Postprocess(mask_size_threshold=1, fill_holes=True, dilate=0)
    assert params.return_format == ReturnFormat(type="PolygonLabels", epsilon=0.003, max_points=100)


# -- key naming ------------------------------------------------------------------------------


def test_dash_and_underscore_keys_are_the_same_key():
    dashed = parse_extra_params(
        {
            "fullframe-resize": 0.25,
            "subpatching": {
                "patch-size": [640, 480],
                "padding-fill": "white",
                "allow-oversize": False,
                "oversize-padding": 0.1,
            },
            "postprocess": {"mask-size-threshold": 0.5, "fill-holes": True},
            "return-format": {"type": "Polygon", "max-points": 20},
        }
    )
    underscored = parse_extra_params(
        {
            "fullframe_resize": 0.25,
            "subpatching": {
                "patch_size": [640, 480],
                "padding_fill": "white",
                "allow_oversize": False,
                "oversize_padding": 0.1,
            },
            "postprocess": {"mask_size_threshold": 0.5, "fill_holes": True},
            "return_format": {"type": "Polygon", "max_points": 20},
        }
    )
    assert dashed == underscored
    assert dashed.subpatching.patch_size == (640, 480)
    assert dashed.subpatching.padding_fill == (255, 255, 255)
    assert dashed.subpatching.allow_oversize is False
    assert dashed.return_format.max_points == 20
    assert "fullframe_resize" in dashed.source and "return_format" in dashed.source


@pytest.mark.parametrize(
    "raw, field, spellings",
    [
        (
            {"fullframe-resize": 0.5, "fullframe_resize": 0.5},
            "extra_params.fullframe_resize",
            ('"fullframe-resize"', '"fullframe_resize"'),
        ),
        (
            {"subpatching": {"patch_size": 512, "patch-size": 512}},
            "extra_params.subpatching.patch_size",
            ('"patch_size"', '"patch-size"'),
        ),
        (
            {"postprocess": {"fill-holes": True, "fill_holes": True}},
            "extra_params.postprocess.fill_holes",
            ('"fill-holes"', '"fill_holes"'),
        ),
        (
            {"return_format": {"type": "Polygon", "max-points": 9, "max_points": 9}},
            "extra_params.return_format.max_points",
            ('"max-points"', '"max_points"'),
        ),
    ],
)
def test_mixing_both_forms_of_one_key_is_an_error(raw, field, spellings):
    _assert_error(raw, field, "given twice", *spellings)


def test_unknown_key_error_names_its_path():
    _assert_error(
        {"subpatching": {"patch_size": 512, "colour": "red"}},
        "extra_params.subpatching.colour",
        "unknown key",
        "known keys here",
        "padding_fill",
    )
    _assert_error({"bogus": 1}, "extra_params.bogus", "unknown key", "fullframe_resize")
    _assert_error({"return-format": {"kind": "Brush"}}, "extra_params.return_format.kind", "unknown key")


def test_misplaced_top_level_patch_size_points_to_subpatching():
    _assert_error({"patch-size": 512}, "extra_params.patch_size", "unknown key", "belongs in extra_params.subpatching")


@pytest.mark.parametrize(
    "raw, field, home",
    [
        ({"dilate": 3}, "extra_params.dilate", "extra_params.postprocess"),
        ({"type": "Polygon"}, "extra_params.type", "extra_params.return_format"),
        ({"subpatching": {"dilate": 3}}, "extra_params.subpatching.dilate", "extra_params.postprocess"),
        ({"postprocess": {"epsilon": 0.1}}, "extra_params.postprocess.epsilon", "extra_params.return_format"),
        ({"subpatching": {"fullframe_resize": 0.5}}, "extra_params.subpatching.fullframe_resize", "extra_params"),
    ],
)
def test_misplaced_key_points_to_its_home(raw, field, home):
    _assert_error(raw, field, "unknown key", f"belongs in {home}")


@pytest.mark.parametrize(
    "raw, field, shown",
    [
        ([1, 2], "extra_params", "[1, 2]"),
        ("[1, 2]", "extra_params", "[1, 2]"),
        ({"subpatching": 1024}, "extra_params.subpatching", "1024"),
        ({"subpatching": True}, "extra_params.subpatching", "true"),
        ({"postprocess": "fill"}, "extra_params.postprocess", '"fill"'),
        ({"return_format": "Polygon"}, "extra_params.return_format", '"Polygon"'),
    ],
)
def test_sections_must_be_objects(raw, field, shown):
    _assert_error(raw, field, "must be a JSON object", shown)


def test_invalid_json_string_is_an_error():
    _assert_error('{"subpatching": ', "extra_params", "not valid JSON", "at character 16")


def test_non_string_keys_are_an_error():
    _assert_error({5: 1}, "extra_params", "keys must be strings", "5")


# -- fullframe-resize ------------------------------------------------------------------------


def test_fullframe_resize_float_int_and_pair():
    half = parse_extra_params({"fullframe_resize": 0.5}).fullframe_resize
    assert half == FullframeResize(scale=0.5)
    assert half.frame_size(2000, 1001) == (1000, 500)
    assert parse_extra_params({"fullframe_resize": 1.0}).fullframe_resize.frame_size(300, 200) == (300, 200)

    square = parse_extra_params({"fullframe_resize": 800}).fullframe_resize
    assert square == FullframeResize(size=(800, 800))
    assert square.frame_size(2000, 1000) == (800, 800)

    pair = parse_extra_params({"fullframe_resize": [640, 480]}).fullframe_resize
    assert pair == FullframeResize(size=(640, 480))
    assert pair.frame_size(1280, 960) == (640, 480)
    assert pair.frame_size(640, 480) == (640, 480)  # same size is not upscaling


def test_fullframe_resize_tiny_fraction_keeps_one_pixel():
    assert parse_extra_params({"fullframe_resize": 0.0001}).fullframe_resize.frame_size(100, 50) == (1, 1)


@pytest.mark.parametrize("value", [1.5, 2.0, 0.0, -0.5])
def test_fullframe_resize_refuses_upscaling(value):
    _assert_error({"fullframe_resize": value}, "extra_params.fullframe_resize", "fraction", json.dumps(value))


@pytest.mark.parametrize(
    "size, image", [((2000, 2000), (1500, 3000)), ((800, 1200), (1000, 1000)), ((1001, 10), (1000, 1000))]
)
def test_fullframe_resize_size_bigger_than_image_refuses_upscaling(size, image):
    resize = FullframeResize(size=size)
    with pytest.raises(RequestError) as info:
        resize.frame_size(*image)
    assert info.value.field == "extra_params.fullframe_resize"
    assert f"{size[0]}x{size[1]}" in info.value.message
    assert f"{image[0]}x{image[1]}" in info.value.message
    assert "upscale" in info.value.message


def test_fullframe_resize_int_bigger_than_image_refuses_upscaling():
    resize = parse_extra_params({"fullframe_resize": 4096}).fullframe_resize
    with pytest.raises(RequestError) as info:
        resize.frame_size(2000, 1000)
    assert info.value.field == "extra_params.fullframe_resize"
    assert "4096x4096" in info.value.message


@pytest.mark.parametrize(
    "value, fragments",
    [
        (0, ["must be an int >= 1", "got 0"]),
        (-3, ["must be an int >= 1", "got -3"]),
        ("half", ["must be a fraction, an int or [width, height]", '"half"']),
        (True, ["must be a fraction, an int or [width, height]", "got true"]),
        ({"scale": 0.5}, ["must be a fraction", '{"scale": 0.5}']),
        ([640], ["must be [width, height]", "[640]"]),
        ([640, 480, 3], ["must be [width, height]", "[640, 480, 3]"]),
        ([640.0, 480], ["[width, height] must be ints >= 1", "[640.0, 480]"]),
        ([0, 480], ["[width, height] must be ints >= 1", "[0, 480]"]),
        ([True, 480], ["[width, height] must be ints >= 1", "[true, 480]"]),
    ],
)
def test_fullframe_resize_bad_values(value, fragments):
    _assert_error({"fullframe_resize": value}, "extra_params.fullframe_resize", *fragments)


# -- return-format ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, canonical",
    [
        ("BrushLabels", "BrushLabels"),
        ("brushlabels", "BrushLabels"),
        ("BRUSH", "Brush"),
        ("polygonlabels", "PolygonLabels"),
        ("pOlYgOn", "Polygon"),
        ("RectangleLABELS", "RectangleLabels"),
        ("rectangle", "Rectangle"),
        ("bitmaskLABELS", "BitmaskLabels"),
        ("BITMASK", "Bitmask"),
    ],
)
def test_return_format_type_is_case_insensitive(given, canonical):
    fmt = parse_extra_params({"return_format": {"type": given}}).return_format
    assert fmt.type == canonical
    assert fmt.labelled == canonical.endswith("Labels")
    assert fmt.kind == canonical.lower().removesuffix("labels")


def test_return_format_defaults():
    fmt = parse_extra_params({"return_format": {}}).return_format
    assert fmt == ReturnFormat(type="BrushLabels", epsilon=1.0, max_points=100)
    assert fmt.kind == "brush" and fmt.labelled


@pytest.mark.parametrize(
    "singular, plural",
    [
        ("BrushLabel", "BrushLabels"),
        ("PolygonLabel", "PolygonLabels"),
        ("rectanglelabel", "RectangleLabels"),
        ("BitmaskLabel", "BitmaskLabels"),
    ],
)
def test_singular_brushlabel_is_rejected(singular, plural):
    _assert_error(
        {"return_format": {"type": singular}},
        "extra_params.return_format.type",
        json.dumps(singular),
        f"did you mean {plural}",
    )


@pytest.mark.parametrize("value", ["Mask", "Polygons", "", 3, None, ["Brush"]])
def test_unknown_return_type_is_rejected(value):
    _assert_error(
        {"return_format": {"type": value}},
        "extra_params.return_format.type",
        "must be one of BrushLabels, Brush, PolygonLabels, Polygon, RectangleLabels, Rectangle, BitmaskLabels, Bitmask",
        json.dumps(value),
    )


@pytest.mark.parametrize("type_", ["BrushLabels", "Brush", "RectangleLabels", "Rectangle", "BitmaskLabels", "Bitmask"])
@pytest.mark.parametrize("key, value", [("epsilon", 0.01), ("max-points", 50)])
def test_epsilon_on_brush_format_is_misplaced(type_, key, value):
    norm = key.replace("-", "_")
    _assert_error(
        {"return_format": {"type": type_, key: value}},
        f"extra_params.return_format.{norm}",
        "only applies to polygon return formats",
        type_,
    )


@pytest.mark.parametrize("type_", ["PolygonLabels", "Polygon", "polygon"])
def test_polygon_keys_accepted_on_polygon_formats(type_):
    fmt = parse_extra_params({"return_format": {"type": type_, "epsilon": 2, "max_points": 3}}).return_format
    assert fmt.epsilon == 2.0 and isinstance(fmt.epsilon, float)
    assert fmt.max_points == 3


@pytest.mark.parametrize(
    "value, shown",
    [
        (2, "2"),
        (0, "0"),
        (10.0, "10.0"),
        (True, "true"),
        ("50", '"50"'),
        (10_001, "10001"),
        (10**30, "1000000000000000000000000000000"),
    ],
)
def test_max_points_must_be_an_int_from_3_to_the_limit(value, shown):
    _assert_error(
        {"return_format": {"type": "Polygon", "max_points": value}},
        "extra_params.return_format.max_points",
        "must be an int from 3 to 10000",
        shown,
    )


def test_max_points_at_the_limit_is_accepted():
    assert (
        parse_extra_params({"return_format": {"type": "Polygon", "max_points": 10_000}}).return_format.max_points
        == MAX_POINTS
        == 10_000
    )


@pytest.mark.parametrize(
    "value, shown",
    [
        (0, "0"),
        (-0.5, "-0.5"),
        (True, "true"),
        ("0.01", '"0.01"'),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (1e100, "1e+100"),
        (1024.5, "1024.5"),
    ],
)
def test_epsilon_must_be_a_finite_number_from_0_to_the_limit(value, shown):
    """Issue 11 finding 7: NaN, Infinity and 1e100 were stored, then every polygon click was a 500."""
    _assert_error(
        {"return_format": {"type": "Polygon", "epsilon": value}},
        "extra_params.return_format.epsilon",
        "must be a number > 0 and <= 1024",
        shown,
    )


def test_epsilon_at_the_limit_is_accepted():
    assert (
        parse_extra_params({"return_format": {"type": "Polygon", "epsilon": 1024}}).return_format.epsilon == MAX_EPSILON
    )


# -- postprocess -----------------------------------------------------------------------------


@pytest.mark.parametrize("type_", ["PolygonLabels", "Polygon"])
def test_polygon_implies_fill_holes(type_):
    without = parse_extra_params({"return_format": {"type": type_}})
    assert without.postprocess == Postprocess(fill_holes=True)
    with_section = parse_extra_params({"return_format": {"type": type_}, "postprocess": {"dilate": 2}})
    assert with_section.postprocess == Postprocess(fill_holes=True, dilate=2)


@pytest.mark.parametrize("type_", ["BrushLabels", "Brush", "RectangleLabels", "Rectangle"])
def test_non_polygon_formats_do_not_fill_holes_by_default(type_):
    assert parse_extra_params({"return_format": {"type": type_}}).postprocess.fill_holes is False
    assert (
        parse_extra_params(
            {"return_format": {"type": type_}, "postprocess": {"fill_holes": False}}
        ).postprocess.fill_holes
        is False
    )


@pytest.mark.parametrize("type_", ["PolygonLabels", "polygon"])
def test_explicit_fill_holes_false_with_polygon_is_an_error(type_):
    canonical = "PolygonLabels" if type_ == "PolygonLabels" else "Polygon"
    _assert_error(
        {"return_format": {"type": type_}, "postprocess": {"fill-holes": False}},
        "extra_params.postprocess.fill_holes",
        "cannot be false",
        canonical,
    )


def test_postprocess_defaults_are_noop():
    assert parse_extra_params({"postprocess": {}}).postprocess == Postprocess(0.0, False, 0)
    assert Postprocess().is_noop
    assert not Postprocess(dilate=0.1).is_noop
    assert not Postprocess(mask_size_threshold=0.5).is_noop


@pytest.mark.parametrize(
    "value, expected_type", [(3, int), (0, int), (256, int), (0.25, float), (2.0, float), (0.0, float)]
)
def test_dilate_int_is_pixels_and_float_is_fraction(value, expected_type):
    dilate = parse_extra_params({"postprocess": {"dilate": value}}).postprocess.dilate
    assert dilate == value
    assert type(dilate) is expected_type


@pytest.mark.parametrize(
    "value, fragments",
    [
        (-1, ["must be a number from 0 to 256", "got -1"]),
        (257, ["must be a number from 0 to 256", "got 257"]),
        (1024, ["must be a number from 0 to 256", "got 1024"]),  # issue 11 finding 4: took 33 s on a 1024x1024 mask
        (-0.1, ["must be a number from 0 to 2", "got -0.1"]),
        (2.5, ["must be a number from 0 to 2", "got 2.5"]),
        (10.0, ["must be a number from 0 to 2", "got 10.0"]),  # issue 11 finding 4: ran past 600 s
        (float("nan"), ["must be a number from 0 to 2", "got NaN"]),
        (float("inf"), ["must be a number from 0 to 2", "got Infinity"]),
        (True, ["must be an int (pixels) or a float", "got true"]),
        ("3px", ["must be an int (pixels) or a float", '"3px"']),
        (None, ["must be an int (pixels) or a float", "got null"]),
    ],
)
def test_bad_dilate_is_rejected(value, fragments):
    _assert_error({"postprocess": {"dilate": value}}, "extra_params.postprocess.dilate", *fragments)


@pytest.mark.parametrize("value", [0, 0.5, 1, 1.0])
def test_mask_size_threshold_range(value):
    assert parse_extra_params({"postprocess": {"mask_size_threshold": value}}).postprocess.mask_size_threshold == value


@pytest.mark.parametrize("value, shown", [(1.5, "1.5"), (-0.1, "-0.1"), (True, "true"), (False, "false"), ("1", '"1"')])
def test_bad_mask_size_threshold_is_rejected(value, shown):
    _assert_error(
        {"postprocess": {"mask_size_threshold": value}},
        "extra_params.postprocess.mask_size_threshold",
        "must be a number from 0 to 1",
        shown,
    )


@pytest.mark.parametrize("value, shown", [(1, "1"), ("true", '"true"'), (None, "null")])
def test_fill_holes_must_be_a_bool(value, shown):
    _assert_error(
        {"postprocess": {"fill_holes": value}}, "extra_params.postprocess.fill_holes", "must be true or false", shown
    )


# -- subpatching -----------------------------------------------------------------------------


def test_subpatching_defaults():
    sub = parse_extra_params({"subpatching": {}}).subpatching
    assert sub == Subpatching(
        patch_size=(1024, 1024), mode="default", padding_fill=(0, 0, 0), allow_oversize=True, oversize_padding=0.05
    )


@pytest.mark.parametrize(
    "value, expected",
    [(512, (512, 512)), (32, (32, 32)), ([800, 600], (800, 600)), (8192, (8192, 8192)), ([8192, 32], (8192, 32))],
)
def test_patch_size_int_or_pair(value, expected):
    assert parse_extra_params({"subpatching": {"patch_size": value}}).subpatching.patch_size == expected


@pytest.mark.parametrize(
    "value, fragments",
    [
        ("512", ["must be an int or [width, height]", '"512"']),
        (512.0, ["must be an int or [width, height]", "512.0"]),
        (True, ["must be an int or [width, height]", "got true"]),
        (None, ["must be an int or [width, height]", "got null"]),
        ([512], ["must be [width, height]", "[512]"]),
        ([512, 512, 3], ["must be [width, height]", "[512, 512, 3]"]),
        (16, ["must be ints >= 32", "[16, 16]"]),
        ([512, 31], ["must be ints >= 32", "[512, 31]"]),
        ([512, 256.5], ["must be ints >= 32", "[512, 256.5]"]),
        ([False, 512], ["must be ints >= 32", "[false, 512]"]),
        (8193, ["must be at most 8192 per side", "[8193, 8193]"]),
        ([30000, 30000], ["must be at most 8192 per side", "[30000, 30000]"]),  # issue 11 finding 3: 2.7 GB per click
        ([512, 10**9], ["must be at most 8192 per side", "[512, 1000000000]"]),
    ],
)
def test_bad_patch_size_is_rejected(value, fragments):
    _assert_error({"subpatching": {"patch_size": value}}, "extra_params.subpatching.patch_size", *fragments)


@pytest.mark.parametrize("value, expected", [("default", "default"), ("padding", "padding"), ("Padding", "padding")])
def test_mode(value, expected):
    assert parse_extra_params({"subpatching": {"mode": value}}).subpatching.mode == expected


@pytest.mark.parametrize("value, shown", [("pad", '"pad"'), (1, "1"), (None, "null")])
def test_bad_mode_is_rejected(value, shown):
    _assert_error(
        {"subpatching": {"mode": value}}, "extra_params.subpatching.mode", "must be 'default' or 'padding'", shown
    )


@pytest.mark.parametrize(
    "value, expected",
    [
        ("black", (0, 0, 0)),
        ("white", (255, 255, 255)),
        ("red", (255, 0, 0)),
        ("#00ff80", (0, 255, 128)),
        ("#0f0", (0, 255, 0)),
        ("#ff000080", (255, 0, 0)),
        (128, (128, 128, 128)),
        (0, (0, 0, 0)),
        ([10, 20, 30], (10, 20, 30)),
    ],
)
def test_padding_fill_color_forms(value, expected):
    fill = parse_extra_params({"subpatching": {"padding_fill": value}}).subpatching.padding_fill
    assert tuple(fill) == expected
    assert len(fill) == 3


@pytest.mark.parametrize(
    "value, shown",
    [
        ("blurple", '"blurple"'),
        ("#12345", '"#12345"'),
        (256, "256"),
        (-1, "-1"),
        (True, "true"),
        ([10, 20], "[10, 20]"),
        ([10, 20, 300], "[10, 20, 300]"),
        ([1.0, 2, 3], "[1.0, 2, 3]"),
        (0.5, "0.5"),
    ],
)
def test_bad_padding_fill_is_rejected(value, shown):
    _assert_error(
        {"subpatching": {"padding_fill": value}}, "extra_params.subpatching.padding_fill", "must be a color name", shown
    )


@pytest.mark.parametrize("value, shown", [(1, "1"), (0, "0"), ("false", '"false"'), (None, "null")])
def test_allow_oversize_must_be_a_bool(value, shown):
    _assert_error(
        {"subpatching": {"allow_oversize": value}},
        "extra_params.subpatching.allow_oversize",
        "must be true or false",
        shown,
    )


@pytest.mark.parametrize("value", [0, 0.0, 0.2, 10])
def test_oversize_padding_range(value):
    assert parse_extra_params({"subpatching": {"oversize_padding": value}}).subpatching.oversize_padding == value


@pytest.mark.parametrize("value, shown", [(-0.05, "-0.05"), (10.5, "10.5"), (True, "true"), ("5%", '"5%"')])
def test_bad_oversize_padding_is_rejected(value, shown):
    _assert_error(
        {"subpatching": {"oversize_padding": value}},
        "extra_params.subpatching.oversize_padding",
        "must be a number from 0 to 10",
        shown,
    )


# -- bools where numbers are expected, in every numeric slot ------------------------------


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"fullframe_resize": False}, "extra_params.fullframe_resize"),
        ({"subpatching": {"patch_size": False}}, "extra_params.subpatching.patch_size"),
        ({"subpatching": {"oversize_padding": False}}, "extra_params.subpatching.oversize_padding"),
        ({"postprocess": {"mask_size_threshold": True}}, "extra_params.postprocess.mask_size_threshold"),
        ({"postprocess": {"dilate": False}}, "extra_params.postprocess.dilate"),
        ({"return_format": {"type": "Polygon", "epsilon": False}}, "extra_params.return_format.epsilon"),
        ({"return_format": {"type": "Polygon", "max_points": True}}, "extra_params.return_format.max_points"),
    ],
)
def test_bools_are_rejected_where_numbers_are_expected(raw, field):
    err = _assert_error(raw, field)
    assert "true" in err.message or "false" in err.message


# -- every error at once --------------------------------------------------------------------


def test_every_error_is_reported_at_once_section_by_section_in_the_order_given():
    """Issue 9: an extra_params with two mistakes reported only the first."""
    err = _error(
        {
            "postprocess": {"fill_holes": 2, "dilate": -1},
            "bogus": 1,
            "return_format": {"type": "Brush", "epsilon": 0.5},
            "subpatching": {"mode": "x", "patch-size": 9},
        }
    )
    assert [problem.split(":")[0] for problem in err.problems] == [
        "extra_params.postprocess.fill_holes",
        "extra_params.postprocess.dilate",
        "extra_params.bogus",
        "extra_params.return_format.epsilon",
        "extra_params.subpatching.patch_size",
        "extra_params.subpatching.mode",
    ]
    assert err.field == "extra_params.postprocess.fill_holes" and err.message == "; ".join(err.problems)
    assert "\n" not in err.message


def test_one_error_is_reported_alone():
    err = _error({"subpatching": {"patch_size": 7}})
    assert err.problems == (err.message,) and err.message.startswith("extra_params.subpatching.patch_size: ")


def test_a_section_that_is_not_an_object_is_one_error_beside_the_others():
    err = _error({"subpatching": 5, "postprocess": {"dilate": "big"}})
    assert [problem.split(":")[0] for problem in err.problems] == [
        "extra_params.subpatching",
        "extra_params.postprocess.dilate",
    ]


def test_auto_annotation_is_opt_in_and_takes_its_defaults():
    assert parse_extra_params({}).auto_annotation is None
    auto = parse_extra_params({"auto-annotation": {"label": "cell", "points-per-side": 16}}).auto_annotation
    assert auto.label == "cell" and auto.points_per_side == 16 and auto.time_budget == 60.0 and auto.max_regions == 200


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("time_budget", 100, "must be a number from 1 to 90"),
        ("points_per_side", 0, "must be an int from 1 to 64"),
        ("max_regions", 5000, "must be an int from 1 to 2000"),
        ("pred_iou_thresh", 1.5, "must be a number from 0 to 1"),
        ("label", "", "must be a label of the output tag"),
        ("min_area", -1, "must be an int from 0"),
        ("windows", 3, "unknown key"),
    ],
)
def test_auto_annotation_values_are_bounded(key, value, message):
    _assert_error({"auto_annotation": {key: value}}, f"extra_params.auto_annotation.{key}", message)
