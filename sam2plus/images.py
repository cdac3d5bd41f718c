"""Local image file -> the RGB frame SAM2Plus works on (kept by `framestore.FrameStore`).

The frame is the image after EXIF orientation (the browser shows the rotated image, so prompt
coordinates refer to it), converted to 8-bit RGB and downscaled to the fullframe size. JPEGs
are decoded by libjpeg-turbo straight into one array, at a reduced size when the frame allows.
Other formats are decoded by Pillow in their own mode and converted to RGB in bands of rows
(transparency flattened on white), so no full-size temporary besides the decoded image exists;
high-depth images (16-bit, 32-bit integer, float) are scaled to 8 bits band by band too.
A worker decodes at most one large image at a time (`LARGE_DECODE_PIXELS`).

The work a file multiplies without adding pixels is counted before it is decoded
(`imagecost`: a JPEG's scans, a PNG's chunks, a GIF's blocks). A decode has a deadline
(DECODE_TIMEOUT) and, for a click, stops when its client leaves: Pillow's readers are stopped
between two blocks of the file they read, a JPEG decoded by libjpeg-turbo in one call is
checked before and after it, and waiting for another large decode ends at the deadline.

Only `SUPPORTED_FORMATS` are opened: container formats (ICO, ICNS, ...) decode the images they
embed inside `Image.open`, before any size could be checked. The size is checked on the header,
and Pillow's own decompression-bomb guard, set from MAX_IMAGE_PIXELS (`guard_pillow`), refuses
what its readers allocate past it (a WebP canvas, a GIF frame past its screen, a TIFF tile).
Whatever a reader raises on bad data (`DECODER_ERRORS`) is a 422 naming the field.
"""

from __future__ import annotations

import re
import struct
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
from PIL import (  # the readers of SUPPORTED_FORMATS, registered before any `Image.open(formats=...)`
    BmpImagePlugin,  # noqa: F401
    GifImagePlugin,  # noqa: F401
    Image,
    JpegImagePlugin,  # noqa: F401
    MpoImagePlugin,  # noqa: F401
    PngImagePlugin,
    TiffImagePlugin,  # noqa: F401
    UnidentifiedImageError,
    WebPImagePlugin,  # noqa: F401
)

from .bands import row_bands
from .errors import RequestError, Stopped
from .imagecost import check_jpeg_scans, check_structure
from .watchdog import DEADLINE, STOPPED, WATCHDOG, Watch

__all__ = [
    "DECODE_TIMEOUT",
    "DECODER_ERRORS",
    "HIGH_DEPTH_MODES",
    "LARGE_DECODE_PIXELS",
    "SUPPORTED_FORMATS",
    "ImageInfo",
    "decode_frame",
    "exif_orientation",
    "guard_pillow",
    "read_info",
    "tiff_tile",
]

# What Label Studio users upload; each is a single image (or shows its first frame or page) whose
# header gives its size. MPO is a camera's JPEG with more frames after the first.
SUPPORTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "TIFF", "BMP")
_READERS = tuple(name for name in SUPPORTED_FORMATS if name != "MPO")  # Pillow's JPEG reader opens MPO

# What Pillow's readers (and its EXIF parser) raise on malformed data besides OSError.
DECODER_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    KeyError,
    IndexError,
    TypeError,
    EOFError,
    ZeroDivisionError,
    OverflowError,
    MemoryError,
    RecursionError,
    struct.error,
)

Image.MAX_IMAGE_PIXELS = None  # until `guard_pillow` sets it from MAX_IMAGE_PIXELS
# Pillow warns past half its error limit; images in that band are fine for us (see `guard_pillow`).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
_GUARD = threading.Lock()
# PNG text chunks (zTXt, iTXt) are inflated while the file is opened, up to 64 MB by default:
# 4 MiB is room for any real metadata, and a file holding more is refused as unreadable.
PNG_TEXT_BYTES = 4 << 20
PngImagePlugin.MAX_TEXT_MEMORY = PNG_TEXT_BYTES

LARGE_DECODE_PIXELS = 16_000_000  # images this large are decoded one at a time per worker process
_LARGE_DECODE = threading.Lock()
DECODE_TIMEOUT = 60.0  # seconds a decode may take, waiting for another large one included (DECODE_TIMEOUT)
# Pillow's modes of more than 8 bits per sample, from 16-bit PNGs and 16-bit, 32-bit and float TIFFs.
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")

# EXIF orientation -> the cv2 operations that undo it, in order.
_ORIENT = {
    2: [("flip", 1)],
    3: [("rotate", cv2.ROTATE_180)],
    4: [("flip", 0)],
    5: [("transpose", None)],
    6: [("rotate", cv2.ROTATE_90_CLOCKWISE)],
    7: [("transpose", None), ("rotate", cv2.ROTATE_180)],
    8: [("rotate", cv2.ROTATE_90_COUNTERCLOCKWISE)],
}


@dataclass(frozen=True)
class ImageInfo:
    """What the file header says: the displayed (oriented) size, mode, format, orientation."""

    width: int
    height: int
    mode: str
    format: str
    orientation: int

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def guard_pillow(max_pixels: int) -> None:
    """Set Pillow's decompression-bomb guard so that it raises past `max_pixels`: it raises above
    twice `Image.MAX_IMAGE_PIXELS` (and only warns above it), so that is half of `max_pixels`,
    rounded up. The setting is global: the largest asked for in this process wins (a server has
    one MAX_IMAGE_PIXELS), so the guard never refuses what `read_info` accepts."""
    limit = -(-max_pixels // 2)
    with _GUARD:
        if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS < limit:
            Image.MAX_IMAGE_PIXELS = limit


def read_info(path: Path, max_pixels: int, field: str) -> ImageInfo:
    """Read the header only; refuse files that are not images of a supported format or exceed
    `max_pixels` (413), and any the reader cannot parse (422)."""
    guard_pillow(max_pixels)
    try:
        check_structure(path, field)
        with Image.open(path, formats=_READERS) as image:
            width, height = image.size
            tile = tiff_tile(image)
            orientation = exif_orientation(image)
            mode, fmt = image.mode, "JPEG" if image.format == "MPO" else image.format or ""
    except Image.DecompressionBombError as exc:  # Pillow's guard: the image, or one its reader allocates
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{pixels.group(1)} px" if pixels else f"more than {max_pixels} px"
        raise RequestError(field, f"image of {size} exceeds MAX_IMAGE_PIXELS={max_pixels}", 413) from None
    except UnidentifiedImageError:
        raise RequestError(
            field, f"is not an image in a supported format ({', '.join(SUPPORTED_FORMATS)})", 422
        ) from None
    except DECODER_ERRORS as exc:
        raise RequestError(field, f"is not a readable image ({type(exc).__name__})", 422) from None
    if width < 1 or height < 1:
        raise RequestError(field, f"is an image of {width}x{height}: it has no pixels", 422)
    if tile[0] * tile[1] > max_pixels:
        raise RequestError(
            field,
            f"TIFF tile of {tile[0]}x{tile[1]} = {tile[0] * tile[1]} px exceeds MAX_IMAGE_PIXELS={max_pixels}",
            413,
        )
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    if width * height > max_pixels:
        raise RequestError(
            field, f"image of {width}x{height} = {width * height} px exceeds MAX_IMAGE_PIXELS={max_pixels}", 413
        )
    return ImageInfo(width, height, mode, fmt, orientation if orientation in _ORIENT else 1)


def tiff_tile(image: Image.Image) -> tuple[int, int]:
    """A tiled TIFF's tile size ((0, 0) for other images): libtiff decodes a whole tile into a
    buffer of its own, whatever the image size, so a 16x16 image may hold a 40000x40000 tile."""
    if image.format != "TIFF":
        return 0, 0
    width, height = image.tag_v2.get(322), image.tag_v2.get(323)  # TileWidth, TileLength
    return (width, height) if type(width) is int and type(height) is int else (0, 0)


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 to 8), read without decoding pixels (Pillow's PNG getexif() would
    load them); 1 when absent, odd or unreadable: a browser shows such an image as stored."""
    try:
        if image.format == "PNG":
            raw = image.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = image.getexif()
        orientation = exif.get(0x0112, 1)
    except DECODER_ERRORS:
        return 1
    return orientation if type(orientation) is int and 1 <= orientation <= 8 else 1


def decode_frame(
    path: Path,
    info: ImageInfo,
    frame_size: tuple[int, int],
    field: str,
    out: np.ndarray | None = None,
    *,
    timeout: float | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """The oriented 8-bit RGB image resized to `frame_size` (uint8, H x W x 3), written into
    `out` when given (an image needing neither rotation nor resizing is decoded straight into it).
    Images of LARGE_DECODE_PIXELS or more wait for any other such decode of this process. The
    decode, the wait included, is cut off after `timeout` seconds (DECODE_TIMEOUT by default: a
    422) and once `should_stop()` is true (`Stopped`)."""
    data = path.read_bytes() if info.format == "JPEG" else None
    if data is not None:
        check_jpeg_scans(data, field)
        data = data if info.mode in ("RGB", "L") else None  # others go through Pillow, which reads the file
    with WATCHDOG.watching(Watch(timeout or DECODE_TIMEOUT, should_stop)) as watch:
        check = _DecodeCheck(watch, field)
        if info.width * info.height < LARGE_DECODE_PIXELS:
            return _decode_frame(path, data, info, frame_size, check, out)
        _wait_for_large_decode(check)
        try:
            return _decode_frame(path, data, info, frame_size, check, out)
        finally:
            _LARGE_DECODE.release()


class _DecodeCheck:
    """Raises once a decode's watch has fired or its deadline has passed: `Stopped` when the
    click's client left, a 422 naming DECODE_TIMEOUT otherwise."""

    def __init__(self, watch: Watch, field: str):
        self.watch = watch
        self.field = field

    def __call__(self) -> None:
        reason = self.watch.reason
        if reason == STOPPED:
            raise Stopped("the client went away; stopped decoding its image")
        if reason == DEADLINE or self.watch.remaining() <= 0:
            raise RequestError(
                self.field,
                f"could not be decoded within DECODE_TIMEOUT={self.watch.seconds:g} s",
                422,
            )


def _wait_for_large_decode(check: _DecodeCheck) -> None:
    """Take the worker's large-decode lock, waiting no longer than the decode's deadline: past it
    a 503 to try again (the image itself may be fine), `Stopped` when the client left."""
    while not _LARGE_DECODE.acquire(timeout=min(0.25, max(check.watch.remaining(), 0.001))):
        try:
            check()
        except RequestError:
            raise RequestError(
                check.field,
                f"waited DECODE_TIMEOUT={check.watch.seconds:g} s for another large image's decode "
                "in this worker; try again",
                503,
            ) from None


class _CheckedReads:
    """A reader's file whose every read first runs `check` (Pillow reads a file block by block)."""

    def __init__(self, file, check: Callable[[], None]):
        self._file = file
        self._check = check

    def read(self, *args):
        self._check()
        return self._file.read(*args)

    def __getattr__(self, name):
        return getattr(self._file, name)


def _decode_frame(
    path: Path,
    data: bytes | None,
    info: ImageInfo,
    frame_size: tuple[int, int],
    check: _DecodeCheck,
    out: np.ndarray | None,
) -> np.ndarray:
    field = check.field
    direct = out is not None and info.orientation == 1 and frame_size == info.size
    check()
    if data is not None:
        rgb = _decode_jpeg(data, info, frame_size, out if direct else None)
        check()
    else:
        rgb = _decode_other(path, info, check, out if direct else None)
    if rgb is None:
        raise RequestError(field, "could not be decoded", 422)
    if direct:
        return out
    if (rgb.shape[1], rgb.shape[0]) != frame_size:
        rgb = cv2.resize(rgb, frame_size, interpolation=cv2.INTER_AREA)
    if out is None:
        return rgb
    out[...] = rgb
    return out


def _decode_jpeg(
    data: bytes, info: ImageInfo, frame_size: tuple[int, int], buffer: np.ndarray | None = None
) -> np.ndarray | None:
    """libjpeg-turbo (simplejpeg) decodes straight into one RGB array (`buffer` when given), at the
    smallest of its reduced sizes that still covers the frame: no second full-size buffer, unlike
    OpenCV's imread."""
    want_w, want_h = frame_size if info.orientation < 5 else frame_size[::-1]
    try:
        rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=want_w, min_height=want_h, buffer=buffer)
    except DECODER_ERRORS:  # simplejpeg raises ValueError on bad data
        return None
    return buffer if buffer is not None else _orient(rgb, info.orientation)


def _decode_other(path: Path, info: ImageInfo, check: _DecodeCheck, buffer: np.ndarray | None = None) -> np.ndarray:
    """Pillow decodes the file in its own mode, checking the deadline between the blocks it reads;
    rows are converted to 8-bit RGB band by band into one array (`buffer` when given, only for
    orientation 1), then oriented."""
    field = check.field
    try:
        with Image.open(path, formats=_READERS) as image:
            if image.size != (info.size if info.orientation < 5 else info.size[::-1]):
                raise RequestError(
                    field, f"could not be decoded (its size changed from {info.width}x{info.height})", 422
                )
            image.fp = _CheckedReads(image.fp, check)
            image.load()
            check()
            width, height = image.size
            rgb = buffer if buffer is not None else np.empty((height, width, 3), np.uint8)
            if image.mode in HIGH_DEPTH_MODES:
                _high_depth_to_rgb(image, rgb, check)
            else:
                transparent = "A" in image.mode or "transparency" in image.info
                for top, bottom in row_bands(height, width):
                    band = image.crop((0, top, width, bottom))
                    rgb[top : top + band.height] = np.asarray(_flat_rgb(band, transparent))
    except Image.DecompressionBombError:  # Pillow's guard, inside its reader (a GIF frame, a TIFF's size)
        raise RequestError(field, "could not be decoded: a part of it exceeds MAX_IMAGE_PIXELS", 413) from None
    except DECODER_ERRORS as exc:
        raise RequestError(field, f"could not be decoded ({type(exc).__name__})", 422) from None
    return rgb if buffer is not None else _orient(rgb, info.orientation)


def _flat_rgb(image: Image.Image, transparent: bool) -> Image.Image:
    """The image in RGB; transparent pixels show white, as in the browser on a white page."""
    if not transparent:
        return image if image.mode == "RGB" else image.convert("RGB")
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")


def _orient(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixels turned as EXIF `orientation` says the image is shown."""
    for op, arg in _ORIENT.get(orientation, []):
        rgb = cv2.flip(rgb, arg) if op == "flip" else cv2.rotate(rgb, arg) if op == "rotate" else cv2.transpose(rgb)
    return rgb


def _high_depth_to_rgb(image: Image.Image, rgb: np.ndarray, check: Callable[[], None]) -> None:
    """High-depth single-channel pixels -> 8-bit grey in `rgb`, band by band: integers by their
    16-bit range (32-bit ones clipped to it), floats from their finite minimum to maximum
    (a first pass over the bands finds them; NaN shows black)."""
    width, height = image.size
    bands = list(row_bands(height, width))
    floating = image.mode == "F"
    low, span = 0.0, 1.0
    if floating:
        low, high = np.inf, -np.inf
        for top, bottom in bands:
            values = np.asarray(image.crop((0, top, width, bottom)))
            finite = values[np.isfinite(values)]
            if finite.size:
                low, high = min(low, float(finite.min())), max(high, float(finite.max()))
        low, high = (low, high) if low <= high else (0.0, 1.0)
        span = (high - low) or 1.0
        check()
    for top, bottom in bands:
        values = np.asarray(image.crop((0, top, width, bottom)))
        if floating:
            gray = np.nan_to_num((values - np.float32(low)) / np.float32(span) * 255, nan=0.0, posinf=255.0, neginf=0.0)
            gray = np.clip(gray, 0, 255).astype(np.uint8)
        else:
            gray = (np.clip(values, 0, 65535) // 257).astype(np.uint8)
        rgb[top:bottom] = gray[..., None]
