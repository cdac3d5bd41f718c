"""sam2plus.bitmask: Label Studio's Bitmask PNG, read back as the editor reads it (alpha > 0 is the
region), decoded independently by Pillow; and the PNG of a 100-megapixel image built without a
full-size array."""

from __future__ import annotations

import base64
import io
import tracemalloc

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface
from PIL import Image

from sam2plus.bitmask import DATA_URL_PREFIX, bitmask_data_url, decode_bitmask, encode_bitmask_png
from sam2plus.masks import Mask
from sam2plus.rle import encode_brush_rle


def placed(bits: np.ndarray, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """The full-size image of `bits` placed at (x0, y0), clipped, pixel by pixel."""
    full = np.zeros((height, width), bool)
    for (r, c), inside in np.ndenumerate(bits):
        if inside and 0 <= y0 + r < height and 0 <= x0 + c < width:
            full[y0 + r, x0 + c] = True
    return full


def rgba(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGBA"))


@pytest.mark.parametrize("seed", range(40))
def test_the_png_is_opaque_black_exactly_on_the_mask_and_transparent_elsewhere(seed):
    rng = np.random.default_rng(seed)
    width, height = (int(v) for v in rng.integers(1, 90, 2))
    bits = rng.random(tuple(int(v) for v in rng.integers(1, 50, 2))) < 0.5
    x0, y0 = (int(v) for v in rng.integers(-30, 90, 2))
    pixels = rgba(encode_bitmask_png(bits, x0, y0, width, height))
    assert pixels.shape == (height, width, 4), "the PNG has the image's size"
    assert np.array_equal(pixels[:, :, 3] > 0, placed(bits, x0, y0, width, height))
    assert set(np.unique(pixels[:, :, 3])) <= {0, 255} and not pixels[:, :, :3].any(), "black, alpha 0 or 255"


@pytest.mark.parametrize("seed", range(10))
def test_the_png_holds_the_same_pixels_as_the_brush_rle(seed):
    rng = np.random.default_rng(100 + seed)
    bits = rng.random((37, 53)) < 0.3
    x0, y0 = (int(v) for v in rng.integers(-10, 60, 2))
    brush = decode_rle(encode_brush_rle(bits, x0, y0, 70, 50)).reshape(50, 70, 4)[:, :, 3] > 0
    assert np.array_equal(rgba(encode_bitmask_png(bits, x0, y0, 70, 50))[:, :, 3] > 0, brush)


def test_an_empty_or_outside_mask_is_a_transparent_png_of_the_image_size():
    for bits, x0, y0 in ((np.zeros((4, 4), bool), 1, 1), (np.ones((4, 4), bool), 100, 2)):
        pixels = rgba(encode_bitmask_png(bits, x0, y0, 20, 10))
        assert pixels.shape == (10, 20, 4) and not pixels[:, :, 3].any()


def test_decode_reads_the_region_back_cropped_with_the_image_size():
    bits = np.zeros((30, 40), bool)
    bits[5:9, 7:20] = True
    mask, size = decode_bitmask(bitmask_data_url(bits, 100, 50, 300, 200))
    assert size == (300, 200) and (mask.x, mask.y) == (107, 55) and mask.bits.shape == (4, 13) and mask.bits.all()


def test_decode_reads_other_backends_pngs_by_alpha():
    """A grey PNG without alpha (as HumanSignal's example backend sends) is all opaque: the editor
    shows the whole image as the region; an RGBA one is read by its alpha."""
    grey = np.zeros((10, 10), np.uint8)
    grey[2:4, 2:4] = 255
    for image, area in ((Image.fromarray(grey, "L"), 100), (Image.fromarray(np.dstack([grey] * 4), "RGBA"), 4)):
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        mask, _ = decode_bitmask(DATA_URL_PREFIX + base64.b64encode(buffer.getvalue()).decode())
        assert mask.area == area


def test_label_studio_sdk_validates_the_value():
    config = (
        '<View><Image name="image" value="$image" smoothing="false"/>'
        '<BitmaskLabels name="mask" toName="image"><Label value="cell"/></BitmaskLabels></View>'
    )
    control = LabelInterface(config).get_control("mask")
    value = {"imageDataURL": bitmask_data_url(np.ones((3, 3), bool), 1, 1, 8, 8), "bitmasklabels": ["cell"]}
    assert control.validate_value(value)
    assert not control.validate_value({"rle": [1, 2], "bitmasklabels": ["cell"]})


def test_a_100_megapixel_png_is_built_without_a_full_size_array():
    side = 10_000
    yy, xx = np.ogrid[:1200, :1200]
    disc = (yy - 600) ** 2 + (xx - 600) ** 2 < 590**2
    tracemalloc.start()
    try:
        png = encode_bitmask_png(disc, 4321, 5555, side, side)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB traced (a packed full-size mask alone is 12 MiB)"
    assert len(png) < 100_000
    mask, size = decode_bitmask(DATA_URL_PREFIX + base64.b64encode(png).decode(), max_pixels=side * side)
    tight = Mask(disc).tight()
    assert size == (side, side) and (mask.x, mask.y) == (4321 + tight.x, 5555 + tight.y)
    assert np.array_equal(mask.bits, tight.bits)
