"""Label Studio's Bitmask value: a mask placed in an image, as a PNG data URL, without the full-size array.

Label Studio's editor (1.23.2, `regions/BitmaskRegion.jsx`) draws the PNG of `value.imageDataURL`
1:1 onto a canvas of the image's natural size and takes every pixel whose alpha is above 0 as the
region (`getCanvasPixelBounds`, `isHoveringNonTransparentPixel`); what it exports itself is black
on transparent. So the PNG here has the image's size, opaque black inside the mask and transparent
black outside: a 1-bit palette image (two black entries, `tRNS` 0 and 255), 1/8 byte a pixel before
compression. Rows are packed and compressed one band at a time; the rows outside the mask's
bounding box are all zero bytes, which zlib shrinks about a thousandfold, so a 100-megapixel image
with one object costs its row count in zero bytes fed to zlib, not a 100-megapixel array.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np

from .bands import row_bands
from .masks import Mask

__all__ = ["DATA_URL_PREFIX", "encode_bitmask_png", "bitmask_data_url", "decode_bitmask"]

DATA_URL_PREFIX = "data:image/png;base64,"
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_UP = 2  # PNG row filter "Up": a row equal to the one above compresses to zeros
_ZERO_ROWS_BYTES = 1 << 20  # how many zero bytes are handed to zlib at once for the rows outside the mask
_LEVEL = 6


def encode_bitmask_png(bits: np.ndarray, x0: int, y0: int, width: int, height: int) -> bytes:
    """The PNG of a `width` x `height` image that is transparent except where `bits` (2-D, nonzero =
    inside, placed with its top-left pixel at (x0, y0); parts outside the image are clipped) is:
    opaque black there."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {bits.shape}")
    mask = _clipped(bits, int(x0), int(y0), width, height)
    row_bytes = (width + 7) // 8
    compressor = zlib.compressobj(_LEVEL)
    chunks: list[bytes] = []
    top, bottom = (mask.y, mask.y + mask.bits.shape[0]) if mask.area else (height, height)
    chunks += _zero_rows(compressor, top, row_bytes)
    if mask.area:
        chunks += _mask_rows(compressor, mask, row_bytes)
    chunks += _zero_rows(compressor, height - bottom, row_bytes)
    chunks.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0)  # 1 bit, palette, no interlace
    return b"".join(
        (
            _SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"PLTE", bytes(6)),  # index 0 and 1: both black
            _chunk(b"tRNS", b"\x00\xff"),  # index 0 transparent, index 1 opaque
            _chunk(b"IDAT", b"".join(chunks)),
            _chunk(b"IEND", b""),
        )
    )


def bitmask_data_url(bits: np.ndarray, x0: int, y0: int, width: int, height: int) -> str:
    """`encode_bitmask_png` as the `data:image/png;base64,...` URL of a Bitmask value's `imageDataURL`."""
    return DATA_URL_PREFIX + base64.b64encode(encode_bitmask_png(bits, x0, y0, width, height)).decode("ascii")


def decode_bitmask(data_url: str, max_pixels: int | None = None) -> tuple[Mask, tuple[int, int]]:
    """A Bitmask value's PNG read as Label Studio's editor reads it (alpha > 0 is inside): the mask
    cropped to its nonzero pixels, and the PNG's (width, height). Any PNG mode, not only ours."""
    from PIL import Image

    if not data_url.startswith(DATA_URL_PREFIX):
        raise ValueError(f"not a PNG data URL: {data_url[:40]!r}")
    raw = base64.b64decode(data_url[len(DATA_URL_PREFIX) :], validate=True)
    with Image.open(io.BytesIO(raw)) as image:
        if image.format != "PNG":
            raise ValueError(f"the data URL holds a {image.format}, not a PNG")
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise ValueError(f"{image.width}x{image.height} is more than {max_pixels} pixels")
        image.load()
        return Mask(_alpha(image) > 0).tight(), image.size


def _alpha(image) -> np.ndarray:
    """The alpha channel of a decoded PNG as uint8 (255 where the mode has none)."""
    if image.mode == "P":
        indices = np.asarray(image)
        table = np.full(256, 255, np.uint8)
        transparency = image.info.get("transparency")
        if isinstance(transparency, bytes):
            table[: len(transparency)] = np.frombuffer(transparency, np.uint8)
        elif isinstance(transparency, int):
            table[transparency] = 0
        return table[indices]
    if image.mode in ("LA", "RGBA", "PA", "La", "RGBa"):
        return np.asarray(image.getchannel("A"))
    if "transparency" in image.info:  # a grey or RGB PNG with one transparent colour
        return np.asarray(image.convert("RGBA").getchannel("A"))
    return np.full((image.height, image.width), 255, np.uint8)


def _clipped(bits: np.ndarray, x0: int, y0: int, width: int, height: int) -> Mask:
    h, w = bits.shape
    c0, r0 = max(0, -x0), max(0, -y0)
    c1, r1 = min(w, width - x0), min(h, height - y0)
    if c1 <= c0 or r1 <= r0:
        return Mask.empty()
    return Mask(bits[r0:r1, c0:c1] != 0, x0 + c0, y0 + r0).tight()


def _zero_rows(compressor, rows: int, row_bytes: int) -> list[bytes]:
    """`rows` rows outside the mask (filter byte and pixels all zero), compressed a megabyte at a time."""
    total = rows * (row_bytes + 1)
    block = bytes(min(total, _ZERO_ROWS_BYTES))
    out = []
    while total > 0:
        piece = block if total >= len(block) else block[:total]
        out.append(compressor.compress(piece))
        total -= len(piece)
    return out


def _mask_rows(compressor, mask: Mask, row_bytes: int) -> list[bytes]:
    """The rows the mask spans, packed to bits at their place in the image row and Up-filtered,
    a band at a time; only the bytes the mask's columns touch are built per band."""
    b0 = mask.x // 8
    b1 = (mask.x + mask.bits.shape[1] + 7) // 8
    shift = mask.x - 8 * b0
    out = []
    above = np.zeros(b1 - b0, np.uint8)  # the packed bytes of the row above (zero above the mask)
    for top, bottom in row_bands(mask.bits.shape[0], 8 * row_bytes):  # a band of whole image rows
        spread = np.zeros((bottom - top, 8 * (b1 - b0)), bool)
        spread[:, shift : shift + mask.bits.shape[1]] = mask.bits[top:bottom]
        packed = np.packbits(spread, axis=1)
        rows = np.zeros((bottom - top, row_bytes + 1), np.uint8)
        rows[:, 0] = _FILTER_UP
        np.subtract(packed, np.vstack((above[None], packed[:-1])), out=rows[:, 1 + b0 : 1 + b1])
        above = packed[-1]
        out.append(compressor.compress(rows.tobytes()))
    return out


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
