"""What a small file can make a decoder do many times over, counted before it is decoded.

`MAX_IMAGE_PIXELS` bounds what a decode holds; these bound the work a file multiplies without
adding pixels: a progressive JPEG's scans (libjpeg-turbo goes over every coefficient of the
image once per scan, so a 934 KB file of 20,000 repeated scans cost 43 CPU s at 16 MP), the
chunks of a PNG and the blocks before a GIF's first image (Pillow handles each in Python:
4 million empty chunks in 48 MB cost 30 CPU s). Each count stops at its limit, so a walk costs
at most the limit's worth of reads, and a file past it is a 422 naming the limit.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from .errors import RequestError

__all__ = [
    "CHUNK_BYTES",
    "MAX_JPEG_SCANS",
    "MAX_STRUCTURES",
    "check_jpeg_scans",
    "check_structure",
    "gif_blocks",
    "jpeg_scans",
    "png_chunks",
    "structure_limit",
]

# A progressive JPEG has about 10 scans (6 for grey, a few more from optimising encoders), a
# baseline one 1 to 3; an MPO counts the scans of all its frames and their thumbnails.
MAX_JPEG_SCANS = 64
# PNG chunks and GIF blocks: this many, plus one for every CHUNK_BYTES of the file (encoders
# write image data in chunks of 8 KiB or more; metadata comes in a few chunks).
MAX_STRUCTURES = 1024
CHUNK_BYTES = 4096
_SOS = b"\xff\xda"  # a JPEG's start of scan: never inside entropy-coded data, where 0xFF is followed by 0x00
_PNG = b"\x89PNG\r\n\x1a\n"


def structure_limit(size: int) -> int:
    """How many PNG chunks or GIF blocks a file of `size` bytes may have."""
    return MAX_STRUCTURES + size // CHUNK_BYTES


def jpeg_scans(data: bytes) -> int:
    """The scans of a JPEG (its start-of-scan markers, those of embedded thumbnails included)."""
    return data.count(_SOS)


def png_chunks(file: BinaryIO, size: int, limit: int) -> int:
    """The chunks of a PNG up to IEND or the end of the file, counting stops past `limit`."""
    count, position = 0, len(_PNG)
    while position + 8 <= size and count <= limit:
        file.seek(position)
        length, kind = struct.unpack(">I4s", file.read(8))
        count += 1
        if kind == b"IEND":
            break
        position += 12 + length
    return count


def gif_blocks(file: BinaryIO, size: int, limit: int) -> int:
    """The extension blocks and data sub-blocks a GIF holds before its first image, counting stops
    past `limit` (Pillow reads them all while it opens the file)."""
    file.seek(10)
    flags = file.read(1)
    if not flags:
        return 0
    position = 13 + (3 << ((flags[0] & 7) + 1) if flags[0] & 0x80 else 0)  # the global colour table
    count = 0
    while position < size and count <= limit:
        file.seek(position)
        introducer = file.read(1)
        if introducer != b"!":  # the first image (","), the trailer or damage: the reader stops here
            break
        position += 2
        count += 1
        while position < size and count <= limit:  # sub-blocks until an empty one
            file.seek(position)
            length = file.read(1)
            position += 1 + (length[0] if length else 0)
            count += 1
            if not length or length[0] == 0:
                break
    return count


def check_structure(path: Path, field: str) -> None:
    """Refuse (422) a PNG or GIF with more chunks or blocks than `structure_limit` allows."""
    with open(path, "rb") as file:
        head = file.read(8)
        size = file.seek(0, 2)
        if head == _PNG:
            kind, count = "PNG chunks", png_chunks
        elif head[:6] in (b"GIF87a", b"GIF89a"):
            kind, count = "GIF blocks before its first image", gif_blocks
        else:
            return
        limit = structure_limit(size)
        if count(file, size, limit) > limit:
            raise RequestError(
                field,
                f"is an image of more than {limit} {kind}: a file of {size} bytes may have "
                f"{MAX_STRUCTURES} plus one per {CHUNK_BYTES} bytes",
                422,
            )


def check_jpeg_scans(data: bytes, field: str) -> None:
    """Refuse (422) a JPEG of more than MAX_JPEG_SCANS scans."""
    scans = jpeg_scans(data)
    if scans > MAX_JPEG_SCANS:
        raise RequestError(
            field,
            f"is a JPEG of {scans} scans, more than the {MAX_JPEG_SCANS} a JPEG may have "
            "(a progressive JPEG has about 10); each scan is decoded over the whole image",
            422,
        )
