"""Label Studio's interactive context -> Prompt (fractions of the image, and the size it declares)."""

import ast
import logging
from pathlib import Path

import pytest

from sam2plus.errors import RequestError
from sam2plus.prompts import Prompt, parse_prompt


def _point(x, y, positive=None, label=None, kind="keypointlabels"):
    value = {"x": x, "y": y, "width": 0.5}
    if label is not None:
        value[kind] = [label]
    region = {"type": kind, "value": value, "original_width": 1000, "original_height": 500}
    if positive is not None:
        region["is_positive"] = positive
    return region


def _box(x, y, w, h, label=None, kind="rectanglelabels", rotation=0):
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": rotation}
    if label is not None:
        value[kind] = [label]
    return {"type": kind, "value": value, "original_width": 1000, "original_height": 500}


def _flat(points):
    return [c for point in points for c in point]


def _ctx(*regions):
    return {"result": list(regions)}


def _error(context) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_prompt(context)
    assert info.value.status == 400
    return info.value


def test_positive_and_negative_keypoints():
    prompt = parse_prompt(_ctx(_point(10, 20, True), _point(50, 75, False), _point(90, 5)))
    assert _flat(prompt.points) == pytest.approx(_flat(((0.1, 0.2), (0.5, 0.75), (0.9, 0.05))))
    assert prompt.labels == (1, 0, 1)
    assert prompt.box is None


@pytest.mark.parametrize("flag, expected", [(True, 1), (False, 0), (None, 1), (1, 1), (0, 0)])
def test_is_positive_flag(flag, expected):
    prompt = parse_prompt(_ctx(_point(1, 1, True), _point(40, 60, flag)))
    assert prompt.labels[1] == expected


def test_rectangle():
    prompt = parse_prompt(_ctx(_box(10, 20, 30, 40)))
    assert prompt.box == pytest.approx((0.1, 0.2, 0.4, 0.6))
    assert prompt.points == () and prompt.labels == ()
    assert prompt.bounds() == pytest.approx((0.1, 0.2, 0.4, 0.6))


def test_rectangle_past_the_edge_is_clipped_to_the_image():
    prompt = parse_prompt(_ctx(_box(80, 90, 30, 20)))
    assert prompt.box == pytest.approx((0.8, 0.9, 1.0, 1.0))


def test_keypoints_and_rectangle_together():
    prompt = parse_prompt(_ctx(_box(10, 10, 20, 20), _point(15, 15), _point(5, 50, False)))
    assert prompt.box == pytest.approx((0.1, 0.1, 0.3, 0.3))
    assert _flat(prompt.points) == pytest.approx(_flat(((0.15, 0.15), (0.05, 0.5))))
    assert prompt.labels == (1, 0)
    assert prompt.bounds() == pytest.approx((0.05, 0.1, 0.3, 0.5))


def test_only_negative_points_with_a_rectangle_are_allowed():
    prompt = parse_prompt(_ctx(_point(50, 50, False), _box(10, 10, 20, 20)))
    assert prompt.labels == (0,)
    assert prompt.box is not None


@pytest.mark.parametrize(
    "region, label",
    [
        (_point(10, 10, label="Fish"), "Fish"),
        (_box(10, 10, 5, 5, label="Tooth"), "Tooth"),
        (_point(10, 10, label="Ignored", kind="keypoint"), None),
        (_box(10, 10, 5, 5, kind="rectangle"), None),
    ],
)
def test_label_is_carried(region, label):
    assert parse_prompt(_ctx(region)).label == label


def test_region_types_are_case_insensitive():
    prompt = parse_prompt(
        _ctx(
            {"type": "KeyPointLabels", "value": {"x": 20, "y": 40, "keypointlabels": ["A"]}},
            {"type": "Rectangle", "value": {"x": 0, "y": 0, "width": 50, "height": 50}},
        )
    )
    assert _flat(prompt.points) == pytest.approx(_flat(((0.2, 0.4),)))
    assert prompt.box == pytest.approx((0.0, 0.0, 0.5, 0.5))
    assert prompt.label == "A"


def test_last_rectangle_wins():
    prompt = parse_prompt(_ctx(_box(10, 10, 10, 10, label="first"), _box(50, 60, 20, 30, label="second")))
    assert prompt.box == pytest.approx((0.5, 0.6, 0.7, 0.9))
    assert prompt.label == "second"


def test_unlabelled_region_keeps_an_earlier_label():
    prompt = parse_prompt(_ctx(_point(10, 10, label="Fish"), _point(20, 20)))
    assert prompt.label == "Fish"


def test_prompt_is_a_plain_value():
    expected = Prompt(points=((0.5, 0.5),), labels=(1,), declared_size=(1000, 500))
    assert parse_prompt(_ctx(_point(50, 50))) == expected


@pytest.mark.parametrize(
    "first, declared",
    [
        ({"original_width": 1000, "original_height": 500}, (1000, 500)),
        ({"original_width": 1000}, None),
        ({"original_height": 500}, None),
        ({"original_width": None, "original_height": 500}, None),
        ({}, None),
        ({"original_width": "1600\nforged", "original_height": [1]}, ("1600\nforged", [1])),  # as sent
    ],
)
def test_the_first_region_declares_the_image_size(first, declared):
    region = {"type": "keypointlabels", "value": {"x": 50, "y": 50}, **first}
    later = _point(10, 10) | {"original_width": 7, "original_height": 7}  # only the first region counts
    assert parse_prompt(_ctx(region, later)).declared_size == declared


@pytest.mark.parametrize(
    "declared, warned",
    [((1000, 500), False), ((1000.0, 500), False), (None, False), ((500, 1000), True), (("1000", 500), True)],
)
def test_a_declared_size_other_than_the_decoded_one_is_a_warning(declared, warned, caplog):
    """The decoded size is used either way; the context's values reach the log escaped."""
    with caplog.at_level(logging.WARNING, logger="sam2plus.prompts"):
        Prompt(points=((0.5, 0.5),), labels=(1,), declared_size=declared).check_image_size((1000, 500))
    messages = [record.getMessage() for record in caplog.records]
    assert bool(messages) == warned, messages
    if warned:
        shown = "x".join(repr(value) for value in declared)
        assert messages == [f"context says the image is {shown} but it decodes to 1000x500; using the decoded size"]


def test_a_forged_declared_size_is_logged_on_one_line(caplog):
    prompt = Prompt(points=((0.5, 0.5),), labels=(1,), declared_size=("1600\n[WARNING] forged", 500))
    with caplog.at_level(logging.WARNING, logger="sam2plus.prompts"):
        prompt.check_image_size((1000, 500))
    (message,) = [record.getMessage() for record in caplog.records]
    assert "\n" not in message and "'1600\\n[WARNING] forged'" in message


@pytest.mark.parametrize("context", [None, {}, {"result": []}, {"result": None}, {"result": {"x": 1}}, []])
def test_empty_context_is_an_error(context):
    err = _error(context)
    assert err.field == "context.result"
    assert "no prompt" in err.message


@pytest.mark.parametrize(
    "region, field, shown",
    [
        (_point(101, 50), "context.result[0].value.x", "101"),
        (_point(50, -1), "context.result[0].value.y", "-1"),
        (_box(-0.5, 10, 5, 5), "context.result[0].value.x", "-0.5"),
        (_box(10, 100.5, 5, 5), "context.result[0].value.y", "100.5"),
    ],
)
def test_points_outside_the_image_are_errors(region, field, shown):
    err = _error(_ctx(region))
    assert err.field == field
    assert "outside the image" in err.message and shown in err.message


@pytest.mark.parametrize(
    "w, h, field, shown",
    [
        (0, 10, "context.result[0].value.width", "0"),
        (10, 0, "context.result[0].value.height", "0"),
        (-5, 10, "context.result[0].value.width", "-5"),
    ],
)
def test_zero_size_box_is_an_error(w, h, field, shown):
    err = _error(_ctx(_box(10, 10, w, h)))
    assert err.field == field
    assert "> 0" in err.message and f"got {shown}" in err.message


def test_rotated_rectangle_is_an_error():
    err = _error(_ctx(_point(5, 5), _box(10, 10, 20, 20, rotation=15)))
    assert err.field == "context.result[1].value.rotation"
    assert "rotated" in err.message and "15" in err.message


def test_unknown_region_type_is_an_error():
    err = _error(_ctx(_point(5, 5), {"type": "polygonlabels", "value": {"points": [[1, 2]]}}))
    assert err.field == "context.result[1].type"
    assert '"polygonlabels"' in err.message


def test_only_negative_points_are_an_error():
    err = _error(_ctx(_point(10, 10, False), _point(20, 20, False)))
    assert err.field == "context.result"
    assert "negative" in err.message


@pytest.mark.parametrize(
    "region, field",
    [
        ("not a region", "context.result[0]"),
        ({"type": "keypointlabels"}, "context.result[0]"),
        ({"type": "keypointlabels", "value": {"x": "10", "y": 5}}, "context.result[0].value.x"),
        ({"type": "keypointlabels", "value": {"x": 10}}, "context.result[0].value.y"),
        ({"type": "keypointlabels", "value": {"x": True, "y": 5}}, "context.result[0].value.x"),
        ({"type": "keypointlabels", "value": {"x": float("nan"), "y": 5}}, "context.result[0].value.x"),
        ({"type": "rectanglelabels", "value": {"x": 1, "y": 1, "height": 5}}, "context.result[0].value.width"),
    ],
)
def test_malformed_regions_are_errors(region, field):
    assert _error(_ctx(region)).field == field


def test_rectangle_starting_on_the_far_edge_has_no_area_inside_the_image():
    context = {
        "result": [
            {"type": "rectanglelabels", "value": {"x": 100, "y": 50, "width": 5, "height": 5, "rectanglelabels": ["a"]}}
        ]
    }
    with pytest.raises(RequestError) as caught:
        parse_prompt(context)
    assert caught.value.field == "context.result[0].value" and "no area" in caught.value.message


def test_the_click_path_reads_the_context_only_through_parse_prompt():
    """Issue 20: each click's context is parsed once; every later stage gets the Prompt."""
    source = (Path(__file__).resolve().parents[2] / "sam2plus" / "pipeline.py").read_text()
    (run,) = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef) and node.name == "run"]
    reads = [node for node in ast.walk(run) if isinstance(node, ast.Name) and node.id == "context"]
    parses = [
        node
        for node in ast.walk(run)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "parse_prompt"
    ]
    assert len(parses) == 1 and len(reads) == 1 and parses[0].args[0] is reads[0]
