"""encode_brush_rle must equal label_studio_sdk's mask2rle on the full image, integer for integer."""

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle, encode_rle, mask2rle

from sam2plus import bands
from sam2plus.rle import _encode_runs, encode_brush_rle


def _full(mask, x0, y0, width, height, value=255):
    """The full-resolution image the sdk would be given (reference only)."""
    full = np.zeros((height, width), np.uint8)
    h, w = mask.shape
    xs, xe, ys, ye = max(x0, 0), min(x0 + w, width), max(y0, 0), min(y0 + h, height)
    if xs < xe and ys < ye:
        part = mask[ys - y0 : ye - y0, xs - x0 : xe - x0] != 0
        full[ys:ye, xs:xe][part] = value
    return full


def _check(mask, x0, y0, width, height, value=255):
    ours = encode_brush_rle(mask, x0, y0, width, height, value)
    full = _full(mask, x0, y0, width, height, value)
    assert ours == mask2rle(full)
    assert all(type(b) is int and 0 <= b <= 255 for b in ours)
    return ours, full


def _disc(radius):
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (xx * xx + yy * yy <= radius * radius).astype(np.uint8)


@pytest.mark.parametrize("band_pixels", [None, 1, 300], ids=["default-bands", "one-row-bands", "few-row-bands"])
def test_random_masks_with_offsets_and_clipping(band_pixels, monkeypatch):
    if band_pixels:  # masks taller than a band: runs must cross band boundaries unchanged
        monkeypatch.setattr(bands, "BAND_PIXELS", band_pixels)
    rng = np.random.default_rng(1234)
    for _ in range(400):
        width, height = (int(v) for v in rng.integers(1, 70, 2))
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        x0 = int(rng.integers(-w - 5, width + 5))
        y0 = int(rng.integers(-h - 5, height + 5))
        mask = rng.random((h, w)) < rng.choice([0.02, 0.3, 0.7, 0.98])
        if rng.random() < 0.5:
            mask = mask.astype(np.uint8) * rng.integers(1, 256)
        value = int(rng.choice([255, 1, 128, int(rng.integers(0, 256))]))
        _check(mask, x0, y0, width, height, value)


def test_decode_gives_back_full_mask():
    rng = np.random.default_rng(7)
    for _ in range(30):
        width, height = (int(v) for v in rng.integers(1, 40, 2))
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        x0, y0 = int(rng.integers(-w, width)), int(rng.integers(-h, height))
        mask = rng.random((h, w)) < 0.5
        ours, full = _check(mask, x0, y0, width, height)
        decoded = decode_rle(bytes(ours)).reshape(height, width, 4)
        for c in range(4):
            np.testing.assert_array_equal(decoded[:, :, c], full)


@pytest.mark.parametrize(
    "mask, x0, y0, width, height",
    [
        (np.zeros((5, 5), bool), 3, 3, 20, 10),  # empty mask
        (np.ones((0, 0), bool), 0, 0, 7, 3),  # zero-size mask
        (np.ones((5, 5), bool), 20, 0, 20, 10),  # just right of the image
        (np.ones((5, 5), bool), 0, 10, 20, 10),  # just below
        (np.ones((5, 5), bool), -5, 0, 20, 10),  # just left
        (np.ones((5, 5), bool), 0, -5, 20, 10),  # just above
        (np.ones((10, 20), bool), 0, 0, 20, 10),  # whole image
        (np.ones((30, 40), bool), -7, -9, 20, 10),  # larger than the image, covering it
        (np.ones((1, 1), bool), 0, 0, 1, 1),  # 1-pixel image, full
        (np.zeros((1, 1), bool), 0, 0, 1, 1),  # 1-pixel image, empty
        (np.ones((1, 1), bool), 0, 0, 20, 10),  # 1-pixel mask in each corner and the middle
        (np.ones((1, 1), bool), 19, 0, 20, 10),
        (np.ones((1, 1), bool), 0, 9, 20, 10),
        (np.ones((1, 1), bool), 19, 9, 20, 10),
        (np.ones((1, 1), bool), 7, 4, 20, 10),
        (np.ones((3, 20), bool), 0, 4, 20, 10),  # full-width rows merge into one run
        (np.ones((10, 1), bool), 19, 0, 20, 10),  # right-edge column
        (np.ones((10, 1), bool), 0, 0, 20, 10),  # left-edge column
        (np.ones((4, 6), bool), 16, 7, 20, 10),  # clipped at bottom-right
        (np.ones((4, 6), bool), -2, -1, 20, 10),  # clipped at top-left
        (np.indices((9, 20)).sum(0) % 2 == 0, 0, 1, 20, 10),  # checkerboard: all runs of one pixel
        (np.indices((10, 20)).sum(0) % 2 == 1, 0, 0, 20, 10),
        (np.ones((1, 20), bool), 0, 9, 20, 10),  # last row
        (np.ones((1, 1), bool), 0, 0, 1, 7),  # 1-pixel-wide image
    ],
)
def test_edge_cases(mask, x0, y0, width, height):
    _check(mask, x0, y0, width, height)


def test_value_zero_and_nonbinary_mask_values():
    mask = np.arange(12, dtype=np.uint8).reshape(3, 4)  # one zero, the rest inside whatever their value
    _check(mask, 2, 1, 9, 6, value=0)
    ours, full = _check(mask, 2, 1, 9, 6, value=200)
    assert (full == 200).sum() == 11


@pytest.mark.parametrize("run", [1, 2, 3, 4, 5, 63, 64, 65, 16383, 16384, 16385, 32768, 32769, 49153])
def test_run_length_boundaries(run):
    """Foreground and background runs of 4*run bytes around the 3/4/8/16-bit limits and the 2**16 split."""
    width = run + 40000
    _check(np.ones((1, run), bool), 0, 0, width, 1)  # foreground at the start
    _check(np.ones((1, run), bool), width - run, 0, width, 1)  # at the end
    _check(np.ones((1, 3), bool), run, 0, run + 3 + run, 1)  # background of `run` on both sides
    _check(np.ones((1, 1), bool), 0, 0, 1, run)  # column image: one pixel, then a background run


@pytest.mark.parametrize("pixels", [16384, 16385, 32768, 32769, 3 * 16384, 3 * 16384 + 1])
def test_whole_image_long_runs(pixels):
    """A single run of 4*pixels bytes; 2**16 bytes is the longest single record."""
    _check(np.zeros((1, 1), bool), 0, 0, pixels, 1)
    _check(np.ones((1, pixels), bool), 0, 0, pixels, 1)
    _check(np.ones((2, 3), bool), pixels - 2, 0, pixels, 1)  # padding bits vary with the tail


def test_disc_in_large_image():
    disc = _disc(150)
    ours, full = _check(disc, 1234, 987, 3000, 2000)
    assert mask2rle(np.zeros((2000, 3000), np.uint8)) != ours
    _check(disc, 2900, 1900, 3000, 2000)  # clipped at the bottom-right corner
    _check(disc, -200, -100, 3000, 2000)  # clipped at the top-left corner


def test_many_small_runs():
    rng = np.random.default_rng(99)
    mask = rng.random((300, 400)) < 0.5
    _check(mask, 37, 21, 500, 400)
    _check(mask, 0, 0, 400, 300)  # fills the image, rows merge at the edges


def _record_bits(run_bytes):
    if run_bytes <= 8:
        return 14
    if run_bytes <= 16:
        return 15
    if run_bytes <= 256:
        return 19
    return 27 * ((run_bytes - 1) // 2**16 + 1)


def test_byte_padding_covers_every_remainder():
    """The sdk pads to whole bytes and adds a whole zero byte when already aligned; hit all 8 remainders."""
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(200):
        width = int(rng.integers(1, 30))
        mask = rng.random((1, width)) < 0.5
        ours, full = _check(mask, 0, 0, width, 1)
        row = full[0]
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(row)) + 1, [width]))
        bits = 32 + 5 + 4 * 4 + sum(_record_bits(4 * int(n)) for n in np.diff(bounds))
        assert len(ours) == bits // 8 + 1
        if bits % 8 == 0:
            assert ours[-1] == 0
        seen.add(bits % 8)
    assert seen == set(range(8))


def test_encode_runs_matches_encode_rle_on_arbitrary_arrays():
    """The packer itself, on 1-D data with runs of length 1 and arbitrary values."""
    rng = np.random.default_rng(5)
    for _ in range(60):
        n = int(rng.integers(1, 300))
        arr = rng.integers(0, 256, n) * (rng.random(n) < 0.3)
        arr = np.repeat(arr, rng.integers(1, 40, n))
        change = np.flatnonzero(np.diff(arr)) + 1
        bounds = np.concatenate(([0], change, [len(arr)]))
        assert _encode_runs(np.diff(bounds), arr[bounds[:-1]], len(arr)) == encode_rle(arr)
    arr = np.array([5, 6, 6, 7] + [0] * 70000 + [9], np.int64)
    assert _encode_runs(np.array([1, 2, 1, 70000, 1]), np.array([5, 6, 7, 0, 9]), len(arr)) == encode_rle(arr)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        encode_brush_rle(np.ones((2, 2, 2), bool), 0, 0, 5, 5)
    with pytest.raises(ValueError):
        encode_brush_rle(np.ones((2, 2), bool), 0, 0, 0, 5)
    with pytest.raises(ValueError):
        encode_brush_rle(np.ones((2, 2), bool), 0, 0, 5, 5, value=256)
