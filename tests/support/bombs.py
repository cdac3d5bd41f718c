"""Image bombs in disguise: small files that become large images inside a reader, and the child
process that sends each through the backend's fetch + read_info + decode path and measures its
peak memory (`python -m tests.support.bombs FILE...` prints one JSON line per file).

Every bomb here is built without holding its decoded pixels in memory: rows of zeros compress
about a thousand to one, so a 8000x8000 RGBA PNG is a few hundred KB.
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

FIELD = "tasks[0].data.image"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zero_png(width: int, height: int) -> bytes:
    """A width x height transparent RGBA PNG, written row by row."""
    packer = zlib.compressobj(9)
    row = bytes(1 + 4 * width)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def ico_around(png: bytes, side: int = 16) -> bytes:
    """An ICO whose directory says `side` x `side` around `png` (the issue's reproduction)."""
    entry = struct.pack("<BBBBHHII", side % 256, side % 256, 0, 0, 1, 32, len(png), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + entry + png


def icns_around(png: bytes) -> bytes:
    """An ICNS holding `png` as its 512x512 entry ('ic09')."""
    entry = b"ic09" + struct.pack(">I", 8 + len(png)) + png
    return b"icns" + struct.pack(">I", 8 + len(entry)) + entry


def gif_frame_past_screen(width: int, height: int) -> bytes:
    """A GIF whose screen is 16x16 and whose first frame is width x height, with a few pixels of
    data: the reader takes its size from the frame, the data is never reached."""
    packed = 0
    codes = [256, *[0] * 100, 257]  # clear, a hundred zeros, end: 9-bit LZW codes, least significant first
    for n, code in enumerate(codes):
        packed |= code << (9 * n)
    data = packed.to_bytes((9 * len(codes) + 7) // 8, "little")
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", 16, 16, 0xF7, 0, 0)
        + bytes(768)
        + b","
        + struct.pack("<HHHHB", 0, 0, width, height, 0)
        + b"\x08"
        + bytes([len(data)])
        + data
        + b"\x00;"
    )


def webp_canvas(width: int, height: int) -> bytes:
    """A WebP whose VP8X header says a width x height canvas around a 1x1 image: the reader
    allocates the canvas when it opens the file."""
    one = io.BytesIO()
    Image.new("RGBA", (1, 1)).save(one, "WEBP", lossless=True)
    frame = one.getvalue()[12:]  # the 1x1 image's VP8L chunk
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x10, 0, 0, 0])
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + frame
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tiff_pages(small: int, large: int) -> bytes:
    """A two-page TIFF: a small first page and a large (deflated) second one."""
    out = io.BytesIO()
    first, second = Image.new("L", (small, small), 128), Image.new("L", (large, large))
    first.save(out, "TIFF", save_all=True, append_images=[second], compression="tiff_adobe_deflate")
    return out.getvalue()


def tiled_tiff(side: int, tile: int) -> bytes:
    """A `side` x `side` grey TIFF stored as one deflated `tile` x `tile` tile of zeros (a tile
    may be larger than the image; libtiff decodes all of it)."""
    packer = zlib.compressobj(9)
    row = bytes(tile)
    data = b"".join(packer.compress(row) for _ in range(tile)) + packer.flush()
    data += bytes(len(data) % 2)
    entries = [  # tag, type (3 short, 4 long), count, value
        (256, 3, 1, side),
        (257, 3, 1, side),
        (258, 3, 1, 8),
        (259, 3, 1, 8),  # deflate
        (262, 3, 1, 1),
        (277, 3, 1, 1),
        (322, 4, 1, tile),
        (323, 4, 1, tile),
        (324, 4, 1, 8),
        (325, 4, 1, len(data)),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + bytes(4)
    return b"II*\0" + struct.pack("<I", 8 + len(data)) + data + ifd


def png_text(megabytes: int) -> bytes:
    """An 8x8 PNG carrying `megabytes` zTXt chunks that each inflate to 1 MiB (Pillow inflates
    them while it opens the file)."""
    inflated = zlib.compress(bytes(1 << 20), 9)
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "PNG")
    png = out.getvalue()
    text = b"".join(_chunk(b"zTXt", b"k%d\0\0" % n + inflated) for n in range(megabytes))
    return png[:33] + text + png[33:]  # right after IHDR


def jpeg_scans_bomb(side: int, repeats: int) -> bytes:
    """A side x side grey progressive JPEG whose last scan is repeated `repeats` more times (the
    review's: each scan goes over every coefficient of the image; libjpeg-turbo reports the
    inconsistent progression only at the end)."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (120, 130, 140)).save(out, "JPEG", progressive=True, quality=90)
    data = out.getvalue()
    start = data.rindex(b"\xff\xda")  # the last scan: its header and data, up to EOI
    end = data.rindex(b"\xff\xd9")
    return data[:end] + data[start:end] * repeats + data[end:]


def png_chunks_bomb(chunks: int, side: int = 64) -> bytes:
    """A side x side PNG with `chunks` empty private chunks before its image data (the review's
    had 4 million in 48 MB)."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (10, 200, 10)).save(out, "PNG")
    png = out.getvalue()
    return png[:33] + _chunk(b"prVt", b"") * chunks + png[33:]  # right after IHDR


def gif_blocks_bomb(blocks: int) -> bytes:
    """A 16x16 GIF whose comment before the image is `blocks` sub-blocks of one byte each."""
    out = io.BytesIO()
    Image.new("P", (16, 16)).save(out, "GIF")
    gif = out.getvalue()
    first = 13 + (3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0)  # after the global colour table
    comment = b"!\xfe" + b"\x01x" * blocks + b"\x00"
    return gif[:first] + comment + gif[first:]


def high_depth_tiff(side: int, mode: str = "F") -> bytes:
    """A side x side single-channel TIFF of `mode` (F: float32, I: int32, I;16) holding a ramp
    across its rows, deflated; written strip by strip from one row, never holding its pixels."""
    dtype = {"F": "<f4", "I": "<i4", "I;16": "<u2"}[mode]
    sample = {"F": (3, 32), "I": (2, 32), "I;16": (1, 16)}[mode]
    row = (np.arange(side) % 251).astype(dtype).tobytes()
    rows_per_strip = max(1, (1 << 20) // len(row))
    strips, counts = [], []
    strip = zlib.compress(row * rows_per_strip, 9)
    last_rows = side % rows_per_strip or rows_per_strip
    last = zlib.compress(row * last_rows, 9)
    count = -(-side // rows_per_strip)
    for n in range(count):
        strips.append(last if n == count - 1 else strip)
        counts.append(len(strips[-1]))
    data = b"".join(strips)
    offsets, position = [], 8
    for size in counts:
        offsets.append(position)
        position += size
    entries_at = 8 + len(data) + (len(data) % 2)
    extra_at = entries_at + 2 + 12 * 11 + 4
    entries = [  # tag, type (3 short, 4 long), count, value
        (256, 4, 1, side),
        (257, 4, 1, side),
        (258, 3, 1, sample[1]),
        (259, 3, 1, 8),  # deflate
        (262, 3, 1, 1),
        (273, 4, count, extra_at if count > 1 else offsets[0]),
        (277, 3, 1, 1),
        (278, 4, 1, rows_per_strip),
        (279, 4, count, extra_at + 4 * count if count > 1 else counts[0]),
        (284, 3, 1, 1),
        (339, 3, 1, sample[0]),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + bytes(4)
    extra = struct.pack(f"<{count}I", *offsets) + struct.pack(f"<{count}I", *counts) if count > 1 else b""
    return b"II*\0" + struct.pack("<I", entries_at) + data + bytes(len(data) % 2) + ifd + extra


def cpu_bombs() -> dict[str, tuple[str, bytes]]:
    """name -> (media type, body) for the files that cost CPU time without adding pixels."""
    return {
        "jpeg-scans": ("image/jpeg", jpeg_scans_bomb(4000, 20_000)),
        "png-chunks": ("image/png", png_chunks_bomb(1_000_000)),
        "gif-blocks": ("image/gif", gif_blocks_bomb(2_000_000)),
    }


def bombs(side: int = 8000) -> dict[str, tuple[str, bytes]]:
    """name -> (media type, body) for every bomb, each `side` px square inside."""
    png = zero_png(side, side)
    return {
        "ico": ("image/x-icon", ico_around(png)),
        "icns": ("image/icns", icns_around(png)),
        "png": ("image/png", png),
        "gif": ("image/gif", gif_frame_past_screen(side, side)),
        "webp": ("image/webp", webp_canvas(min(side, 16383), min(side, 16383))),
        "tiff-pages": ("image/tiff", tiff_pages(16, side)),
        "tiff-tile": ("image/tiff", tiled_tiff(16, side - side % 16)),
        "png-text": ("image/png", png_text(64)),
    }


# ---------------------------------------------------------------- the child process


def _high_water() -> int:
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) << 10


def _reset_high_water() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def measure(paths: list[str], max_pixels: int) -> list[dict]:
    """Send each file as a data: URL through fetch + read_info + decode_frame in this process:
    its answer (status, message) and how much the peak resident memory grew while it ran."""
    from sam2plus.errors import RequestError
    from sam2plus.fetch import ImageFetcher
    from sam2plus.images import decode_frame, read_info

    results = []
    with tempfile.TemporaryDirectory() as cache:
        fetcher = ImageFetcher(cache)
        for name in paths:
            media_type, _, path = name.partition(":")
            url = f"data:{media_type};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"
            _reset_high_water()
            before = _high_water()
            cpu = time.process_time()
            try:
                with fetcher.fetch(url, FIELD) as local:
                    info = read_info(local.path, max_pixels, FIELD)
                    decode_frame(local.path, info, info.size, FIELD)
                status, message = 200, f"{info.width}x{info.height} {info.format}"
            except RequestError as exc:
                status, message = exc.status, exc.message
            results.append(
                {
                    "file": Path(path).name,
                    "status": status,
                    "message": message,
                    "grown": _high_water() - before,
                    "cpu": time.process_time() - cpu,
                }
            )
    return results


if __name__ == "__main__":
    for line in measure(sys.argv[2:], int(sys.argv[1])):
        print(json.dumps(line))
