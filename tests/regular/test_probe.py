"""sam2plus-probe: prompt syntax, options, input checks, how the image travels, requests and outputs,
then the real CLI against backends.

The fast tests run the probe around the `ColorRegionSegmenter` test double, in-process (as
--local does) or over real HTTP against the backend's own app served on loopback with a
CACHE_DIR of its own that the probe never sees (remote mode: the image travels as a data: URL
and the intermediates come back over GET /artifacts). The slow ones start gunicorn with
untrained hiera-t on CPU and run the installed `sam2plus-probe` command: they check the
protocol, the files and the messages, never the quality of a mask. Where they check returned
regions they also send further prompts and require that some prompt got regions
(tests/support/regions.py): a backend that answers nothing fails.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from label_studio_sdk.converter.brush import mask2rle
from PIL import Image

from model import SAM2Plus
from probe import cli
from probe.errors import FAILED, USAGE, ProbeError
from probe.options import EXAMPLE_IMAGE, EXAMPLE_PROMPT, OUTPUT_DIRS, load_options, read_config, resolve_options
from probe.outputs import locate_artifacts, pretty_json
from probe.prompts import Box, Point, parse_prompt, to_context
from probe.render import SourceImage, region_shapes
from probe.request import build_request, label_config
from probe.runner import prepare, run_probe
from probe.staging import data_url, stage_image
from probe.transport import LocalTransport
from sam2plus.config import ServerConfig
from sam2plus.fetch import ImageFetcher
from sam2plus.images import decode_frame, read_info
from sam2plus.labelconfig import find_output_control
from sam2plus.params import RETURN_TYPES, parse_extra_params
from sam2plus.prompts import parse_prompt as backend_parse_prompt
from sam2plus.segmenter import SegmentOutput
from sam2plus.server import create_app
from tests.support.capture import capture_backend
from tests.support.geometry_segmenter import ColorRegionSegmenter
from tests.support.regions import require_some
from tests.support.scenes import DiscScene, bitmask_mask, box_iou, brush_mask, iou, polygon_mask, rectangle_box
from tests.support.servers import REPO, TEST_MODEL, gunicorn_backend, wsgi_server

PROBE = str(Path(sys.executable).with_name("sam2plus-probe"))
EXAMPLES = REPO / "examples"
SCENE = DiscScene(1600, 1200, 700, 500, 120)
SIZE = (1000, 500)
ALL_FOLDERS = {key: "\0default" for key in OUTPUT_DIRS}  # every folder flag given without a value


# --- prompt syntax ---------------------------------------------------------------------------


def test_integer_box_is_pixels_top_left_and_size():
    (box,) = parse_prompt({"type": "RectangleLabel", "label": "tooth", "geometry": [100, 50, 200, 100]}, SIZE)
    assert box == Box(100, 50, 300, 150, "tooth")
    region = to_context([box], SIZE)["result"][0]
    assert region["type"] == "rectanglelabels" and region["value"]["rectanglelabels"] == ["tooth"]
    assert [region["value"][k] for k in ("x", "y", "width", "height")] == [10, 10, 20, 20]
    assert (region["original_width"], region["original_height"]) == SIZE


def test_decimal_box_is_relative_centre_and_size():
    (box,) = parse_prompt({"type": "Rectangle", "geometry": [0.5, 0.5, 0.2, 0.4]}, SIZE)
    assert box == Box(400, 150, 600, 350, None)
    region = to_context([box], SIZE)["result"][0]
    assert region["type"] == "rectangle" and "rectanglelabels" not in region["value"]


def test_keypoint_geometry_in_pixels_and_relative_is_the_same_point():
    pixels = parse_prompt({"type": "KeyPointLabel", "geometry": [250, 100]}, SIZE)
    relative = parse_prompt({"type": "keypointlabel", "geometry": [0.25, 0.2]}, SIZE)
    assert pixels == relative == [Point(250, 100, True, "probe")]


def test_several_keypoints_carry_their_positive_flags():
    items = parse_prompt({"type": "KeyPoint", "points": [[10, 20], [30, 40, False], [0.5, 0.5, True]]}, SIZE)
    assert items == [Point(10, 20, True), Point(30, 40, False), Point(500, 250, True)]
    regions = to_context(items, SIZE)["result"]
    assert [r["is_positive"] for r in regions] == [True, False, True]
    assert all(r["type"] == "keypoint" for r in regions)


def test_a_list_mixes_a_rectangle_and_keypoints_and_json_text_is_read():
    text = json.dumps(
        [
            {"type": "RectangleLabel", "geometry": [0, 0, 100, 100]},
            {"type": "KeyPointLabel", "points": [[50, 50], [90, 90, False]]},
        ]
    )
    items = parse_prompt(text, SIZE)
    assert [type(item) for item in items] == [Box, Point, Point]


def test_the_backend_reads_the_context_as_the_probe_meant_it():
    items = parse_prompt(
        [
            {"type": "RectangleLabel", "label": "a", "geometry": [100, 50, 200, 100]},
            {"type": "KeyPointLabel", "label": "a", "points": [[500, 250], [0.9, 0.9, False]]},
        ],
        SIZE,
    )
    prompt = backend_parse_prompt(to_context(items, SIZE))
    assert prompt.box == pytest.approx((0.1, 0.1, 0.3, 0.3))
    assert np.allclose(prompt.points, [(0.5, 0.5), (0.9, 0.9)]) and prompt.labels == (1, 0)
    assert prompt.label == "a"


@pytest.mark.parametrize(
    "prompt, message",
    [
        (
            {"type": "Rectangle", "geometry": [10, 10, 0.5, 0.5]},
            "prompt.geometry: mixes integers (pixels) and decimals",
        ),
        ({"type": "Rectangle", "geometry": [10, 10, 20]}, "prompt.geometry: must be [x, y, w, h]"),
        ({"type": "Rectangle", "geometry": [10, 10, True, 20]}, "prompt.geometry: must be [x, y, w, h] of numbers"),
        ({"type": "Rectangle", "geometry": [900, 10, 200, 20]}, "reaches outside the 1000x500 image"),
        ({"type": "Rectangle", "geometry": [0.95, 0.5, 0.2, 0.2]}, "reaches outside the image (0..1)"),
        ({"type": "Rectangle", "geometry": [10, 10, 0, 20]}, "width and height must be > 0"),
        ({"type": "Polygon", "geometry": [1, 2]}, "prompt.type: must be RectangleLabel, Rectangle, KeyPointLabel"),
        ({"type": "BrushLabels", "geometry": [1, 2]}, "prompt.type"),
        ({"geometry": [1, 2]}, "prompt.type"),
        ({"type": "KeyPoint", "geometry": [1.5, 0.5]}, "prompt.geometry: the point [1.5, 0.5] (relative) lies outside"),
        ({"type": "KeyPoint", "geometry": [1001, 5]}, "lies outside the 1000x500 image"),
        ({"type": "KeyPoint", "points": [[1, 2, "no"]]}, "prompt.points[0][2]: the flag must be true"),
        ({"type": "KeyPoint", "points": [[1, 2, False]]}, "only negative keypoints"),
        ({"type": "KeyPoint", "points": []}, "prompt.points: must be a non-empty list"),
        ({"type": "KeyPoint", "geometry": [1, 2], "points": [[1, 2]]}, "either geometry [x, y] or points"),
        ({"type": "Rectangle", "points": [[1, 2]]}, "prompt.points: only keypoints have points"),
        (
            {"type": "Rectangle", "label": "x", "geometry": [1, 2, 3, 4]},
            "prompt.label: a bare Rectangle carries no label",
        ),
        ({"type": "RectangleLabel", "label": "", "geometry": [1, 2, 3, 4]}, "prompt.label: must be a non-empty string"),
        ({"type": "Rectangle", "geometry": [1, 2, 3, 4], "box": 1}, "prompt.box: unknown key"),
        (
            [{"type": "Rectangle", "geometry": [1, 2, 3, 4]}, {"type": "Rectangle", "geometry": [5, 6, 7, 8]}],
            "at most one rectangle",
        ),
        ([{"type": "Rectangle", "geometry": [1, 2, 3, 4]}, "x"], "prompt[1]: must be an object"),
        ([], "must be an object or a non-empty list"),
        ('{"type": "Rectangle",', "prompt: not valid JSON"),
    ],
)
def test_bad_prompts_are_refused_with_the_offending_part(prompt, message):
    with pytest.raises(ProbeError) as failure:
        parse_prompt(prompt, SIZE)
    assert message in str(failure.value) and failure.value.exit_code == USAGE


# --- requests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra_params, expected",
    [
        (None, "BrushLabels"),
        ({}, "BrushLabels"),
        ({"return_format": {"type": "polygonlabels"}}, "PolygonLabels"),
        ({"return-format": {"type": "Rectangle"}}, "Rectangle"),
    ],
)
def test_the_output_tag_follows_the_validated_return_format(extra_params, expected):
    items = parse_prompt(EXAMPLE_PROMPT, (3000, 2000))
    request = build_request("p", "x.jpg", items, (3000, 2000), parse_extra_params(extra_params), extra_params, False)
    assert find_output_control(request.label_config, expected).tag == expected
    assert request.setup["extra_params"] == ({} if extra_params is None else extra_params), "sent as written"


@pytest.mark.parametrize("output", RETURN_TYPES)
def test_the_label_config_offers_the_backend_its_output_tag(output):
    items = parse_prompt(
        [
            {"type": "RectangleLabel", "label": "tooth", "geometry": [1, 2, 3, 4]},
            {"type": "KeyPoint", "geometry": [5, 5]},
        ],
        SIZE,
    )
    config = label_config(items, output)
    control = find_output_control(config, output)
    assert (control.from_name, control.to_name, control.image_key) == ("output", "image", "image")
    assert control.labels == (("tooth",) if output.endswith("Labels") else ())
    assert 'smart="true"' in config and "<KeyPoint " in config and "<RectangleLabels " in config


def test_setup_sends_empty_extra_params_for_stock_and_artifacts_are_asked_only_when_wanted():
    items = parse_prompt(EXAMPLE_PROMPT, (3000, 2000))
    stock = parse_extra_params(None)
    plain = build_request("p1", "probe/x.jpg", items, (3000, 2000), stock, None, artifacts=False)
    assert plain.setup["extra_params"] == {} and plain.setup["project"] == plain.predict["project"] == "p1"
    assert "artifacts" not in plain.predict and plain.predict["tasks"][0]["data"] == {"image": "probe/x.jpg"}
    assert plain.predict["params"]["context"]["result"][0]["type"] == "rectanglelabels"
    asking = build_request("p1", "probe/x.jpg", items, (3000, 2000), stock, {"postprocess": {}}, artifacts=True)
    assert asking.predict["artifacts"] is True and asking.setup["extra_params"] == {"postprocess": {}}


# --- options ---------------------------------------------------------------------------------


def test_no_arguments_mean_the_bundled_example_image_and_its_prompt():
    options = load_options([])
    assert options.image == EXAMPLE_IMAGE and EXAMPLE_IMAGE.is_file()
    assert options.prompt == EXAMPLE_PROMPT and options.url == "http://localhost:22201"
    assert options.cache_dir is None, "no folder is shared unless --cache-dir says so"
    assert options.extra_params is None
    assert all(getattr(options, key) is None for key in OUTPUT_DIRS), "artifact output is opt-in"
    prepared = prepare(options)
    (box,) = prepared.items
    assert isinstance(box, Box) and box.label == "probe"


def test_the_bundled_image_is_small_and_3000_by_2000():
    assert SourceImage.open(EXAMPLE_IMAGE).size == (3000, 2000) and EXAMPLE_IMAGE.stat().st_size < 500_000


def test_another_image_needs_its_own_prompt(tmp_path):
    SCENE.write(tmp_path / "scene.jpg")
    with pytest.raises(ProbeError, match="prompt: missing") as failure:
        prepare(load_options([str(tmp_path / "scene.jpg")]))
    assert failure.value.exit_code == USAGE


def test_folder_flags_without_a_value_use_the_defaults_with_the_name_expanded():
    options = load_options(
        ["--name", "run7", "--request-record", "--intermediates", "-o", "--output-imgs=imgs/${name}"]
    )
    assert options.request_record == Path("probe_out/03-requests/run7")
    assert options.intermediates == Path("probe_out/04-intermediates/run7")
    assert options.output == Path("probe_out/05-outputs/run7") and options.output_imgs == Path("imgs/run7")
    assert options.project == "sam2plus-probe-run7"
    joined = load_options(["-o", "mine/${name}", "--output-imgs", "--name", "run8"])
    assert joined.output == joined.output_imgs == Path("mine/run8"), "images join a chosen output folder"


def test_a_config_holds_the_options_relative_to_itself_and_flags_override_it(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    (tmp_path / "params.json").write_text('{"return_format": {"type": "Polygon"}}')
    config = folder / "teeth.yaml"
    config.write_text(
        "image: ../img.jpg\nextra-params: ../params.json\nprompt: {type: KeyPoint, geometry: [1, 2]}\n"
        "url: http://backend:9090\nrequest_record: ../out/${name}\noutput: true\nintermediates: false\n"
        "probe-fullframe-artifact-resize: 0.25\nproject: '12'\ncache-dir: ../cache\n"
    )
    options = load_options(["--config", str(config), "--url", "http://other:1"])
    assert options.name == "teeth", "the name defaults to the config file's name"
    assert options.image == tmp_path / "img.jpg" and options.cache_dir == tmp_path / "cache"
    assert options.extra_params == {"return_format": {"type": "Polygon"}}
    assert options.extra_params_source == str(tmp_path / "params.json")
    assert options.url == "http://other:1" and options.project == "12" and options.fullframe_scale == 0.25
    assert options.request_record == tmp_path / "out" / "teeth"
    assert options.output == Path("probe_out/05-outputs/teeth") and options.intermediates is None
    assert options.prompt == {"type": "KeyPoint", "geometry": [1, 2]}
    flagged = load_options(
        [
            "--config",
            str(config),
            "--name",
            "x",
            "--extra-params",
            str(tmp_path / "params.json"),
            "--prompt",
            '{"type": "Rectangle", "geometry": [1, 2, 3, 4]}',
        ]
    )
    assert flagged.request_record == tmp_path / "out" / "x" and flagged.prompt.startswith('{"type": "Rectangle"')


@pytest.mark.parametrize(
    "text, message",
    [
        ("imag: x.jpg\n", "unknown option 'imag'"),
        ("cache_dir: a\ncache-dir: b\n", "option 'cache_dir' is given twice"),
        ("- a\n", "must hold a mapping"),
        ("output: 3\n", "output: must be a folder, true"),
        ("probe_fullframe_artifact_resize: 2\n", "must be a scale > 0 and <= 1"),
        ("extra_params: missing.json\n", "extra-params: cannot read"),
        ("prompt: [unclosed\n", "is not valid YAML"),
        ("cache_dir: 5\n", "cache-dir: must be a folder"),
    ],
)
def test_bad_configs_are_refused(tmp_path, text, message):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(ProbeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_options(["--config", str(config)])


def test_bad_extra_params_json_is_refused_before_sending(tmp_path):
    (tmp_path / "bad.json").write_text('{"subpatching": ')
    with pytest.raises(ProbeError, match="is not valid JSON"):
        load_options(["--extra-params", str(tmp_path / "bad.json")])


def test_every_bundled_config_reads_and_its_prompt_fits_the_example(tmp_path):
    configs = sorted((EXAMPLES / "00-probe_configs").glob("*.yaml"))
    assert [c.stem for c in configs] == ["ichthyo-keypoint-rle", "ichthyo-polygon", "ichthyo-rle"]
    for config in configs:
        options = resolve_options({}, read_config(config), config)
        assert options.image == EXAMPLE_IMAGE
        prepared = prepare(options)  # the backend's own validation of extra_params included
        assert prepared.items and not prepared.params.is_stock
        for key in OUTPUT_DIRS:
            assert getattr(options, key).parent.parent == EXAMPLES, key
            assert getattr(options, key).name == config.stem


def test_the_bundled_extra_params_are_the_specifications_examples():
    polygon = json.loads((EXAMPLES / "02-extra_params" / "basic-polygon.json").read_text())
    assert polygon == {
        "fullframe_resize": 0.5,
        "subpatching": {"patch_size": 1024},
        "postprocess": {"mask_size_threshold": 1, "fill_holes": True, "dilate": 0},
        "return_format": {"type": "PolygonLabels", "epsilon": 0.003, "max_points": 100},
    }
    rle = json.loads((EXAMPLES / "02-extra_params" / "basic-rle.json").read_text())
    assert rle["subpatching"] == {"patch_size": 1024} and rle["return_format"]["type"] == "BrushLabels"
    assert parse_extra_params(rle).subpatching and parse_extra_params(polygon).return_format.kind == "polygon"


# --- every input is checked before any work ---------------------------------------------------


def _truncated_jpeg(folder: Path) -> Path:
    whole = SCENE.write(folder / "whole.jpg").read_bytes()
    path = folder / "truncated.jpg"
    path.write_bytes(whole[: len(whole) // 3])
    return path


def _bad_inputs(folder: Path) -> dict[str, tuple[list[str], str]]:
    """Each bad input: the probe's arguments and the start of its message (exit code 2 each)."""
    SCENE.write(folder / "scene.jpg")
    (folder / "params.json").write_text(json.dumps({"subpatching": {"patch_size": 1024, "mode": "tiled"}}))
    (folder / "not-an-image.jpg").write_text("hello")
    box = json.dumps({"type": "Rectangle", "geometry": [10, 10, 50, 50]})
    return {
        "missing image": (
            [str(folder / "missing.jpg"), "--prompt", box],
            f"image: {folder / 'missing.jpg'} does not exist",
        ),
        "missing image, no prompt": ([str(folder / "missing.jpg")], "image: "),
        "not an image": ([str(folder / "not-an-image.jpg"), "--prompt", box], "image: "),
        "truncated image": ([str(_truncated_jpeg(folder)), "--prompt", box], "image: "),
        "prompt outside the image": (
            [str(folder / "scene.jpg"), "--prompt", json.dumps({"type": "KeyPoint", "geometry": [5000, 10]})],
            "prompt.geometry: ",
        ),
        "no prompt for another image": ([str(folder / "scene.jpg")], "prompt: missing"),
        "bad extra_params": (
            [str(folder / "scene.jpg"), "--prompt", box, "--extra-params", str(folder / "params.json")],
            f"extra-params: {folder / 'params.json'}: extra_params.subpatching.mode: ",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing image",
        "missing image, no prompt",
        "not an image",
        "truncated image",
        "prompt outside the image",
        "no prompt for another image",
        "bad extra_params",
    ],
)
def test_bad_inputs_stop_the_probe_before_a_model_is_built_or_a_backend_called(tmp_path, capsys, monkeypatch, case):
    args, message = _bad_inputs(tmp_path)[case]

    def no_model(*_):
        raise AssertionError("the model was built before every input was checked")

    monkeypatch.setattr(LocalTransport, "from_env", no_model)
    assert cli.main([*args, "--local", "--cache-dir", str(tmp_path / "cache")]) == USAGE
    assert capsys.readouterr().err.startswith(f"sam2plus-probe: {message}")
    with capture_backend() as (url, seen):
        assert cli.main([*args, "--url", url]) == USAGE
    assert seen == [], "nothing was sent"
    assert capsys.readouterr().err.startswith(f"sam2plus-probe: {message}")
    assert not (tmp_path / "cache").exists(), "nothing was written"


def test_the_installed_command_reports_bad_inputs_and_an_unreachable_backend_without_a_traceback(tmp_path):
    cases = _bad_inputs(tmp_path)
    for case in ("missing image", "truncated image", "prompt outside the image", "bad extra_params"):
        args, message = cases[case]
        done = probe(*args, "--url", "http://127.0.0.1:9")
        assert (done.returncode, done.stdout) == (USAGE, ""), case
        assert done.stderr.startswith(f"sam2plus-probe: {message}") and "Traceback" not in done.stderr, done.stderr
    done = probe(EXAMPLE_IMAGE, "--url", "http://127.0.0.1:9", "--timeout", "5")
    assert (done.returncode, done.stdout) == (FAILED, "") and "Traceback" not in done.stderr
    assert "cannot reach the backend at http://127.0.0.1:9" in done.stderr


# --- how the image travels, artifacts, pictures ----------------------------------------------


def test_with_a_shared_folder_the_image_is_copied_under_a_name_the_backend_resolves(tmp_path):
    source = SCENE.write(tmp_path / "my scene.jpg")
    cache = tmp_path / "cache"
    name = stage_image(source, cache)
    assert not Path(name).is_absolute() and name.startswith("probe/") and " " not in name
    assert (cache / name).read_bytes() == source.read_bytes()
    assert ImageFetcher(cache).fetch(name, "image").path == (cache / name).resolve()
    assert stage_image(source, cache) == name, "the same content gets the same name"
    assert [p.name for p in (cache / "probe").iterdir()] == [Path(name).name], "no partial file is left"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP"])
def test_without_one_the_image_travels_as_a_data_url_the_backend_stores_by_content(tmp_path, fmt):
    path = tmp_path / f"image.{fmt.lower()}"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(path, fmt)
    value = data_url(path, read_info(path, 10**9, "image"))
    assert value.startswith(f"data:{Image.MIME[fmt]};base64,")
    assert base64.b64decode(value.partition(",")[2]) == path.read_bytes()
    local = ImageFetcher(tmp_path / "backend-cache").fetch(value, "tasks[0].data.image")
    assert local.path.read_bytes() == path.read_bytes()
    assert local.path.name.startswith(hashlib.sha1(path.read_bytes()).hexdigest())


def test_the_size_sent_is_the_exif_oriented_one(tmp_path):
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: the browser shows it 200 wide, 300 high
    Image.new("RGB", (300, 200), (10, 20, 30)).save(path, exif=exif)
    source = SourceImage.open(path)
    assert source.size == (200, 300) and source.preview(0.5).shape == (150, 100, 3)


def test_a_containers_artifact_folder_is_found_under_the_local_cache_dir(tmp_path):
    (tmp_path / "artifacts" / "20250101-1200-abc").mkdir(parents=True)
    folder = tmp_path / "artifacts" / "20250101-1200-abc"
    assert locate_artifacts("artifacts/20250101-1200-abc", tmp_path) == folder
    assert locate_artifacts("/cache/artifacts/20250101-1200-abc", tmp_path) == folder
    with pytest.raises(ProbeError, match="--cache-dir must be the folder mounted"):  # only ever inside --cache-dir
        locate_artifacts(str(tmp_path / "artifacts" / "20250101-1200-abc"), tmp_path / "elsewhere")
    with pytest.raises(ProbeError, match="--cache-dir must be the folder mounted"):
        locate_artifacts("/cache/artifacts/other", tmp_path)


def test_regions_become_shapes_in_pixels_without_a_full_size_mask():
    width, height = 400, 300
    mask = np.zeros((height, width), np.uint8)
    mask[100:150, 200:260] = 255
    brush = {
        "original_width": width,
        "original_height": height,
        "type": "brushlabels",
        "value": {"format": "rle", "rle": mask2rle(mask), "brushlabels": ["tooth"]},
    }
    polygon = {
        "original_width": width,
        "original_height": height,
        "type": "polygon",
        "value": {"points": [[10, 10], [20, 10], [20, 30]]},
    }
    rectangle = {
        "original_width": width,
        "original_height": height,
        "type": "rectangle",
        "value": {"x": 50, "y": 50, "width": 25, "height": 10},
    }
    empty = {**brush, "value": {"format": "rle", "rle": mask2rle(np.zeros_like(mask))}}
    shapes = region_shapes([brush, polygon, rectangle, empty], (width, height))
    assert [s.kind for s in shapes] == ["mask", "polygon", "box"], "an empty mask draws nothing"
    assert shapes[0].bbox == (200, 100, 260, 150) and shapes[0].mask.shape == (50, 60) and shapes[0].mask.all()
    assert shapes[0].label == "tooth"
    assert shapes[1].bbox == (40, 30, 80, 90) and shapes[2].bbox == (200, 150, 300, 180)


def test_prediction_json_is_indented_and_loads_back():
    value = {"results": [{"result": [{"value": {"rle": list(range(50)), "points": [[1.5, 2], [3, 4]]}}]}], "a": None}
    text = pretty_json(value)
    assert json.loads(text) == value and text.count("\n") < 20


def _sixteen_bit_png(path: Path) -> Path:
    """A 16-bit gray PNG using its whole range (Pillow's own convert("RGB") clips it to white)."""
    ramp = np.linspace(0, 65535, 640, dtype=np.uint32)
    values = (ramp[None, :] + np.linspace(0, 20000, 480, dtype=np.uint32)[:, None]) % 65536
    Image.fromarray(values.astype(np.uint16)).save(path)
    return path


def _transparent_png(path: Path) -> Path:
    """An RGBA PNG: a colour field whose alpha falls from opaque to fully transparent."""
    rgba = np.zeros((480, 640, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 60, 30
    rgba[..., 3] = np.linspace(255, 0, 640, dtype=np.uint8)[None, :]
    Image.fromarray(rgba, "RGBA").save(path)
    return path


KEYPOINT = {"type": "KeyPoint", "geometry": [700, 500]}  # on the scene's disc


def probe_cli(image: Path, url: str, *flags: str, prompt=KEYPOINT) -> int:
    """`sam2plus-probe IMAGE --prompt PROMPT --url URL FLAGS...` in this process: its exit code."""
    return cli.main([str(image), "--prompt", json.dumps(prompt), "--url", url, *flags])


@pytest.mark.parametrize("write", [_sixteen_bit_png, _transparent_png], ids=["16-bit", "rgba"])
def test_the_probes_picture_of_an_image_is_the_backends_artifact_of_it(tmp_path, write):
    """input.jpg (the probe's request record) and frame.prompt.jpg (the backend's artifact of the
    same click) come from one decoder and one drawing: byte for byte the same file."""
    image = write(tmp_path / "image.png")
    prompt = [
        {"type": "Rectangle", "geometry": [100, 80, 200, 150]},
        {"type": "KeyPoint", "points": [[200, 150], [400, 300, False]]},
    ]
    with remote_backend(tmp_path / "backend") as (url, _):
        code = probe_cli(
            image, url, f"--request-record={tmp_path}/rec", f"--intermediates={tmp_path}/mid", prompt=prompt
        )
    assert code == 0
    probes = (tmp_path / "rec" / "input.jpg").read_bytes()
    assert probes == (tmp_path / "mid" / "frame.prompt.jpg").read_bytes()
    decoded = decode_frame(image, read_info(image, 10**9, "image"), (640, 480), "image")
    assert not np.array_equal(np.asarray(Image.open(image).convert("RGB")), decoded), (
        "Pillow's plain conversion (the probe's old one) differs from the backend's"
    )


# --- whole runs: in this process, and over HTTP against a backend that shares no folder -----


class EmptySegmenter(ColorRegionSegmenter):
    """Answers every prompt with an empty mask (what untrained weights may do)."""

    def predict(self, patch, key, prompt):
        return SegmentOutput(np.full((256, 256), -10.0, np.float32), 0.0, True)


def backend_config(folder: Path, **settings) -> ServerConfig:
    return ServerConfig(
        cache_dir=str(folder / "cache"), model_dir=str(folder / "models"), artifacts="request", **settings
    )


def local_transport(tmp_path, segmenter=None) -> LocalTransport:
    return LocalTransport(SAM2Plus(backend_config(tmp_path), segmenter=segmenter or ColorRegionSegmenter()))


@contextlib.contextmanager
def remote_backend(folder: Path, user: str | None = None, password: str | None = None):
    """The backend's own app around the geometry test double, served over HTTP on loopback with a
    CACHE_DIR of its own under `folder`; yields (url, backend cache). `user`/`password` turn basic auth on."""
    config = backend_config(folder, basic_auth_user=user, basic_auth_pass=password)
    with wsgi_server(create_app(SAM2Plus(config, segmenter=ColorRegionSegmenter()))) as url:
        yield url, folder / "cache"


def scene_options(tmp_path, extra_params=None, prompt=None, scale=None, **folders):
    image = SCENE.write(tmp_path / "scene.jpg")
    x0, y0, x1, y1 = (round(v) for v in SCENE.box())
    args = {
        "image": str(image),
        "name": "disc",
        "prompt": prompt or {"type": "RectangleLabel", "label": "disc", "geometry": [x0, y0, x1 - x0, y1 - y0]},
        "probe_fullframe_artifact_resize": scale,
        **{key: str(tmp_path / value) for key, value in folders.items()},
    }
    return resolve_options(args, {"extra_params": extra_params} if extra_params is not None else {})


def test_a_local_run_writes_every_folder(tmp_path):
    folders = {
        "request_record": "rec/${name}",
        "intermediates": "mid/${name}",
        "output": "out/${name}",
        "output_imgs": "out/${name}",
    }
    options = scene_options(tmp_path, {"subpatching": {"patch_size": 512}}, **folders)
    seen = []
    run = run_probe(options, local_transport(tmp_path), tmp_path / "cache", on_prediction=seen.append)
    assert seen == [run.response] and run.sent.shared and run.sent.value.startswith("probe/")
    (region,) = run.response["results"][0]["result"]
    assert region["type"] == "brushlabels"
    found = brush_mask(region)
    x0, y0, x1, y1 = (round(v) for v in SCENE.box())
    assert found[y0:y1, x0:x1].sum() > 0.9 * found.sum() > 0, "the prompt reached the disc"

    record = tmp_path / "rec" / "disc"
    assert sorted(p.name for p in record.iterdir()) == ["input.jpg", "request.json"]
    sent = json.loads((record / "request.json").read_text())
    assert sent["setup"]["extra_params"] == {"subpatching": {"patch_size": 512}} and sent["predict"]["artifacts"]
    assert sent["sent_as"] == run.sent.value == sent["predict"]["tasks"][0]["data"]["image"]
    assert Image.open(record / "input.jpg").size == (SCENE.width, SCENE.height), "fits 2048 px: kept whole"

    out = tmp_path / "out" / "disc"
    assert json.loads((out / "prediction.json").read_text()) == run.response
    assert sorted(p.name for p in out.glob("*.jpg")) == ["crop_00.jpg", "fullframe_prediction.jpg"]
    assert max(Image.open(out / "crop_00.jpg").size) < SCENE.width / 2, "a crop is tight around the region"

    backend_folder = tmp_path / "cache" / run.response["artifacts"]
    copied = tmp_path / "mid" / "disc"
    assert backend_folder.parent == tmp_path / "cache" / "artifacts"
    assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in backend_folder.iterdir())
    assert {"patch.jpg", "patch.prompt.jpg", "mask.patch.png"} <= {p.name for p in copied.iterdir()}
    assert (copied / "patch.jpg").read_bytes() == (backend_folder / "patch.jpg").read_bytes()


def test_a_polygon_run_with_keypoints_and_a_downscaled_frame(tmp_path):
    prompt = {
        "type": "KeyPointLabel",
        "label": "disc",
        "points": [[SCENE.cx / SCENE.width, SCENE.cy / SCENE.height], [50, 50, False]],
    }
    options = scene_options(tmp_path, {"return_format": {"type": "PolygonLabels"}}, prompt, 0.25, output_imgs="imgs")
    run = run_probe(options, local_transport(tmp_path), tmp_path / "cache")
    (region,) = run.response["results"][0]["result"]
    points = np.array(region["value"]["points"]) / 100 * (SCENE.width, SCENE.height)
    assert np.hypot(*(points.mean(axis=0) - (SCENE.cx, SCENE.cy))) < 10, "relative keypoints hit the disc"
    assert Image.open(tmp_path / "imgs" / "fullframe_prediction.jpg").size == (400, 300)
    assert (tmp_path / "imgs" / "crop_00.jpg").is_file()
    assert "output" not in run.written and not (tmp_path / "imgs" / "prediction.json").exists()


def test_without_a_shared_folder_an_in_process_run_gets_the_artifacts_through_the_app(tmp_path):
    run = run_probe(scene_options(tmp_path, intermediates="mid"), local_transport(tmp_path))
    assert not run.sent.shared and run.sent.value.startswith("data:image/jpeg;base64,")
    backend_folder = tmp_path / "cache" / run.response["artifacts"]
    copied = sorted((tmp_path / "mid").iterdir())
    assert [p.name for p in copied] == sorted(p.name for p in backend_folder.iterdir())
    assert all(p.read_bytes() == (backend_folder / p.name).read_bytes() for p in copied)


def test_an_empty_mask_still_succeeds_and_leaves_no_stale_crops(tmp_path):
    folders = {"output": "out", "output_imgs": "out"}
    run_probe(scene_options(tmp_path, **folders), local_transport(tmp_path), tmp_path / "cache")
    assert (tmp_path / "out" / "crop_00.jpg").is_file()
    run = run_probe(scene_options(tmp_path, **folders), local_transport(tmp_path, EmptySegmenter()))
    assert run.response["results"][0]["result"] == []
    assert (tmp_path / "out" / "fullframe_prediction.jpg").is_file()
    assert not (tmp_path / "out" / "crop_00.jpg").exists(), "the crop of the earlier run is gone"


def test_a_refusal_of_the_backend_is_reported_with_its_message(tmp_path):
    """Valid extra_params that this prompt cannot meet: only the backend can say so."""
    options = scene_options(
        tmp_path,
        {"subpatching": {"patch_size": 256, "allow_oversize": False}},
        {"type": "Rectangle", "geometry": [10, 10, 1000, 1000]},
        request_record="rec",
    )
    with pytest.raises(ProbeError) as failure:
        run_probe(options, local_transport(tmp_path))
    assert str(failure.value).startswith(
        "/predict failed (HTTP 400): extra_params.subpatching.allow_oversize: "
        "is false and the prompt (1000x1000 frame px) exceeds patch_size 256x256"
    )
    assert failure.value.exit_code == FAILED
    assert (tmp_path / "rec" / "request.json").is_file(), "the refused request is still recorded"


def test_the_cli_reports_usage_errors_on_stderr_with_exit_code_2(tmp_path, capsys):
    prompt = '{"type": "KeyPoint", "geometry": [1, 2, 3, 4]}'
    assert cli.main(["--prompt", prompt, "--cache-dir", str(tmp_path)]) == USAGE
    captured = capsys.readouterr()
    assert captured.out == "" and "sam2plus-probe: prompt.geometry: must be [x, y]" in captured.err


def test_the_cli_says_when_the_backend_cannot_be_reached(tmp_path, capsys):
    assert cli.main(["--url", "http://127.0.0.1:9", "--timeout", "5"]) == FAILED
    assert "/setup: cannot reach the backend at http://127.0.0.1:9" in capsys.readouterr().err


FORMATS = {
    "BrushLabels": "disc",
    "Brush": None,
    "PolygonLabels": "disc",
    "Polygon": None,
    "RectangleLabels": "disc",
    "Rectangle": None,
    "BitmaskLabels": "disc",
    "Bitmask": None,
}


def _scored(region: dict, kind: str) -> float:
    """How well a region covers SCENE's disc: IoU of masks, or of boxes for rectangles."""
    window = SCENE.window()
    if kind == "brush":
        x0, y0, x1, y1 = window
        return iou(brush_mask(region)[y0:y1, x0:x1], SCENE.truth(window))
    if kind == "bitmask":
        x0, y0, x1, y1 = window
        return iou(bitmask_mask(region)[y0:y1, x0:x1], SCENE.truth(window))
    if kind == "polygon":
        return iou(polygon_mask(region, window), SCENE.truth(window))
    r = SCENE.radius
    return box_iou(rectangle_box(region), (SCENE.cx - r, SCENE.cy - r, SCENE.cx + r, SCENE.cy + r))


@pytest.mark.parametrize("auth", [None, ("annotator", "p@ss wörd")], ids=["open", "basic-auth"])
def test_remote_mode_every_return_format_with_no_shared_folder(tmp_path, capsys, auth):
    """The backend's CACHE_DIR is its own; the probe gets no --cache-dir: the image goes as a data:
    URL, the answer is the known disc in every format, the intermediates come back over HTTP."""
    image = SCENE.write(tmp_path / "scene.jpg")
    x0, y0, x1, y1 = (round(v) for v in SCENE.box())
    with remote_backend(tmp_path / "backend", *(auth or ())) as (url, backend_cache):
        if auth:
            from urllib.parse import quote

            url = url.replace("http://", f"http://{quote(auth[0])}:{quote(auth[1], safe='')}@")
        for fmt, label in FORMATS.items():
            (tmp_path / f"{fmt}.json").write_text(json.dumps({"return_format": {"type": fmt}}))
            prompt = {"type": "RectangleLabel" if label else "Rectangle", "geometry": [x0, y0, x1 - x0, y1 - y0]}
            if label:
                prompt["label"] = label
            code = probe_cli(
                image,
                url,
                "--extra-params",
                str(tmp_path / f"{fmt}.json"),
                "--name",
                fmt,
                f"--request-record={tmp_path}/rec/${{name}}",
                f"--intermediates={tmp_path}/mid/${{name}}",
                f"--output={tmp_path}/out/${{name}}",
                prompt=prompt,
            )
            captured = capsys.readouterr()
            assert code == 0, captured.err
            answer = json.loads(captured.out)
            (region,) = answer["results"][0]["result"]
            kind = fmt.lower().removesuffix("labels")
            assert region["type"] == fmt.lower() and region["value"].get(fmt.lower()) == ([label] if label else None)
            assert _scored(region, kind) > 0.9, fmt
            record = json.loads((tmp_path / "rec" / fmt / "request.json").read_text())
            sent = record["predict"]["tasks"][0]["data"]["image"]
            assert sent == record["sent_as"] and sent.startswith("data:image/jpeg;base64,... (")
            assert len((tmp_path / "rec" / fmt / "request.json").read_bytes()) < 20_000, "no base64 in the record"
            backend_folder = backend_cache / answer["artifacts"]
            copied = tmp_path / "mid" / fmt
            assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in backend_folder.iterdir())
            for path in copied.iterdir():
                assert path.read_bytes() == (backend_folder / path.name).read_bytes(), path.name
        if auth:
            assert cli.main([str(image), "--prompt", json.dumps(prompt), "--url", url.replace("p%40ss", "x")]) == FAILED
            assert "/setup failed (HTTP 401)" in capsys.readouterr().err
    digest = hashlib.sha1(image.read_bytes()).hexdigest()
    assert [p.name for p in (backend_cache / "downloads").glob("*.jpg")] == [f"{digest}.jpg"], "stored by content"
    assert not (backend_cache / "probe").exists(), "nothing was staged: no folder is shared"


def test_a_cache_dir_that_does_not_exist_here_sends_the_image_inside_the_request(tmp_path, capsys):
    image = SCENE.write(tmp_path / "scene.jpg")
    with remote_backend(tmp_path / "backend") as (url, _):
        code = probe_cli(image, url, "--cache-dir", str(tmp_path / "not-here"), f"--intermediates={tmp_path}/mid")
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"--cache-dir {tmp_path / 'not-here'} does not exist here: the image is sent inside the request" in err
    assert (tmp_path / "mid" / "patch.jpg").is_file() and not (tmp_path / "not-here").exists()


def test_a_cache_dir_that_is_not_the_backends_is_named_in_the_error(tmp_path, capsys):
    image = SCENE.write(tmp_path / "scene.jpg")
    (tmp_path / "other-cache").mkdir()
    with remote_backend(tmp_path / "backend") as (url, _):
        code = probe_cli(image, url, "--cache-dir", str(tmp_path / "other-cache"))
    err = capsys.readouterr().err
    assert code == FAILED and "is not a file inside CACHE_DIR" in err
    assert f"--cache-dir {tmp_path / 'other-cache'} is not the backend's CACHE_DIR" in err


def test_a_shared_cache_dir_is_the_fast_path_even_over_http(tmp_path, capsys):
    image = SCENE.write(tmp_path / "scene.jpg")
    with remote_backend(tmp_path / "backend") as (url, backend_cache):
        backend_cache.mkdir(parents=True, exist_ok=True)
        code = probe_cli(image, url, "--cache-dir", str(backend_cache), f"--request-record={tmp_path}/rec")
    assert code == 0, capsys.readouterr().err
    sent = json.loads((tmp_path / "rec" / "request.json").read_text())["sent_as"]
    assert sent.startswith("probe/") and (backend_cache / sent).read_bytes() == image.read_bytes()
    assert not (backend_cache / "downloads").exists() or not list((backend_cache / "downloads").glob("*.jpg"))


# --- the installed command against gunicorn (real SAM2, untrained) ----------------------------


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe-backend")
    env = {"CACHE_DIR": str(root / "cache"), "MODEL_DIR": str(root / "models"), "ARTIFACTS": "request"}
    with gunicorn_backend(env, workers=1, threads=2, log_dir=root) as url:
        yield url, root / "cache"


def probe(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PROBE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def answer_of(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, "stdout holds the prediction JSON and nothing else"
    answer = json.loads(lines[0])
    assert len(answer["results"]) == 1 and isinstance(answer["results"][0]["score"], float)
    return answer


# Further prompts in relative geometry (any image): a rectangle and a click away from the configs' prompts.
MORE_PROMPTS = [
    {"type": "RectangleLabel", "label": "tooth", "geometry": [0.3, 0.6, 0.1, 0.12]},
    {"type": "KeyPointLabel", "label": "tooth", "geometry": [0.62, 0.55]},
]


def more_answers(url, cache, image, extra_params) -> list[list[dict]]:
    """The regions answered to MORE_PROMPTS on `image` with the `extra_params` file, one list per prompt."""
    return [
        answer_of(
            probe(
                image,
                "--prompt",
                json.dumps(prompt),
                "--extra-params",
                extra_params,
                "--url",
                url,
                "--cache-dir",
                cache,
            )
        )["results"][0]["result"]
        for prompt in MORE_PROMPTS
    ]


@pytest.mark.slow
def test_cli_rectangle_with_polygon_extra_params_fills_every_folder(backend, tmp_path):
    url, cache = backend
    config = tmp_path / "teeth-polygon.yaml"
    config.write_text(
        f"image: {EXAMPLE_IMAGE}\nextra_params: {EXAMPLES / '02-extra_params' / 'basic-polygon.json'}\n"
        "prompt: {type: RectangleLabel, label: tooth, geometry: [1370, 950, 340, 160]}\n"
        "request_record: rec/${name}\nintermediates: mid/${name}\noutput: out/${name}\n"
        "output_imgs: out/${name}\n"
    )
    answer = answer_of(probe("--config", config, "--url", url, "--cache-dir", cache))
    per_prompt = [
        answer["results"][0]["result"],
        *more_answers(url, cache, EXAMPLE_IMAGE, EXAMPLES / "02-extra_params" / "basic-polygon.json"),
    ]
    require_some(per_prompt)
    for region in (region for regions in per_prompt for region in regions):
        assert region["type"] == "polygonlabels" and region["value"]["polygonlabels"] == ["tooth"]
        assert (region["original_width"], region["original_height"]) == (3000, 2000)
        points = np.array(region["value"]["points"])
        assert 3 <= len(points) <= 100 and ((points >= 0) & (points <= 100)).all()
    assert not list(tmp_path.rglob("*${name}*")), "${name} is expanded"
    record, middle, out = (tmp_path / folder / "teeth-polygon" for folder in ("rec", "mid", "out"))
    assert {"input.jpg", "request.json"} <= {p.name for p in record.iterdir()}
    sent = json.loads((record / "request.json").read_text())
    assert sent["setup"]["extra_params"]["return_format"]["type"] == "PolygonLabels"
    assert Image.open(record / "input.jpg").size == (2048, 1365), "full-frame pictures fit into 2048 px"
    assert json.loads((out / "prediction.json").read_text()) == answer
    assert (out / "fullframe_prediction.jpg").is_file()
    assert len(list(out.glob("crop_*.jpg"))) == len(answer["results"][0]["result"])
    backend_folder = cache / answer["artifacts"]
    assert sorted(p.name for p in middle.iterdir()) == sorted(p.name for p in backend_folder.iterdir())
    assert {"patch.jpg", "patch.prompt.jpg", "frame.prompt.jpg", "mask.patch.png", "request.json"} <= {
        p.name for p in middle.iterdir()
    }
    assert json.loads((middle / "request.json").read_text())["image_size"] == [3000, 2000]


@pytest.mark.slow
def test_cli_keypoints_with_brush_extra_params(backend, tmp_path):
    url, cache = backend
    prompt = {
        "type": "KeyPointLabel",
        "label": "tooth",
        "points": [[620, 520, True], [0.2667, 0.24], [800, 700, False]],
    }
    answer = answer_of(
        probe(
            EXAMPLE_IMAGE,
            "--prompt",
            json.dumps(prompt),
            "--url",
            url,
            "--cache-dir",
            cache,
            "--extra-params",
            EXAMPLES / "02-extra_params" / "basic-rle.json",
            "--name",
            "kp",
            f"--request-record={tmp_path}/rec/${{name}}",
            f"--intermediates={tmp_path}/mid",
            "-o",
            tmp_path / "out",
            f"--output-imgs={tmp_path}/imgs",
            "--probe-fullframe-artifact-resize",
            "0.1",
        )
    )
    per_prompt = [
        answer["results"][0]["result"],
        *more_answers(url, cache, EXAMPLE_IMAGE, EXAMPLES / "02-extra_params" / "basic-rle.json"),
    ]
    require_some(per_prompt)
    for regions in per_prompt:
        assert len(regions) <= 1, "one brush region carries every blob"
        for region in regions:
            assert region["type"] == "brushlabels" and brush_mask(region).shape == (2000, 3000)
    sent = json.loads((tmp_path / "rec" / "kp" / "request.json").read_text())
    context = sent["predict"]["params"]["context"]["result"]
    assert [r["is_positive"] for r in context] == [True, True, False]
    assert sent["predict"]["project"] == "sam2plus-probe-kp"
    assert Image.open(tmp_path / "rec" / "kp" / "input.jpg").size == (300, 200)
    assert Image.open(tmp_path / "imgs" / "fullframe_prediction.jpg").size == (300, 200)
    assert (tmp_path / "out" / "prediction.json").is_file() and (tmp_path / "mid" / "patch.jpg").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ichthyo-rle", "ichthyo-polygon", "ichthyo-keypoint-rle"])
def test_cli_runs_each_bundled_config(backend, tmp_path, name):
    url, cache = backend
    config = EXAMPLES / "00-probe_configs" / f"{name}.yaml"
    answer = answer_of(
        probe(
            "--config",
            config,
            "--url",
            url,
            "--cache-dir",
            cache,
            f"--request-record={tmp_path}/${{name}}",
            f"--intermediates={tmp_path}/${{name}}",
            f"--output={tmp_path}/${{name}}",
            f"--output-imgs={tmp_path}/${{name}}",
        )
    )
    options = load_options(["--config", str(config)])
    per_prompt = [answer["results"][0]["result"], *more_answers(url, cache, options.image, options.extra_params_source)]
    require_some(per_prompt)
    expected = "polygonlabels" if "polygon" in name else "brushlabels"
    for region in (region for regions in per_prompt for region in regions):
        assert region["type"] == expected and region["value"][expected] in (["ichthyolith"], ["tooth"])
        assert (region["original_width"], region["original_height"]) == (3000, 2000)
    assert {"input.jpg", "prediction.json", "fullframe_prediction.jpg", "patch.jpg"} <= {
        p.name for p in (tmp_path / name).iterdir()
    }


@pytest.mark.slow
def test_cli_without_arguments_prints_only_the_prediction(backend, tmp_path):
    url, cache = backend
    answer = answer_of(probe("--url", url, "--cache-dir", cache, cwd=tmp_path))
    assert answer["model_version"].endswith(":untrained") and "artifacts" not in answer
    assert list(tmp_path.iterdir()) == [], "nothing is written unless asked for"
    assert list((cache / "probe").glob("*-ichthyoliths.jpg")), "the example was staged in the cache"


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """gunicorn with real SAM2 (untrained), basic auth and a CACHE_DIR this test never hands to the probe."""
    root = tmp_path_factory.mktemp("probe-remote")
    env = {
        "CACHE_DIR": str(root / "backend-cache"),
        "MODEL_DIR": str(root / "models"),
        "ARTIFACTS": "request",
        "BASIC_AUTH_USER": "annotator",
        "BASIC_AUTH_PASS": "s3cret pässword",
    }
    with gunicorn_backend(env, workers=1, threads=2, log_dir=root) as url:
        yield url, root / "backend-cache"


@pytest.mark.slow
def test_cli_against_a_backend_that_shares_no_folder_in_every_return_format(remote, tmp_path):
    url, backend_cache = remote
    authed = url.replace("http://", "http://annotator:s3cret%20p%C3%A4ssword@")
    per_prompt = []
    for fmt in RETURN_TYPES:
        labelled = fmt.endswith("Labels")
        (tmp_path / f"{fmt}.json").write_text(
            json.dumps({"subpatching": {"patch_size": 1024}, "return_format": {"type": fmt}})
        )
        prompt = {"type": "RectangleLabel" if labelled else "Rectangle", "geometry": [1370, 950, 340, 160]}
        done = probe(
            EXAMPLE_IMAGE,
            "--prompt",
            json.dumps(prompt),
            "--url",
            authed,
            "--extra-params",
            tmp_path / f"{fmt}.json",
            "--name",
            fmt,
            "--request-record",
            "--intermediates",
            "-o",
            "--output-imgs",
            cwd=tmp_path,
        )
        answer = answer_of(done)
        assert "s3cret" not in done.stderr and "annotator:" not in done.stderr
        per_prompt.append(answer["results"][0]["result"])
        for region in per_prompt[-1]:
            assert region["type"] == fmt.lower()
            assert (region["original_width"], region["original_height"]) == (3000, 2000)
            assert region["value"].get(fmt.lower()) == (["probe"] if labelled else None)
        record = json.loads((tmp_path / "probe_out" / "03-requests" / fmt / "request.json").read_text())
        assert record["sent_as"].startswith("data:image/jpeg;base64,... (") and record["backend"] == url
        copied = tmp_path / "probe_out" / "04-intermediates" / fmt
        backend_folder = backend_cache / answer["artifacts"]
        assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in backend_folder.iterdir())
        assert (copied / "patch.jpg").read_bytes() == (backend_folder / "patch.jpg").read_bytes()
        assert (tmp_path / "probe_out" / "05-outputs" / fmt / "fullframe_prediction.jpg").is_file()
    require_some(per_prompt, "remote probe runs")
    assert "s3cret" not in "".join(path.read_text(errors="replace") for path in tmp_path.rglob("*.json"))
    assert not (backend_cache / "probe").exists(), "nothing was staged: the image came inside the requests"
    refused = probe(EXAMPLE_IMAGE, "--url", url)
    assert refused.returncode == FAILED and "/setup failed (HTTP 401)" in refused.stderr


@pytest.mark.slow
def test_cli_local_runs_the_backend_in_process(tmp_path):
    env = {**TEST_MODEL}
    answer = answer_of(
        probe("--local", "--cache-dir", tmp_path / "cache", "--intermediates=mid", "-o", "out", cwd=tmp_path, env=env)
    )
    assert answer["model_version"].endswith(":untrained")
    assert (tmp_path / "out" / "prediction.json").is_file() and (tmp_path / "mid" / "patch.jpg").is_file()
    assert (tmp_path / "cache" / answer["artifacts"]).parent == tmp_path / "cache" / "artifacts"
