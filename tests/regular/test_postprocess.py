"""Mask clean-up on synthetic masks with known answers."""

import math
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from sam2plus import postprocess as postprocess_module
from sam2plus.masks import Mask
from sam2plus.params import MAX_DILATE_PX, Postprocess
from sam2plus.postprocess import dilate, dilation_radius, fill_holes, keep_large_components, postprocess

BIG = (0, 0, 10_000, 10_000)


def _disc(radius, size=None, centre=None):
    size = size or 2 * radius + 1
    cy, cx = centre or (size // 2, size // 2)
    yy, xx = np.mgrid[:size, :size]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2


def _blobs():
    """Squares of area 400, 225 and 100 (8-connected components kept apart)."""
    bits = np.zeros((60, 120), bool)
    bits[5:25, 5:25] = True  # 400
    bits[5:20, 40:55] = True  # 225  (>= 0.5 * 400)
    bits[30:40, 80:90] = True  # 100  (< 0.5 * 400)
    return Mask(bits, 7, 3)


def _in_grid(mask: Mask, height=200, width=200) -> np.ndarray:
    grid = np.zeros((height, width), bool)
    h, w = mask.bits.shape
    grid[mask.y : mask.y + h, mask.x : mask.x + w] |= mask.bits
    return grid


@pytest.mark.parametrize("threshold, expected_area", [(1, 400), (0.5, 625), (0.25, 725), (0, 725)])
def test_mask_size_threshold(threshold, expected_area):
    out = postprocess(_blobs(), Postprocess(mask_size_threshold=threshold), BIG)
    assert out.area == expected_area


def test_threshold_one_keeps_only_the_largest_blob_in_place():
    out = keep_large_components(_blobs(), 1.0)
    assert out.area == 400
    assert (out.x, out.y, out.bits.shape) == (7 + 5, 3 + 5, (20, 20))
    assert out.bits.all()


def test_threshold_zero_keeps_everything():
    blobs = _blobs()
    assert np.array_equal(_in_grid(keep_large_components(blobs, 0.0)), _in_grid(blobs))
    assert postprocess(blobs, Postprocess(), BIG) is blobs


def test_diagonal_pixels_are_one_component():
    bits = np.zeros((10, 10), bool)
    bits[0:3, 0:3] = True
    bits[3, 3] = True  # touches the square only by a corner
    bits[7:9, 7:9] = True
    out = keep_large_components(Mask(bits), 1.0)
    assert out.area == 10


def test_fill_holes_fills_an_annulus():
    bits = _disc(20) & ~_disc(8, 41, (20, 20))
    mask = Mask(bits, 50, 60)
    out = fill_holes(mask)
    assert out.area == _disc(20).sum()
    assert (out.x, out.y) == (50, 60)
    assert out.bits[20, 20]


def test_fill_holes_leaves_a_notch_open_to_the_outside():
    bits = np.zeros((30, 30), bool)
    bits[:, :] = True
    bits[10:20, 0:20] = False  # a slot reaching the left edge
    out = fill_holes(Mask(bits))
    assert out.area == bits.sum()
    assert not out.bits[15, 10]


def test_fill_holes_of_an_inner_hole_touching_the_mask_box_diagonally():
    """A hole is closed by 8-connected foreground: its 4-connected background does not reach out."""
    bits = np.ones((5, 5), bool)
    bits[2, 2] = False
    bits[0, 0] = False  # a notch at the corner of the mask's box stays
    out = fill_holes(Mask(bits))
    assert out.bits[2, 2]
    assert not out.bits[0, 0]


def test_postprocess_fill_holes_setting():
    ring = Mask(_disc(15) & ~_disc(5, 31, (15, 15)))
    assert postprocess(ring, Postprocess(fill_holes=True), BIG).area == _disc(15).sum()
    assert postprocess(ring, Postprocess(fill_holes=False, dilate=0), BIG).area == ring.area


@pytest.mark.parametrize("side, r", [(10, 1), (10, 3), (25, 7), (1, 5)])
def test_dilate_int_grows_a_square_by_r_on_each_side(side, r):
    bits = np.ones((side, side), bool)
    out = postprocess(Mask(bits, 100, 200), Postprocess(dilate=r), BIG).tight()
    assert out.bits.shape == (side + 2 * r, side + 2 * r)
    assert (out.x, out.y) == (100 - r, 200 - r)
    # the straight edges have moved out by exactly r
    assert out.bits[r + side // 2, 0] and out.bits[0, r + side // 2]
    # a disc, not a square, was used: the corners are rounded
    if r >= 3:
        assert not out.bits[0, 0]


def test_dilation_radius():
    disc = Mask(_disc(20))
    assert dilation_radius(disc, 4) == 4.0
    assert dilation_radius(disc, 0.5) == pytest.approx(0.5 * math.sqrt(disc.area / math.pi))
    assert dilation_radius(disc, 0.5) == pytest.approx(10, abs=0.1)


def test_dilate_float_is_a_fraction_of_the_equivalent_radius():
    disc = Mask(_disc(20), 300, 300)
    out = postprocess(disc, Postprocess(dilate=0.5), BIG).tight()
    assert out.bits.shape == (61, 61)  # radius 20 + 10
    assert (out.x, out.y) == (290, 290)
    assert out.area == pytest.approx(math.pi * 30**2, rel=0.02)


def test_dilate_int_and_float_of_one_value_differ():
    """1 is one pixel; 1.0 is a whole equivalent radius."""
    disc = Mask(_disc(20), 300, 300)
    assert postprocess(disc, Postprocess(dilate=1), BIG).tight().bits.shape == (43, 43)
    assert postprocess(disc, Postprocess(dilate=1.0), BIG).tight().bits.shape == (81, 81)


def test_dilate_zero_is_a_noop():
    disc = Mask(_disc(5))
    assert postprocess(disc, Postprocess(dilate=0.0), BIG).area == disc.area
    assert dilate(disc, 0.4, BIG).area == disc.area


def test_dilation_stays_within_bounds():
    bits = np.ones((10, 10), bool)
    mask = Mask(bits, 2, 95)  # 2 px from the left bound, touching the bottom bound
    bounds = (0, 0, 120, 105)
    out = dilate(mask, 6, bounds)
    h, w = out.bits.shape
    assert out.x >= 0 and out.y >= 0
    assert out.x + w <= 120 and out.y + h <= 105
    tight = out.tight()
    assert tight.x == 0  # reached the left bound and stopped
    assert tight.y + tight.bits.shape[0] == 105
    assert tight.x + tight.bits.shape[1] == 2 + 10 + 6
    assert tight.y == 95 - 6


def test_dilation_respects_non_zero_bounds_origin():
    mask = Mask(np.ones((4, 4), bool), 50, 50)
    out = dilate(mask, 10, (45, 48, 200, 200))
    assert (out.x, out.y) == (45, 48)
    assert out.tight().x == 45 and out.tight().y == 48


# -- dilation by distance transform (issue 11 finding 4) ------------------------------------


def _kernel_dilate(mask: Mask, r: int) -> np.ndarray:
    """The previous implementation, as a reference: OpenCV's elliptic disc kernel of 2r+1 px,
    whose cost grows with r squared (dilate: 1024 took 33 s on a 1024x1024 mask)."""
    canvas = np.pad(mask.bits, r).astype(np.uint8)
    return cv2.dilate(canvas, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))).astype(bool)


def _known_shapes() -> dict[str, Mask]:
    l_shape = np.zeros((60, 60), bool)
    l_shape[:, :15] = l_shape[45:, :] = True
    shapes = {
        "square": np.ones((30, 30), bool),
        "disc": _disc(40),
        "L": l_shape,
        "ring": _disc(30) & ~_disc(20, 61, (30, 30)),
    }
    return {name: Mask(bits, 100, 100) for name, bits in shapes.items()}


@pytest.mark.parametrize("r", [1, 2, 3, 8, 20, 50])
@pytest.mark.parametrize("shape", ["square", "disc", "L", "ring"])
def test_dilation_matches_the_disc_kernel_it_replaces(shape, r):
    """The distance transform and the old elliptic kernel agree but for a few rim pixels, where the
    kernel rounds each row's half-width and the transform is exact."""
    mask = _known_shapes()[shape]
    out = dilate(mask, r, BIG)
    grid = np.zeros((mask.bits.shape[0] + 2 * r, mask.bits.shape[1] + 2 * r), bool)
    y, x = out.y - (mask.y - r), out.x - (mask.x - r)
    grid[y : y + out.bits.shape[0], x : x + out.bits.shape[1]] = out.bits
    reference = _kernel_dilate(mask, r)
    differ = grid ^ reference
    assert differ.sum() / (grid | reference).sum() < 0.05, "IoU with the kernel's result above 0.95"
    if r == 1:
        assert not differ.any(), "radius 1 is the same 4-neighbour cross"
    # every pixel that differs lies on the rim: between r - 1 and r + 1 from the mask
    outside = np.pad(~mask.bits, r, constant_values=True).astype(np.uint8)
    distance = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    assert np.all((distance[differ] > r - 1) & (distance[differ] <= r + 1))


@pytest.mark.parametrize("r", [2, 5, 17, 100])
def test_dilating_one_pixel_gives_the_euclidean_disc(r):
    out = dilate(Mask(np.ones((1, 1), bool), 500, 500), r, BIG)
    assert (out.x, out.y) == (500 - r, 500 - r)
    assert np.array_equal(out.bits, _disc(r))


@pytest.mark.parametrize("r", [1, 6, 25])
def test_dilation_in_bands_of_rows_equals_one_transform_over_everything(monkeypatch, r):
    rng = np.random.default_rng(r)
    mask = Mask(rng.random((90, 70)) < 0.01, 300, 300)
    whole = dilate(mask, r, BIG)
    monkeypatch.setattr(postprocess_module, "DILATE_BAND_ROWS", 7)
    banded = dilate(mask, r, BIG)
    assert (banded.x, banded.y) == (whole.x, whole.y) and np.array_equal(banded.bits, whole.bits)


def test_a_float_dilate_is_capped_at_the_pixel_limit():
    """dilate 2.0 on a disc of radius 400 would be 800 px; the radius stops at MAX_DILATE_PX."""
    disc = Mask(_disc(400), 1000, 1000)
    assert dilation_radius(disc, 2.0) == MAX_DILATE_PX == 256
    out = postprocess(disc, Postprocess(dilate=2.0), BIG).tight()
    assert out.bits.shape == (801 + 2 * 256, 801 + 2 * 256)
    assert (out.x, out.y) == (1000 - 256, 1000 - 256)


def test_the_largest_dilation_allowed_costs_little_cpu():
    """The worst case /setup allows (256 px on a 2048x2048 patch full of mask) in a process
    limited to 15 s of CPU time: the disc kernel took about 22 s of CPU here, the transform 0.1 s."""
    code = textwrap.dedent("""
        import resource, numpy as np
        resource.setrlimit(resource.RLIMIT_CPU, (15, 15))
        from sam2plus.masks import Mask
        from sam2plus.params import MAX_DILATE_PX
        from sam2plus.postprocess import dilate
        bits = np.zeros((2048, 2048), bool)
        bits[500:1500, 300:1700] = True
        bits[::7, ::5] = True
        out = dilate(Mask(bits), MAX_DILATE_PX, (0, 0, 2048, 2048))
        print(out.area)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) == 2048 * 2048


def test_empty_mask_is_left_alone():
    empty = Mask.empty()
    assert postprocess(empty, Postprocess(mask_size_threshold=1, fill_holes=True, dilate=5), BIG).area == 0


# -- order: threshold -> fill -> dilate -----------------------------------------------------


def _thin_ring_and_blob():
    """A thin ring (small area, big hole) beside a solid square bigger than the ring but smaller
    than the ring once filled."""
    bits = np.zeros((80, 160), bool)
    ring = _disc(30, 61) & ~_disc(28, 61, (30, 30))  # ~360 px, ~2830 filled
    bits[10:71, 5:66] = ring
    bits[20:60, 100:140] = True  # 1600 px
    return Mask(bits), ring.sum(), _disc(30).sum()


def test_threshold_runs_before_fill_holes():
    mask, ring_area, filled_ring_area = _thin_ring_and_blob()
    assert ring_area < 1600 < filled_ring_area
    out = postprocess(mask, Postprocess(mask_size_threshold=1, fill_holes=True), BIG)
    assert out.area == 1600  # filling first would have kept the filled ring instead
    assert keep_large_components(fill_holes(mask), 1).area == filled_ring_area


def test_threshold_runs_before_dilate():
    """Dilating first would merge the small blob into the big one, so it would survive."""
    bits = np.zeros((40, 80), bool)
    bits[10:30, 10:30] = True  # 400
    bits[15:19, 33:37] = True  # 16, 3 px away
    mask = Mask(bits)
    out = postprocess(mask, Postprocess(mask_size_threshold=1, dilate=3), BIG)
    expected = dilate(keep_large_components(mask, 1), 3, BIG)
    assert out.area == expected.area
    assert out.area < keep_large_components(dilate(mask, 3, BIG), 1).area


def test_fill_holes_runs_before_dilate():
    """A C shape whose mouth closes under dilation: filling after dilating would fill it."""
    bits = _disc(30) & ~_disc(22, 61, (30, 30))
    bits[27:34, 50:61] = False  # a 7 px mouth on the right
    mask = Mask(bits, 20, 20)
    out = postprocess(mask, Postprocess(fill_holes=True, dilate=5), BIG)
    grid = _in_grid(out)
    assert not grid[20 + 30, 20 + 30]  # the centre stays empty
    assert out.area == dilate(fill_holes(mask), 5, BIG).area
    assert fill_holes(dilate(mask, 5, BIG)).area > out.area


def test_full_chain_result():
    mask, _, _ = _thin_ring_and_blob()
    out = postprocess(mask, Postprocess(mask_size_threshold=1, fill_holes=True, dilate=2), BIG).tight()
    assert out.bits.shape == (44, 44)
    assert (out.x, out.y) == (98, 18)
