"""Label Studio brush RLE from a local mask, without building the full-resolution image.

The output matches ``label_studio_sdk.converter.brush.mask2rle`` integer for integer: that function repeats
every pixel 4 times (RGBA), splits the flat array into maximal runs and writes each run as a bit record
``flag(1) sizeidx(2) length-1(3|4|8|16) value(8)`` after a header ``num(32) wordsize-1(5) 4 x rlesize-1(4)``.
Here the runs are derived from the mask's row segments, so the cost follows the mask area and the run count.
"""

from __future__ import annotations

import numpy as np

from .bands import row_bands

__all__ = ["encode_brush_rle"]

_WORD = 8
_RLE_SIZES = (3, 4, 8, 16)
_MAX_RUN = 1 << 16


def _foreground_runs(mask: np.ndarray, x0: int, y0: int, width: int, height: int):
    """Flat [start, end) pixel intervals of the clipped mask, merged where they touch across rows."""
    h, w = mask.shape
    xs, xe = max(x0, 0), min(x0 + w, width)
    ys, ye = max(y0, 0), min(y0 + h, height)
    if xs >= xe or ys >= ye:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    m = mask[ys - y0 : ye - y0, xs - x0 : xe - x0]
    stride = m.shape[1] + 2
    starts, ends = [], []
    # In bands of rows: the temporaries stay small whatever the mask's size.
    for top, bottom in row_bands(m.shape[0], stride):
        band = m[top:bottom]
        # Each row between two background columns, all rows end to end: transitions alternate
        # start, end, start, ... and a transition at flat i sits before the pixel at i + 1.
        padded = np.zeros((band.shape[0], stride), bool)
        np.not_equal(band, 0, out=padded[:, 1:-1])
        flat = padded.ravel()
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        for found, out in ((change[0::2], starts), (change[1::2], ends)):
            rows, cols = np.divmod(found, stride)
            out.append((rows + ys + top).astype(np.int64) * width + xs + cols - 1)
    starts, ends = np.concatenate(starts), np.concatenate(ends)
    if len(starts) == 0:
        return starts, ends
    # A segment ending at the right image edge continues into one starting at column 0 of the next row.
    touch = ends[:-1] == starts[1:]
    keep_s = np.concatenate(([True], ~touch))
    keep_e = np.concatenate((~touch, [True]))
    return starts[keep_s], ends[keep_e]


def _records(lengths: np.ndarray, values: np.ndarray):
    """Bit records (code, width) for runs, split exactly as the sdk's ``encode_rle`` does."""
    # Runs over 256 use the 16-bit field; over 2**16 they emit (L-1)//2**16 full chunks of 2**16 first,
    # and the remainder keeps the 16-bit field even when it is short.
    n_full = (lengths - 1) // _MAX_RUN
    last = lengths - n_full * _MAX_RUN
    sel = np.select([lengths <= 8, lengths <= 16, lengths <= 256], [0, 1, 2], 3)
    nbits = np.asarray(_RLE_SIZES, np.int64)[sel]
    flag = (lengths > 1).astype(np.int64)  # a lone value is written "0 00 000 value"
    tail = (flag << (10 + nbits)) | (sel << (8 + nbits)) | ((last - 1) << 8) | values

    full = (1 << 26) | (3 << 24) | ((_MAX_RUN - 1) << 8)  # "1 11 1111111111111111" before the value
    count = n_full + 1
    codes = np.repeat(full | values, count)
    widths = np.repeat(np.int64(11 + 16), count.sum())
    tail_pos = np.cumsum(count) - 1
    codes[tail_pos] = tail
    widths[tail_pos] = 11 + nbits
    return codes, widths


def encode_brush_rle(mask: np.ndarray, x0: int, y0: int, width: int, height: int, value: int = 255) -> list[int]:
    """RLE of an image of size width x height that is zero everywhere except `mask` (2-D, bool or uint8,
    nonzero = inside) placed with its top-left pixel at (x0, y0). Parts of `mask` outside the image are clipped;
    x0/y0 may be negative. Output is identical, integer for integer, to
    label_studio_sdk.converter.brush.mask2rle(full) where full is the uint8 full-size image holding `value`
    inside the mask."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")  # the sdk crashes on it
    if not 0 <= value <= 255:
        raise ValueError(f"value must fit in uint8, got {value}")
    x0, y0, width, height, value = int(x0), int(y0), int(width), int(height), int(value)
    total = width * height

    starts, ends = _foreground_runs(mask, x0, y0, width, height) if value else (np.empty(0, np.int64),) * 2
    # Alternate background gap / foreground run, then drop the empty gaps (at index 0 or at the end).
    bounds = np.concatenate(([0], np.column_stack((starts, ends)).ravel(), [total]))
    lengths = np.diff(bounds)
    values = np.zeros(len(lengths), np.int64)
    values[1::2] = value
    nonempty = lengths > 0
    return _encode_runs(lengths[nonempty] * 4, values[nonempty], 4 * total)


def _encode_runs(lengths: np.ndarray, values: np.ndarray, num: int) -> list[int]:
    """The sdk's ``encode_rle`` byte list for an array of `num` words given as maximal runs."""
    codes, widths = _records(np.asarray(lengths, np.int64), np.asarray(values, np.int64))
    header = f"{num:032b}" + f"{_WORD - 1:05b}" + "".join(f"{s - 1:04b}" for s in _RLE_SIZES)
    header_bits = np.frombuffer(header.encode(), np.uint8) - ord("0")

    # Left-align every record (at most 27 bits) in a big-endian 32-bit word, unpack the words to bit rows
    # and keep each row's first `width` bits; boolean indexing keeps row-major order.
    aligned = (codes << (32 - widths)).astype(">u4")
    bits = np.unpackbits(aligned.view(np.uint8)).reshape(-1, 32)
    body = bits[np.arange(32)[None, :] < widths[:, None]]

    n = len(header_bits) + len(body)
    pad = np.zeros(8 - n % 8, np.uint8)  # the sdk pads a whole zero byte when already byte-aligned
    return np.packbits(np.concatenate((header_bits, body, pad))).tolist()
