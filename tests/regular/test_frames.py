"""The frame and patch window SAM2 sees, and masks mapped between patch and image."""

import cv2
import numpy as np
import pytest

from sam2plus.errors import RequestError
from sam2plus.frames import REUSE_INSET, FrameMap, Window, extract_patch, frame_size, full_frame, plan_frame
from sam2plus.masks import Mask, mask_from_logits, mask_in_image
from sam2plus.params import parse_extra_params
from sam2plus.prompts import Prompt


def _point(x, y):
    return Prompt(points=((x, y),), labels=(1,))


def _box(x0, y0, x1, y1):
    return Prompt(box=(x0, y0, x1, y1))


def _params(**extra):
    return parse_extra_params(extra)


def _window(fm: FrameMap):
    w = fm.window
    return w.x, w.y, w.width, w.height


# -- plan_frame ------------------------------------------------------------------------------


def test_no_subpatching_is_the_full_window():
    fm = plan_frame((4000, 3000), _point(0.1, 0.9), _params())
    assert fm.mode == "fullframe"
    assert fm.frame_size == (4000, 3000)
    assert _window(fm) == (0, 0, 4000, 3000)
    assert fm.is_identity
    assert fm.valid_box() == (0, 0, 4000, 3000)


def test_no_subpatching_with_fullframe_resize():
    fm = plan_frame((4000, 3000), _point(0.5, 0.5), _params(fullframe_resize=0.25))
    assert (fm.mode, fm.frame_size, _window(fm)) == ("fullframe", (1000, 750), (0, 0, 1000, 750))
    assert fm.scale == (0.25, 0.25)
    assert not fm.is_identity


@pytest.mark.parametrize(
    "prompt, window",
    [
        (_point(0.5, 0.5), (1488, 988, 1024, 1024)),  # centred
        (_box(0.4, 0.5, 0.6, 0.7), (1488, 1288, 1024, 1024)),  # centred on the box
        (_point(0.99, 0.99), (2976, 1976, 1024, 1024)),  # clamped at the far edges
        (_point(0.0, 0.0), (0, 0, 1024, 1024)),  # clamped at the near edges
        (_point(0.05, 0.5), (0, 988, 1024, 1024)),  # clamped on one axis only
    ],
)
def test_default_mode_window_is_centred_and_kept_inside(prompt, window):
    fm = plan_frame((4000, 3000), prompt, _params(subpatching={"patch_size": 1024}))
    assert fm.mode == "patch"
    assert _window(fm) == window
    x, y, w, h = window
    assert 0 <= x and x + w <= 4000 and 0 <= y and y + h <= 3000
    assert fm.valid_box() == (0, 0, 1024, 1024)


@pytest.mark.parametrize(
    "prompt, window",
    [
        (_point(0.5, 0.5), (1488, 988)),
        (_point(0.01, 0.99), (-472, 2458)),
        (_point(1.0, 0.0), (3488, -512)),
    ],
)
def test_padding_mode_is_centred_past_the_edges(prompt, window):
    fm = plan_frame((4000, 3000), prompt, _params(subpatching={"patch_size": 1024, "mode": "padding"}))
    assert fm.mode == "patch"
    assert _window(fm)[:2] == window
    x, y = window
    assert fm.valid_box() == (max(0, -x), max(0, -y), min(1024, 4000 - x), min(1024, 3000 - y))


def test_non_square_patch():
    fm = plan_frame((4000, 3000), _point(0.5, 0.5), _params(subpatching={"patch_size": [800, 400]}))
    assert _window(fm) == (1600, 1300, 800, 400)


@pytest.mark.parametrize("padding, size", [(0.05, (840, 420)), (0, (800, 400)), (0.5, (1200, 600))])
def test_oversize_growth_keeps_aspect_and_adds_padding(padding, size):
    # box 800 x 150 frame px against a 400 x 200 patch: grown by max(2, 0.75) = 2, then the padding
    prompt = _box(0.1, 0.1, 0.3, 0.15)
    fm = plan_frame((4000, 3000), prompt, _params(subpatching={"patch_size": [400, 200], "oversize_padding": padding}))
    assert fm.mode == "patch"
    assert fm.patch_size == size
    assert fm.patch_size[0] == 2 * fm.patch_size[1]
    cx, cy = 800, 375
    assert _window(fm)[:2] == (round(cx - size[0] / 2), round(cy - size[1] / 2))


def test_oversize_growth_uses_the_larger_ratio():
    prompt = _box(0.4, 0.1, 0.45, 0.5)  # 200 x 1200 frame px against 1024 x 1024
    fm = plan_frame((4000, 3000), prompt, _params(subpatching={}))
    assert fm.patch_size == (1260, 1260)  # ceil(1024 * 1200/1024 * 1.05)


def test_prompt_exactly_the_patch_size_does_not_grow():
    fm = plan_frame((2000, 2000), _box(0.25, 0.25, 0.75, 0.75), _params(subpatching={"patch_size": 1000}))
    assert fm.patch_size == (1000, 1000)


def test_allow_oversize_false_is_an_error():
    with pytest.raises(RequestError) as info:
        plan_frame(
            (4000, 3000), _box(0.1, 0.1, 0.5, 0.2), _params(subpatching={"patch_size": 512, "allow_oversize": False})
        )
    assert info.value.field == "extra_params.subpatching.allow_oversize"
    assert "1600x300" in info.value.message and "512x512" in info.value.message


def test_allow_oversize_false_with_a_fitting_prompt_is_fine():
    fm = plan_frame(
        (4000, 3000), _box(0.1, 0.1, 0.2, 0.2), _params(subpatching={"patch_size": 512, "allow_oversize": False})
    )
    assert fm.patch_size == (512, 512)


@pytest.mark.parametrize(
    "image, patch, prompt",
    [
        ((1000, 1000), 256, _box(0.02, 0.3, 0.98, 0.4)),  # 960 px * 1.05 > 1000
        ((2000, 600), [1024, 256], _box(0.4, 0.01, 0.45, 0.99)),  # height forces width past the frame
    ],
)
def test_fallback_to_full_frame_when_the_grown_patch_exceeds_the_frame(image, patch, prompt):
    fm = plan_frame(image, prompt, _params(subpatching={"patch_size": patch}))
    assert fm.mode == "fallback"
    assert _window(fm) == (0, 0, *image)
    assert fm.frame_size == image


def test_oversize_is_judged_in_resized_frame_pixels():
    prompt = _box(0.1, 0.1, 0.3, 0.3)  # 800 x 600 image px; 400 x 300 frame px at 0.5
    full = plan_frame((4000, 3000), prompt, _params(subpatching={"patch_size": 512}))
    resized = plan_frame((4000, 3000), prompt, _params(fullframe_resize=0.5, subpatching={"patch_size": 512}))
    assert full.patch_size == (840, 840)
    assert (resized.mode, resized.patch_size, resized.frame_size) == ("patch", (512, 512), (2000, 1500))


@pytest.mark.parametrize("mode", ["default", "padding"])
def test_frame_smaller_than_the_patch_sits_in_the_middle(mode):
    fm = plan_frame((600, 400), _point(0.5, 0.5), _params(subpatching={"patch_size": 1024, "mode": mode}))
    assert fm.mode == "patch"
    assert _window(fm) == (-212, -312, 1024, 1024)
    assert fm.valid_box() == (212, 312, 812, 712)


def test_frame_smaller_than_the_patch_in_default_mode_ignores_the_prompt_position():
    fm = plan_frame((600, 400), _point(0.05, 0.9), _params(subpatching={"patch_size": 1024}))
    assert _window(fm) == (-212, -312, 1024, 1024)


def test_frame_smaller_than_the_patch_on_one_axis():
    fm = plan_frame((3000, 500), _point(0.9, 0.5), _params(subpatching={"patch_size": 1024}))
    assert _window(fm) == (1976, -262, 1024, 1024)
    assert fm.valid_box() == (0, 262, 1024, 762)


def test_fullframe_resize_scale_maps_coordinates():
    fm = plan_frame((4000, 2000), _point(0.5, 0.5), _params(fullframe_resize=0.5, subpatching={"patch_size": 512}))
    assert fm.frame_size == (2000, 1000)
    assert _window(fm) == (744, 244, 512, 512)
    assert fm.image_to_patch(np.array([[2000.0, 1000.0]])) == pytest.approx(np.array([[256.0, 256.0]]))
    assert fm.patch_to_image(np.array([[0.0, 0.0]])) == pytest.approx(np.array([[1488.0, 488.0]]))
    points = np.random.default_rng(0).uniform(0, 2000, size=(50, 2))
    assert fm.patch_to_image(fm.image_to_patch(points)) == pytest.approx(points)


def test_exact_size_resize_has_a_scale_per_axis():
    fm = plan_frame((1000, 1000), _point(0.5, 0.5), _params(fullframe_resize=[500, 250]))
    assert fm.scale == (0.5, 0.25)
    assert fm.image_to_patch(np.array([[400.0, 400.0]])) == pytest.approx(np.array([[200.0, 100.0]]))


def test_fullframe_resize_upscale_error_comes_through_plan_frame():
    with pytest.raises(RequestError) as info:
        plan_frame((500, 500), _point(0.5, 0.5), _params(fullframe_resize=1024))
    assert info.value.field == "extra_params.fullframe_resize"


# -- a prompt through the FrameMap: fractions -> frame -> patch, patch -> percent ------------------

# A 4000x2000 image resized to 2000x1000, the patch the 512x512 window at (744, 244).
RESIZED = FrameMap((4000, 2000), (2000, 1000), Window(744, 244, 512, 512), "patch")


def test_fractions_of_the_image_map_through_the_scale_and_the_window():
    # (0.5, 0.5) is image (2000, 1000), frame (1000, 500), patch (256, 256)
    xy = RESIZED.fractions_to_patch([(0.5, 0.5), (0.0, 0.0), (1.0, 1.0)])
    assert xy == pytest.approx(np.array([[256.0, 256.0], [-744.0, -244.0], [1256.0, 756.0]]))
    assert RESIZED.fractions_to_patch(()).shape == (0, 2)


def test_a_prompt_in_the_patch_is_its_points_labels_and_box():
    prompt = Prompt(points=((0.5, 0.5), (0.4, 0.3)), labels=(1, 0), box=(0.4, 0.3, 0.6, 0.7))
    in_patch = RESIZED.prompt_to_patch(prompt)
    assert in_patch.points == pytest.approx(np.array([[256.0, 256.0], [56.0, 56.0]]))
    assert in_patch.labels.tolist() == [1, 0] and in_patch.labels.dtype == np.int64
    assert in_patch.box.shape == (4,) and in_patch.box == pytest.approx([56.0, 56.0, 456.0, 456.0])


def test_a_box_alone_has_no_points_and_points_alone_no_box():
    alone = RESIZED.prompt_to_patch(_box(0.4, 0.3, 0.6, 0.7))
    assert alone.points.shape == (0, 2) and alone.labels.shape == (0,)
    assert RESIZED.prompt_to_patch(_point(0.5, 0.5)).box is None


def test_a_prompt_in_the_patch_is_exactly_where_its_image_pixels_map():
    """fractions_to_patch is image_to_patch of the image pixels, bit for bit (per-axis scale too)."""
    fm = FrameMap((3001, 1999), (1234, 777), Window(-17, 40, 512, 300), "patch")
    xy = np.random.default_rng(1).uniform(0, 1, size=(64, 2))
    assert np.array_equal(fm.fractions_to_patch(xy), fm.image_to_patch(xy * np.array([3001.0, 1999.0])))


def test_frame_bounds_are_the_prompts_bounds_in_frame_pixels():
    prompt = Prompt(points=((0.5, 0.5),), labels=(1,), box=(0.4, 0.3, 0.6, 0.7))
    assert RESIZED.frame_bounds(prompt) == pytest.approx((800.0, 300.0, 1200.0, 700.0))
    assert RESIZED.frame_bounds(_point(0.25, 0.75)) == pytest.approx((500.0, 750.0, 500.0, 750.0))


def test_patch_to_percent_is_the_inverse_of_fractions_to_patch_clipped_to_the_image():
    xy = np.random.default_rng(2).uniform(0, 1, size=(50, 2))
    assert RESIZED.patch_to_percent(RESIZED.fractions_to_patch(xy)) == pytest.approx(xy * 100)
    outside = np.array([[-800.0, -300.0], [1300.0, 800.0], [0.0, 0.0]])
    assert RESIZED.patch_to_percent(outside) == pytest.approx(np.array([[0.0, 0.0], [100.0, 100.0], [37.2, 24.4]]))


# -- window reuse ----------------------------------------------------------------------------

SUB = {"subpatching": {"patch_size": 1024}}


def _px(x, y, size=(4000, 3000)):
    """A point prompt at image pixel (x, y)."""
    return _point(x / size[0], y / size[1])


def test_a_prompt_well_inside_an_encoded_window_is_served_from_it():
    encoded = [Window(1000, 900, 1024, 1024)]
    fm = plan_frame((4000, 3000), _px(1700, 1200), _params(**SUB), encoded)
    assert (_window(fm), fm.mode, fm.reused) == ((1000, 900, 1024, 1024), "patch", True)
    assert fm.image_to_patch(np.array([[1700.0, 1200.0]])) == pytest.approx(np.array([[700.0, 300.0]]))


@pytest.mark.parametrize(
    "x, y, reused",
    [
        (1128, 1500, True),
        (1127.9, 1500, False),  # left: 1/8 of 1024 = 128 px
        (1896, 1500, True),
        (1896.1, 1500, False),  # right
        (1500, 1028, True),
        (1500, 1027.9, False),  # top
        (1500, 1796, True),
        (1500, 1796.1, False),  # bottom
    ],
)
def test_reuse_needs_an_eighth_of_the_window_on_every_side(x, y, reused):
    assert REUSE_INSET == 1 / 8
    fm = plan_frame((4000, 3000), _px(x, y), _params(**SUB), [Window(1000, 900, 1024, 1024)])
    assert fm.reused is reused
    if not reused:
        assert _window(fm) == (round(x - 512), round(y - 512), 1024, 1024), "otherwise centred on the prompt"


def test_the_whole_prompt_must_fit_with_the_margin():
    # Refinement clicks 700 px apart: their bounds leave less than 128 px on one side.
    prompt = Prompt(points=((1100 / 4000, 1500 / 3000), (1850 / 4000, 1500 / 3000)), labels=(1, 0))
    fm = plan_frame((4000, 3000), prompt, _params(**SUB), [Window(1000, 900, 1024, 1024)])
    assert not fm.reused and _window(fm) == (963, 988, 1024, 1024)


def test_no_margin_is_needed_where_the_window_meets_the_frame_edge():
    corner = Window(0, 1976, 1024, 1024)  # the bottom-left corner window of a 4000 x 3000 frame
    fm = plan_frame((4000, 3000), _px(10, 2990), _params(**SUB), [corner])
    assert fm.reused and fm.window == corner
    inner_side = plan_frame((4000, 3000), _px(1000, 2990), _params(**SUB), [corner])
    assert not inner_side.reused, "the side inside the frame still needs its margin"


def test_of_several_fitting_windows_the_nearest_centre_wins():
    windows = [Window(1300, 900, 1024, 1024), Window(1000, 900, 1024, 1024), Window(1100, 1000, 1024, 1024)]
    fm = plan_frame((4000, 3000), _px(1550, 1450), _params(**SUB), windows)
    assert fm.window == Window(1000, 900, 1024, 1024)  # centres 265, 54 and 88 px from the prompt
    assert plan_frame((4000, 3000), _px(1550, 1450), _params(**SUB), windows[::-1]).window == fm.window


def test_only_windows_of_the_prompts_own_size_are_reused():
    small = [Window(1000, 900, 512, 512)]
    assert not plan_frame((4000, 3000), _px(1256, 1156), _params(**SUB), small).reused
    assert plan_frame((4000, 3000), _px(1256, 1156), _params(subpatching={"patch_size": 512}), small).reused
    wide = [Window(1000, 900, 800, 400)]
    assert plan_frame((4000, 3000), _px(1400, 1100), _params(subpatching={"patch_size": [800, 400]}), wide).reused
    assert not plan_frame((4000, 3000), _px(1400, 1100), _params(subpatching={"patch_size": [400, 800]}), wide).reused


def test_a_grown_window_is_not_reused_for_a_small_prompt_nor_a_small_one_for_a_large_prompt():
    big = _box(0.1, 0.1, 0.5, 0.5)  # 1600 x 1200 frame px: grows to 1680 x 1680
    grown = plan_frame((4000, 3000), big, _params(**SUB))
    assert grown.patch_size == (1680, 1680)
    small_after = plan_frame((4000, 3000), _px(1000, 800), _params(**SUB), [grown.window])
    assert not small_after.reused and small_after.patch_size == (1024, 1024)
    big_after = plan_frame((4000, 3000), big, _params(**SUB), [Window(400, 300, 1024, 1024)])
    assert not big_after.reused and big_after.patch_size == (1680, 1680)


def test_fallback_and_fullframe_ignore_encoded_windows():
    windows = [Window(0, 0, 1024, 1024)]
    fm = plan_frame((1000, 1000), _box(0.02, 0.3, 0.98, 0.4), _params(subpatching={"patch_size": 256}), windows)
    assert fm.mode == "fallback" and not fm.reused
    assert plan_frame((4000, 3000), _px(500, 500), _params(), windows).mode == "fullframe"


def test_padding_mode_reuses_a_window_past_the_edge_and_still_centres_new_ones():
    params = _params(subpatching={"patch_size": 1024, "mode": "padding"})
    padded = Window(-472, 2458, 1024, 1024)  # centred on (40, 2970): reaches past two edges
    fm = plan_frame((4000, 3000), _px(300, 2800), params, [padded])
    assert fm.reused and fm.window == padded
    assert fm.valid_box() == (472, 0, 1024, 542)
    new = plan_frame((4000, 3000), _px(2000, 1500), params, [padded])
    assert not new.reused and _window(new) == (1488, 988, 1024, 1024)


def test_a_resized_frame_judges_reuse_in_frame_pixels():
    params = _params(fullframe_resize=0.5, subpatching={"patch_size": 512})
    window = Window(500, 400, 512, 512)  # frame px; image px 1000..2024 x 800..1824
    assert plan_frame((4000, 3000), _px(1200, 1000), params, [window]).reused  # frame (600, 500): 100 px in
    assert not plan_frame((4000, 3000), _px(1100, 1000), params, [window]).reused  # frame (550, 500): 50 < 64


def test_frame_size_and_full_frame_are_what_plan_frame_uses():
    params = _params(fullframe_resize=0.25)
    assert frame_size((4000, 3000), params) == (1000, 750) == plan_frame((4000, 3000), _px(5, 5), params).frame_size
    assert full_frame((4000, 3000), params) == plan_frame((4000, 3000), _px(5, 5), params)
    assert frame_size((4000, 3000), _params()) == (4000, 3000)


# -- extract_patch ---------------------------------------------------------------------------


def _frame(width, height):
    rng = np.random.default_rng(1)
    return rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)


def test_extract_patch_inside_is_a_view():
    frame = _frame(300, 200)
    fm = FrameMap((300, 200), (300, 200), Window(50, 40, 100, 80), "patch")
    patch = extract_patch(frame, fm, (1, 2, 3))
    assert patch.shape == (80, 100, 3)
    assert np.shares_memory(patch, frame)
    assert np.array_equal(patch, frame[40:120, 50:150])


def test_extract_patch_past_the_edges_is_a_padded_copy():
    frame = _frame(300, 200)
    fm = FrameMap((300, 200), (300, 200), Window(-20, 150, 100, 80), "patch")
    patch = extract_patch(frame, fm, (10, 200, 30))
    assert patch.shape == (80, 100, 3)
    assert not np.shares_memory(patch, frame)
    assert fm.valid_box() == (20, 0, 100, 50)
    assert np.array_equal(patch[0:50, 20:100], frame[150:200, 0:80])
    assert (patch[:, :20] == (10, 200, 30)).all()
    assert (patch[50:, :] == (10, 200, 30)).all()


def test_extract_patch_of_a_frame_smaller_than_the_patch():
    frame = _frame(60, 40)
    params = _params(subpatching={"patch_size": 100, "padding_fill": "white"})
    fm = plan_frame((60, 40), _point(0.5, 0.5), params)
    patch = extract_patch(frame, fm, params.subpatching.padding_fill)
    assert patch.shape == (100, 100, 3)
    assert np.array_equal(patch[30:70, 20:80], frame)
    outside = np.ones((100, 100), bool)
    outside[30:70, 20:80] = False
    assert (patch[outside] == 255).all()


# -- masks: logits -> patch mask -> image mask ------------------------------------------------


def _logits(rows, cols, shape=(256, 256)):
    logits = np.full(shape, -10.0, np.float32)
    logits[rows[0] : rows[1], cols[0] : cols[1]] = 10.0
    return logits


def _bbox(mask: Mask):
    t = mask.tight()
    h, w = t.bits.shape
    return t.x, t.y, t.x + w, t.y + h


def test_mask_from_logits_covers_the_scaled_square():
    fm = FrameMap((2000, 2000), (2000, 2000), Window(500, 500, 1000, 600), "patch")
    mask = mask_from_logits(_logits((100, 132), (60, 92)), fm)
    ax, ay = 1000 / 256, 600 / 256
    x0, y0, x1, y1 = _bbox(mask)
    for got, want, cell in [(x0, 60 * ax, ax), (x1, 92 * ax, ax), (y0, 100 * ay, ay), (y1, 132 * ay, ay)]:
        assert abs(got - want) <= cell
    assert mask.area == pytest.approx(32 * ax * 32 * ay, rel=0.1)
    assert mask.bits[mask.bits.shape[0] // 2, mask.bits.shape[1] // 2]


@pytest.mark.parametrize("patch_size", [(1024, 1024), (3000, 2200), (700, 1300)])
def test_mask_from_logits_is_what_sam2_upsamples(patch_size, monkeypatch):
    """SAM2's predictor upsamples the low-resolution logits with bilinear F.interpolate
    (align_corners=False) and thresholds at 0; ours gives the same mask, band after band."""
    import torch
    import torch.nn.functional as F

    from sam2plus import bands

    rng = np.random.default_rng(3)
    logits = cv2.resize(rng.normal(0, 4, (16, 16)).astype(np.float32), (256, 256), interpolation=cv2.INTER_CUBIC)
    width, height = patch_size
    fm = FrameMap((width, height), (width, height), Window(0, 0, width, height), "fullframe")
    reference = F.interpolate(
        torch.from_numpy(logits)[None, None], (height, width), mode="bilinear", align_corners=False
    )[0, 0].numpy()

    def full(mask):
        out = np.zeros((height, width), bool)
        out[mask.y : mask.y + mask.bits.shape[0], mask.x : mask.x + mask.bits.shape[1]] = mask.bits
        return out

    ours = full(mask_from_logits(logits, fm))
    differ = ours != (reference > 0)
    # warpAffine places its samples to 1/32 of a logit cell: only pixels whose logit lies within
    # that error of 0 may come out on the other side.
    steepest = max(np.abs(np.diff(logits, axis=0)).max(), np.abs(np.diff(logits, axis=1)).max())
    assert np.abs(reference[differ]).max(initial=0) <= steepest / 32
    assert np.count_nonzero(differ) < 0.001 * width * height
    monkeypatch.setattr(bands, "BAND_PIXELS", 10**12)
    assert np.array_equal(full(mask_from_logits(logits, fm)), ours), "bands leave no seam"


def test_mask_from_logits_is_clipped_to_the_valid_box():
    fm = FrameMap((1000, 1000), (1000, 1000), Window(-300, 800, 1024, 1024), "patch")
    assert fm.valid_box() == (300, 0, 1024, 200)
    mask = mask_from_logits(_logits((0, 128), (0, 128)), fm)  # the top-left quarter of the patch
    x0, y0, x1, y1 = _bbox(mask)
    assert (x0, y0) == (300, 0)
    assert x1 == pytest.approx(512, abs=4) and y1 == 200
    assert mask.area == (x1 - 300) * 200


def test_mask_from_logits_entirely_outside_the_valid_box_is_empty():
    fm = FrameMap((1000, 1000), (1000, 1000), Window(-600, 0, 1024, 1024), "patch")
    assert mask_from_logits(_logits((0, 256), (0, 64)), fm).area == 0


def test_all_negative_logits_give_an_empty_mask():
    fm = FrameMap((1024, 1024), (1024, 1024), Window(0, 0, 1024, 1024), "fullframe")
    mask = mask_from_logits(np.full((256, 256), -3.0, np.float32), fm)
    assert mask.area == 0
    assert mask.bits.size == 0


def test_mask_in_image_identity_shifts_by_the_window():
    fm = FrameMap((4000, 3000), (4000, 3000), Window(1488, 988, 1024, 1024), "patch")
    out = mask_in_image(Mask(np.ones((30, 20), bool), 100, 200), fm)
    assert _bbox(out) == (1588, 1188, 1608, 1218)
    assert out.area == 600


def test_mask_in_image_clips_to_the_image():
    fm = FrameMap((500, 400), (500, 400), Window(-100, -50, 1024, 1024), "patch")
    out = mask_in_image(Mask(np.ones((40, 40), bool), 80, 40), fm)
    assert _bbox(out) == (0, 0, 20, 30)


@pytest.mark.parametrize("resize, scale", [(0.5, 2), (0.25, 4)])
def test_mask_in_image_scales_back_up(resize, scale):
    fm = plan_frame((4000, 2000), _point(0.5, 0.5), _params(fullframe_resize=resize))
    out = mask_in_image(Mask(np.ones((50, 50), bool), 10, 20), fm)
    x0, y0, x1, y1 = _bbox(out)
    assert (x0, y0) == pytest.approx((10 * scale, 20 * scale), abs=1)
    assert (x1 - x0, y1 - y0) == pytest.approx((50 * scale, 50 * scale), abs=1)
    assert out.area == pytest.approx((50 * scale) ** 2, rel=0.05)


def test_mask_in_image_with_resize_and_patch_window():
    fm = plan_frame((4000, 2000), _point(0.5, 0.5), _params(fullframe_resize=0.5, subpatching={"patch_size": 512}))
    out = mask_in_image(Mask(np.ones((50, 50), bool), 10, 10), fm)
    x0, y0, x1, y1 = _bbox(out)
    assert (x0, y0) == pytest.approx(((744 + 10) * 2, (244 + 10) * 2), abs=1)
    assert (x1 - x0, y1 - y0) == pytest.approx((100, 100), abs=1)


def test_mask_in_image_with_a_scale_per_axis():
    fm = plan_frame((1000, 1000), _point(0.5, 0.5), _params(fullframe_resize=[500, 250]))
    out = mask_in_image(Mask(np.ones((10, 10), bool), 100, 100), fm)
    x0, y0, x1, y1 = _bbox(out)
    assert (x0, y0, x1 - x0, y1 - y0) == pytest.approx((200, 400, 20, 40), abs=1)


def test_mask_in_image_of_an_empty_mask_is_empty():
    fm = plan_frame((1000, 1000), _point(0.5, 0.5), _params(fullframe_resize=0.5))
    assert mask_in_image(Mask.empty(), fm).area == 0


def test_mask_in_image_of_a_large_ragged_mask_is_the_same_in_bands(monkeypatch):
    """A downscaled frame's mask mapped back band after band equals one pass, and keeps its area."""
    from sam2plus import bands

    fm = plan_frame((6000, 4000), _point(0.5, 0.5), _params(fullframe_resize=0.3))
    rng = np.random.default_rng(5)
    bits = cv2.resize(rng.normal(0, 1, (30, 40)).astype(np.float32), (1500, 1100)) > 0
    mask = Mask(bits, 150, 40)
    banded = mask_in_image(mask, fm)
    monkeypatch.setattr(bands, "BAND_PIXELS", 10**12)
    whole = mask_in_image(mask, fm)
    assert (banded.x, banded.y) == (whole.x, whole.y) and np.array_equal(banded.bits, whole.bits)
    assert banded.area == pytest.approx(mask.area / 0.3**2, rel=0.01)
