"""sam2plus.images: header reading and decoding to oriented 8-bit RGB (also into a given buffer).

References are Pillow's own decoders (ImageOps.exif_transpose(...).convert("RGB")): the frame
must show exactly what a browser shows for the file, because prompt coordinates refer to it.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import threading
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from sam2plus import images
from sam2plus.errors import RequestError
from sam2plus.images import decode_frame, read_info

FIELD = "data.image"
BIG = 10**9  # pixel limit that never triggers

# The size an image stored as W x H is displayed at, for each EXIF orientation.
SWAPS = {1: False, 2: False, 3: False, 4: False, 5: True, 6: True, 7: True, 8: True}


def _blocky(width=64, height=40, block=8, seed=1):
    """Uniform 8x8 blocks on the JPEG grid, every block a different colour: JPEG at quality 100
    reproduces them nearly exactly, and any wrong flip/rotation moves whole distinct blocks."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (height // block, width // block, 3), dtype=np.uint8)
    return np.kron(colours, np.ones((block, block, 1), dtype=np.uint8))


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _reference(path):
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def _decode(path, frame_size=None):
    """Decode to a new array and into a given buffer (as the frame store does): both must agree."""
    info = read_info(path, BIG, FIELD)
    size = frame_size or info.size
    frame = decode_frame(path, info, size, FIELD)
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    out = np.zeros((size[1], size[0], 3), np.uint8)
    assert decode_frame(path, info, size, FIELD, out) is out
    assert np.array_equal(out, frame), "decoding into a buffer must give the same frame"
    return info, frame


def _diff(a, b):
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


# ---------------------------------------------------------------- EXIF orientation


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_orientation_matches_pillow(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(_blocky()).save(path, quality=100, subsampling=0, exif=_exif(orientation))

    info, frame = _decode(path)

    expected_size = (40, 64) if SWAPS[orientation] else (64, 40)
    assert info.size == expected_size
    assert info.orientation == orientation
    assert info.format == "JPEG"
    reference = _reference(path)
    assert (frame.shape[1], frame.shape[0]) == expected_size == (reference.shape[1], reference.shape[0])
    assert _diff(frame, reference).max() <= 8
    assert _diff(frame, reference).mean() < 1.5
    if orientation in (2, 3, 4):  # same shape as stored: the content check can tell them apart
        with Image.open(path) as image:
            stored = np.asarray(image.convert("RGB"))
        assert _diff(frame, stored).mean() > 20


@pytest.mark.parametrize("orientation", range(1, 9))
def test_png_orientation_matches_pillow(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.png"
    stored = _blocky(width=24, height=16, block=4)
    Image.fromarray(stored).save(path, exif=_exif(orientation))

    info, frame = _decode(path)

    assert info.size == ((16, 24) if SWAPS[orientation] else (24, 16))
    assert info.orientation == orientation
    np.testing.assert_array_equal(frame, _reference(path))
    # Independent of Pillow: orientation 6 is stored rotated 90 degrees counter-clockwise.
    if orientation == 6:
        np.testing.assert_array_equal(frame, np.rot90(stored, k=-1))
    if orientation == 8:
        np.testing.assert_array_equal(frame, np.rot90(stored, k=1))


def test_orientation_with_downscaled_frame(tmp_path):
    """Orientation 6 and a frame smaller than the image: size and content stay consistent."""
    path = tmp_path / "o6.jpg"
    Image.fromarray(_blocky(width=128, height=64, block=16)).save(path, quality=100, subsampling=0, exif=_exif(6))
    info, frame = _decode(path, (32, 64))
    assert info.size == (64, 128)
    assert frame.shape == (64, 32, 3)
    reference = cv2.resize(_reference(path), (32, 64), interpolation=cv2.INTER_AREA)
    assert _diff(frame, reference).mean() < 3


def test_mpo_camera_jpeg_orientation(tmp_path):
    """Phones write JPEGs with an MPF segment, which Pillow opens as format "MPO": the browser
    rotates them like any JPEG, so read_info and decode_frame must agree with it."""
    path = tmp_path / "phone.jpg"
    picture = Image.fromarray(_blocky())
    picture.save(path, format="MPO", save_all=True, append_images=[picture], quality=100, exif=_exif(6))
    with Image.open(path) as opened:
        assert opened.format == "MPO"  # precondition: this really is the MPO code path

    info, frame = _decode(path)

    reference = _reference(path)
    assert info.size == (40, 64), f"displayed size is 40x64, read_info says {info.size}"
    assert frame.shape == reference.shape
    assert _diff(frame, reference).mean() < 1.5


# ---------------------------------------------------------------- modes


def test_grayscale_jpeg(tmp_path):
    path = tmp_path / "gray.jpg"
    Image.fromarray(_blocky()[..., 0]).save(path, quality=100)
    info, frame = _decode(path)
    assert info.mode == "L"
    assert (frame[..., 0] == frame[..., 1]).all() and (frame[..., 1] == frame[..., 2]).all()
    assert _diff(frame, _reference(path)).max() <= 8


def test_grayscale_jpeg_with_orientation(tmp_path):
    path = tmp_path / "gray6.jpg"
    Image.fromarray(_blocky()[..., 1]).save(path, quality=100, exif=_exif(6))
    info, frame = _decode(path)
    assert info.size == (40, 64)
    assert _diff(frame, _reference(path)).max() <= 8


def test_grayscale_png(tmp_path):
    path = tmp_path / "gray.png"
    gray = _blocky()[..., 2]
    Image.fromarray(gray).save(path)
    info, frame = _decode(path)
    assert info.mode == "L"
    np.testing.assert_array_equal(frame, np.repeat(gray[..., None], 3, axis=2))


def test_rgba_png_composited_on_white(tmp_path):
    path = tmp_path / "rgba.png"
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)  # fully transparent -> white
    rgba[0, 1] = (10, 20, 30, 255)  # opaque -> itself
    rgba[0, 2] = (0, 0, 0, 128)  # half black over white -> mid gray
    rgba[1, :] = (200, 100, 50, 255)
    Image.fromarray(rgba, "RGBA").save(path)
    info, frame = _decode(path)
    assert info.mode == "RGBA"
    assert tuple(frame[0, 0]) == (255, 255, 255)
    assert tuple(frame[0, 1]) == (10, 20, 30)
    assert all(abs(int(v) - 127) <= 1 for v in frame[0, 2])
    assert (frame[1] == (200, 100, 50)).all()


def test_la_png_composited_on_white(tmp_path):
    path = tmp_path / "la.png"
    Image.fromarray(np.array([[[40, 0], [40, 255]]], np.uint8), "LA").save(path)
    _, frame = _decode(path)
    assert tuple(frame[0, 0]) == (255, 255, 255)
    assert tuple(frame[0, 1]) == (40, 40, 40)


def test_palette_png(tmp_path):
    path = tmp_path / "palette.png"
    palette_image = Image.fromarray(_blocky()).quantize(colors=16)
    palette_image.save(path)
    info, frame = _decode(path)
    assert info.mode == "P"
    np.testing.assert_array_equal(frame, np.asarray(palette_image.convert("RGB")))


def test_palette_png_with_transparent_index(tmp_path):
    path = tmp_path / "palette_t.png"
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    image.save(path, transparency=0)
    _, frame = _decode(path)
    assert tuple(frame[0, 0]) == (255, 255, 255)  # the transparent red index shows white
    assert tuple(frame[0, 1]) == (0, 0, 255)


def test_16bit_png_scaled_by_257(tmp_path):
    path = tmp_path / "deep.png"
    values = np.array([[0, 257, 257 * 100, 257 * 254, 65535, 256]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")  # precondition: stored with 16 bits
    _, frame = _decode(path)
    assert list(frame[0, :, 0]) == [0, 1, 100, 254, 255, 0]
    assert (frame[..., 0] == frame[..., 2]).all()


def test_16bit_png_with_orientation(tmp_path):
    path = tmp_path / "deep6.png"
    values = np.arange(12, dtype=np.uint16).reshape(3, 4) * 257
    Image.fromarray(values).save(path, exif=_exif(6))
    info, frame = _decode(path)
    assert info.size == (3, 4)
    np.testing.assert_array_equal(frame[..., 0], np.rot90(np.arange(12).reshape(3, 4), k=-1))


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    cmyk = np.zeros((16, 32, 4), np.uint8)
    cmyk[:, :8] = (255, 0, 0, 0)
    cmyk[:, 8:16] = (0, 255, 0, 0)
    cmyk[:, 16:24] = (0, 0, 0, 128)
    Image.fromarray(cmyk, "CMYK").save(path, quality=100)
    info, frame = _decode(path)
    assert info.mode == "CMYK"
    reference = _reference(path)
    assert _diff(frame, reference).max() <= 2
    assert tuple(frame[4, 4]) == pytest.approx((0, 255, 255), abs=3)  # cyan


def test_float_tiff_scaled_by_range(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[-1.0, 1.0, 3.0]], np.float32)).save(path)
    info, frame = _decode(path)
    assert info.mode == "F"
    assert list(frame[0, :, 0]) == [0, 127, 255]


def test_int32_tiff_clipped_to_16bit(tmp_path):
    path = tmp_path / "int.tif"
    Image.fromarray(np.array([[65535, 257 * 3, -5, 100000]], np.int32)).save(path)
    info, frame = _decode(path)
    assert info.mode == "I"
    assert list(frame[0, :, 0]) == [255, 3, 0, 255]


# ---------------------------------------------------------------- refusals


def test_pixel_limit_413_names_field(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 50)).save(path)
    assert read_info(path, 5000, FIELD).size == (100, 50)  # exactly at the limit is fine
    with pytest.raises(RequestError) as caught:
        read_info(path, 4999, FIELD)
    assert caught.value.status == 413
    assert str(caught.value).startswith(FIELD + ":")
    assert "4999" in str(caught.value)


def test_pixel_limit_is_checked_on_the_header_only(tmp_path, monkeypatch):
    """read_info promises to read the header only: a PNG past the limit must be refused before
    any pixel data is decoded (decoding a decompression bomb is what the limit protects from)."""
    path = tmp_path / "bomb.png"
    Image.new("L", (2000, 2000)).save(path)
    decoded = []
    original = ImageFile.ImageFile.load

    def spy(self):
        decoded.append(self.format)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    with pytest.raises(RequestError) as caught:
        read_info(path, 1000, FIELD)
    assert caught.value.status == 413
    assert decoded == [], f"read_info decoded the pixel data of a {decoded} file"


def test_text_file_is_422(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(RequestError) as caught:
        read_info(path, BIG, FIELD)
    assert caught.value.status == 422
    assert str(caught.value).startswith(FIELD + ":")


def test_missing_file_is_422(tmp_path):
    with pytest.raises(RequestError) as caught:
        read_info(tmp_path / "absent.png", BIG, FIELD)
    assert caught.value.status == 422 and caught.value.field == FIELD


# ---------------------------------------------------------------- reduced JPEG decoding


def _photo_like(width, height):
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([xx / width * 255, yy / height * 255, (xx + yy) / (width + height) * 255], axis=2)
    rgb = rgb.astype(np.uint8)
    cv2.circle(rgb, (width // 3, height // 2), min(width, height) // 5, (250, 30, 30), -1)
    cv2.rectangle(rgb, (width // 2, height // 5), (width - 40, height // 2), (20, 20, 220), -1)
    return rgb


@pytest.mark.parametrize(
    "frame_size, decoded_width",
    [
        ((200, 150), 200),  # 1/4 of 800x600
        ((190, 141), 200),  # the smallest libjpeg-turbo scale still covering the frame
        ((100, 75), 100),  # 1/8
        ((400, 300), 400),  # 1/2
        ((401, 300), 500),  # 5/8: the next scale up
        ((800, 600), 800),  # no reduction
    ],
)
def test_reduced_jpeg_decoding(tmp_path, monkeypatch, frame_size, decoded_width):
    path = tmp_path / "photo.jpg"
    Image.fromarray(_photo_like(800, 600)).save(path, quality=95)
    decoded = []
    real_decode = images.simplejpeg.decode_jpeg
    monkeypatch.setattr(
        images.simplejpeg,
        "decode_jpeg",
        lambda *a, **k: decoded.append(real_decode(*a, **k).shape) or real_decode(*a, **k),
    )

    _, frame = _decode(path, frame_size)

    assert frame.shape == (frame_size[1], frame_size[0], 3)
    assert decoded and decoded[0][1] == decoded_width and decoded[0][0] >= frame_size[1]
    full = cv2.resize(_reference(path), frame_size, interpolation=cv2.INTER_AREA)
    assert _diff(frame, full).mean() < 2.0


def test_reduced_jpeg_decoding_with_orientation(tmp_path):
    path = tmp_path / "photo6.jpg"
    Image.fromarray(_photo_like(800, 600)).save(path, quality=95, exif=_exif(6))
    info, frame = _decode(path, (150, 200))
    assert info.size == (600, 800)
    assert frame.shape == (200, 150, 3)
    full = cv2.resize(_reference(path), (150, 200), interpolation=cv2.INTER_AREA)
    assert _diff(frame, full).mean() < 2.0


def test_a_jpeg_at_its_own_size_is_decoded_straight_into_the_buffer(tmp_path, monkeypatch):
    """No second full-size array: libjpeg-turbo writes into the frame store's memory map."""
    path = tmp_path / "photo.jpg"
    Image.fromarray(_photo_like(800, 600)).save(path, quality=95)
    buffers = []
    real_decode = images.simplejpeg.decode_jpeg
    monkeypatch.setattr(
        images.simplejpeg,
        "decode_jpeg",
        lambda *a, buffer=None, **k: buffers.append(buffer) or real_decode(*a, buffer=buffer, **k),
    )
    info = read_info(path, BIG, FIELD)
    out = np.zeros((600, 800, 3), np.uint8)
    assert decode_frame(path, info, info.size, FIELD, out) is out
    assert len(buffers) == 1 and buffers[0] is out
    assert _diff(out, _reference(path)).mean() < 2.0


# ---------------------------------------------------------------- memory and concurrency (issue 11 finding 6)


def _write_rgba_png(path, width, height):
    """A width x height RGBA PNG written row by row, never whole in memory: row y is the colour
    (200, 100, 50) at alpha y % 256. Like the issue's file it is tiny (a few hundred KB)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(1)
    rows = [b"\0" + bytes((200, 100, 50, alpha)) * width for alpha in range(256)]
    idat = [packer.compress(rows[y % 256]) for y in range(height)] + [packer.flush()]
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
        + chunk(b"IDAT", b"".join(idat))
        + chunk(b"IEND", b"")
    )
    return path


PEAK_GROWTH = textwrap.dedent("""
    import json, re, sys
    from pathlib import Path
    from sam2plus.images import decode_frame, read_info

    def high_water():  # this process's peak resident memory (ru_maxrss would start at the parent's)
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024

    path = Path(sys.argv[1])
    info = read_info(path, 10**9, "image")
    before = high_water()
    frame = decode_frame(path, info, info.size, "image")
    grown = high_water() - before
    pixels = [frame[0, 0].tolist(), frame[255, 0].tolist(), frame[128, -1].tolist()]
    print(json.dumps({"grown": grown, "pixels": pixels}))
""")


def _transparent_png_peak(tmp_path, side):
    """Decode a side x side transparent PNG in a fresh process: its peak memory growth and pixels."""
    path = _write_rgba_png(tmp_path / "transparent.png", side, side)
    done = subprocess.run([sys.executable, "-c", PEAK_GROWTH, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    return answer["grown"], answer["pixels"]


def _assert_flattened_within_budget(grown, pixels, side):
    # The decoded RGBA image (4 bytes a pixel) and the RGB frame (3) are needed; bands of rows add
    # a few MB. Flattening with full-size temporaries took 20 bytes a pixel (2.4 GB at 10000x10000).
    assert grown < side * side * 8 + (64 << 20), f"{grown / 2**20:.0f} MiB for {side}x{side}"
    assert pixels == [[255, 255, 255], [200, 100, 50], [227, 177, 152]], "alpha 0, 255 and 128 on white"


def test_a_transparent_png_is_flattened_without_full_size_temporaries(tmp_path):
    grown, pixels = _transparent_png_peak(tmp_path, 4000)
    _assert_flattened_within_budget(grown, pixels, 4000)


@pytest.mark.slow
def test_the_issues_10000_px_transparent_png_stays_within_its_budget(tmp_path):
    """Issue 11 finding 6: a 388 KB transparent 10000x10000 PNG took a worker from 1.35 to 3.77 GB."""
    grown, pixels = _transparent_png_peak(tmp_path, 10000)
    _assert_flattened_within_budget(grown, pixels, 10000)


def test_a_worker_decodes_one_large_image_at_a_time(tmp_path, monkeypatch):
    """Four threads decode large images at once: the decodes run one after the other, while a
    small image is decoded beside a large one."""
    running, most, lock = [0], [0], threading.Lock()
    small_done = threading.Event()
    real = images._decode_frame

    def watched(path, *args):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        if path.name == "large.png":
            small_done.wait(0.1)  # with a small image decoding, it finishes meanwhile
        try:
            return real(path, *args)
        finally:
            with lock:
                running[0] -= 1
            if path.name == "small.png":
                small_done.set()

    monkeypatch.setattr(images, "_decode_frame", watched)
    monkeypatch.setattr(images, "LARGE_DECODE_PIXELS", 64 * 40)
    large, small = tmp_path / "large.png", tmp_path / "small.png"
    Image.fromarray(_blocky()).save(large)
    Image.fromarray(_blocky(32, 16)).save(small)
    shapes = []

    def decode_all(paths):
        def decode(path):
            info = read_info(path, BIG, FIELD)
            shapes.append(decode_frame(path, info, info.size, FIELD).shape)

        threads = [threading.Thread(target=decode, args=(path,), daemon=True) for path in paths]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive(), "a decode is stuck"

    decode_all([large] * 4)
    assert most[0] == 1 and shapes == [(40, 64, 3)] * 4
    images._LARGE_DECODE.acquire()  # a large decode is under way: a small image still goes through
    try:
        decode_all([small])
    finally:
        images._LARGE_DECODE.release()
    assert small_done.is_set() and shapes[-1] == (16, 32, 3)
