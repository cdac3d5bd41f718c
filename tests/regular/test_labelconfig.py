"""The output control tag for each return format, found in the label config."""

import gc
import tracemalloc

import pytest

from sam2plus.errors import RequestError
from sam2plus.labelconfig import CONTROLS, ControlCache, OutputControl, find_output_control

CONFIG = """
<View>
  <Image name="img" value="$picture" zoom="true"/>
  <KeyPointLabels name="kp" toName="img" smart="true"><Label value="Prompt"/></KeyPointLabels>
  <BrushLabels name="brush_l" toName="img"><Label value="Fish"/><Label value="Tooth"/></BrushLabels>
  <Brush name="brush" toName="img"/>
  <PolygonLabels name="poly_l" toName="img"><Label value="Shell"/></PolygonLabels>
  <Polygon name="poly" toName="img"/>
  <RectangleLabels name="rect_l" toName="img"><Label value="Box"/><Label value="Crate"/></RectangleLabels>
  <Rectangle name="rect" toName="img"/>
</View>
"""


@pytest.mark.parametrize(
    "return_type, name, labels",
    [
        ("BrushLabels", "brush_l", ("Fish", "Tooth")),
        ("Brush", "brush", ()),
        ("PolygonLabels", "poly_l", ("Shell",)),
        ("Polygon", "poly", ()),
        ("RectangleLabels", "rect_l", ("Box", "Crate")),
        ("Rectangle", "rect", ()),
    ],
)
def test_finds_the_output_tag_for_each_return_type(return_type, name, labels):
    control = find_output_control(CONFIG, return_type)
    assert control == OutputControl(return_type, name, "img", "picture", labels)


@pytest.mark.parametrize("config_tag", ["polygonlabels", "POLYGONLABELS", "PolygonLabels"])
def test_tag_match_is_case_insensitive(config_tag):
    config = (
        f'<View><Image name="i" value="$image"/>'
        f'<{config_tag} name="out" toName="i"><Label value="A"/></{config_tag}></View>'
    )
    control = find_output_control(config, "PolygonLabels")
    assert (control.from_name, control.to_name, control.image_key, control.labels) == ("out", "i", "image", ("A",))


def test_first_matching_tag_wins_and_picks_its_image():
    config = """<View>
      <Image name="a" value="$first"/><Image name="b" value="$second"/>
      <Brush name="one" toName="b"/><Brush name="two" toName="a"/>
    </View>"""
    control = find_output_control(config, "Brush")
    assert (control.from_name, control.to_name, control.image_key) == ("one", "b", "second")


def test_labels_tag_does_not_match_the_bare_tag():
    config = '<View><Image name="i" value="$image"/><BrushLabels name="bl" toName="i"/></View>'
    with pytest.raises(RequestError) as info:
        find_output_control(config, "Brush")
    assert info.value.field == "label_config"
    assert "<Brush>" in info.value.message


def test_missing_tag_is_an_error():
    with pytest.raises(RequestError) as info:
        find_output_control(
            '<View><Image name="i" value="$image"/><Brush name="b" toName="i"/></View>',
            "Polygon",
            field="params.label_config",
        )
    assert info.value.field == "params.label_config"
    assert info.value.status == 400
    assert "<Polygon>" in info.value.message


def test_invalid_xml_is_an_error():
    with pytest.raises(RequestError) as info:
        find_output_control('<View><Image name="i" value="$image"></View>', "Brush")
    assert info.value.field == "label_config"
    assert "not valid XML" in info.value.message


@pytest.mark.parametrize("config", ["", "   \n", None])
def test_empty_config_is_an_error(config):
    with pytest.raises(RequestError) as info:
        find_output_control(config, "BrushLabels")
    assert info.value.field == "label_config"
    assert "missing" in info.value.message


@pytest.mark.parametrize("tag", ['<Brush name="b"/>', '<Brush toName="i"/>', '<Brush name="b" toName="nope"/>'])
def test_tag_must_name_an_image(tag):
    with pytest.raises(RequestError) as info:
        find_output_control(f'<View><Image name="i" value="$image"/>{tag}</View>', "Brush")
    assert info.value.field == "label_config"
    assert "toName" in info.value.message


def test_plain_tag_is_preferred_over_the_smart_prompt_tag():
    config = """<View><Image name="i" value="$image"/>
      <RectangleLabels name="prompt" toName="i" smart="true"><Label value="P"/></RectangleLabels>
      <RectangleLabels name="output" toName="i"><Label value="O"/></RectangleLabels>
    </View>"""
    control = find_output_control(config, "RectangleLabels")
    assert (control.from_name, control.labels) == ("output", ("O",))


def test_smart_tag_is_used_when_it_is_the_only_one():
    config = '<View><Image name="i" value="$image"/><Rectangle name="r" toName="i" smart="true"/></View>'
    assert find_output_control(config, "Rectangle").from_name == "r"


# -- the cache (issue 11 finding 5) ----------------------------------------------------------


def _big_config(index: int, megabytes: int) -> str:
    padding = f"<!-- {index} {'x' * (megabytes << 20)} -->"
    return f'<View>{padding}<Image name="i" value="$image"/><Brush name="b{index}" toName="i"/></View>'


def test_the_cache_keeps_no_label_config_in_memory():
    """Eight distinct 50 MB configs added 407 MB to a worker: the cache held every config string.
    Here eight 4 MB configs leave less than 1 MB behind once the caller drops them."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(8):
            config = _big_config(index, 4)
            assert find_output_control(config, "Brush").from_name == f"b{index}"
            del config
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert retained < 1 << 20, f"{retained / 2**20:.1f} MB retained"


def test_a_cached_control_is_found_by_the_configs_digest():
    config = _big_config(99, 0)
    first = find_output_control(config, "Brush")
    assert find_output_control("".join(config), "Brush") is first, "an equal string, another object: a hit"
    assert find_output_control(config, "brush") is not first, "the return type is part of the key"


def test_the_cache_is_bounded_in_bytes_least_recently_used_first():
    cache = ControlCache(max_bytes=20_000)
    controls = [
        OutputControl("BrushLabels", "b", "i", "image", tuple(f"label {n} {i}" for n in range(20))) for i in range(40)
    ]
    cache.put((b"first", "BrushLabels"), controls[0])
    for i, control in enumerate(controls[1:], 1):
        cache.get((b"first", "BrushLabels"))  # kept warm
        cache.put((bytes([i]), "BrushLabels"), control)
        assert cache.bytes <= cache.max_bytes
    assert 1 < len(cache) < 40 and cache.get((b"first", "BrushLabels")) is controls[0]
    assert cache.get((bytes([1]), "BrushLabels")) is None, "the oldest unused entry went first"


def test_a_control_larger_than_the_whole_cache_is_answered_but_not_kept():
    labels = "".join(f'<Label value="{"L" * 1000}{n}"/>' for n in range(2000))  # about 2 MB of labels
    config = f'<View><Image name="i" value="$image"/><BrushLabels name="b" toName="i">{labels}</BrushLabels></View>'
    entries = len(CONTROLS)
    assert len(find_output_control(config, "BrushLabels").labels) == 2000
    assert len(CONTROLS) == entries and CONTROLS.bytes <= CONTROLS.max_bytes
