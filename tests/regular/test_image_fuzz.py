"""Issue 21 item 9 (images): whatever a reader raises on bad data is a 4xx naming the field.

Valid small images of every supported format are mutated (truncated, bytes flipped, their body
replaced by random bytes, extreme numbers written into them) under their own header, with fixed
seeds, and sent through the real path: a data: URL fetched into the download cache, read_info,
decode_frame; a share of them through the HTTP app in-process too. Each is decoded or refused
with 413/422 naming the field; no other exception escapes, and the app never answers 500.
"""

from __future__ import annotations

import base64
import io
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from sam2plus.errors import RequestError
from sam2plus.fetch import ImageFetcher
from sam2plus.images import SUPPORTED_FORMATS, decode_frame, read_info
from tests.support.inprocess import make_backend, predict_body

FIELD = "tasks[0].data.image"
MAX_PIXELS = 4_000_000
CASES = 100  # mutations per format
KEEP = 12  # leading bytes left as they are: every format's signature
EXTREMES = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def _saved(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _exif(orientation: int = 6) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "fuzz camera"
    return exif


def valid_images() -> dict[str, tuple[str, bytes]]:
    """name -> (media type, body): one small image of each supported format, with EXIF where it
    can carry it, transparency, palettes, several frames."""
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    rgba = rgb.convert("RGBA")
    frames = [rgb.convert("P"), rgb.rotate(90).convert("P")]
    return {
        "jpeg": ("image/jpeg", _saved(rgb, "JPEG", exif=_exif())),
        "mpo": ("image/mpo", _saved(rgb, "MPO", save_all=True, append_images=[rgb.rotate(180)])),
        "png": ("image/png", _saved(rgba, "PNG", exif=_exif(8))),
        "webp": ("image/webp", _saved(rgba, "WEBP", exif=_exif(3), quality=50)),
        "gif": ("image/gif", _saved(frames[0], "GIF", save_all=True, append_images=frames[1:], transparency=0)),
        "tiff": ("image/tiff", _saved(rgb, "TIFF", exif=_exif(5), compression="tiff_adobe_deflate")),
        "bmp": ("image/bmp", _saved(rgb.convert("P"), "BMP")),
    }


def _offset(rng: random.Random, size: int, room: int = 1) -> int:
    """A position past the signature, in the headers (the first 256 bytes) more often than not."""
    end = size - room if rng.random() < 0.3 else min(size - room, 256)
    return rng.randrange(KEEP, end)


def mutate(body: bytes, rng: random.Random, kind: int) -> bytes:
    """One mutation of `body` under its first KEEP bytes."""
    data = bytearray(body)
    if kind == 0:  # truncated
        return bytes(data[: rng.randrange(KEEP, len(data))])
    if kind == 1:  # a few bytes changed
        for _ in range(rng.randint(1, 8)):
            data[_offset(rng, len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 2:  # random bytes after a random share of the file
        cut = _offset(rng, len(data))
        return bytes(data[:cut]) + rng.randbytes(rng.randrange(1, 2 * len(data)))
    offset = _offset(rng, len(data), 4)  # an extreme number where a size or an offset may be
    width = rng.choice((2, 4))
    value = rng.choice(EXTREMES) & ((1 << (8 * width)) - 1)
    data[offset : offset + width] = struct.pack(rng.choice("<>") + ("H" if width == 2 else "I"), value)
    return bytes(data)


def cases() -> list[tuple[str, str, bytes]]:
    """(case name, media type, body), the same on every run."""
    out = []
    for name, (media_type, body) in valid_images().items():
        for n in range(CASES):
            rng = random.Random(f"{name}:{n}")
            out.append((f"{name}#{n}", media_type, mutate(body, rng, n % 4)))
    return out


def data_url(media_type: str, body: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(body).decode()}"


def _through_the_pipeline(fetcher: ImageFetcher, media_type: str, body: bytes) -> int:
    """200 when the image decodes (to its size in RGB), else the RequestError's status."""
    try:
        with fetcher.fetch(data_url(media_type, body), FIELD) as local:
            info = read_info(local.path, MAX_PIXELS, FIELD)
            frame = decode_frame(local.path, info, info.size, FIELD)
    except RequestError as exc:
        assert exc.field == FIELD and exc.message.startswith(FIELD + ": "), exc.message
        return exc.status
    assert frame.shape == (info.height, info.width, 3) and frame.dtype == np.uint8
    return 200


def test_every_supported_format_has_a_valid_seed():
    """The seeds are what they say: each opens as its format, decodes, and the list is complete."""
    formats = set()
    for _media_type, body in valid_images().values():
        with Image.open(io.BytesIO(body)) as image:
            formats.add(image.format)
            image.load()
    assert formats == set(SUPPORTED_FORMATS)


def test_mutated_images_of_every_format_decode_or_are_refused_with_a_4xx(tmp_path):
    fetcher = ImageFetcher(tmp_path / "cache")
    answers: dict[int, int] = {}
    for name, media_type, body in cases():
        try:
            status = _through_the_pipeline(fetcher, media_type, body)
        except Exception as exc:  # the failure names the case and what escaped
            pytest.fail(f"{name}: {type(exc).__name__}: {exc}")
        assert status in (200, 413, 422), f"{name}: {status}"
        answers[status] = answers.get(status, 0) + 1
    assert answers.get(422, 0) > len(SUPPORTED_FORMATS) * CASES // 4, answers  # mostly refused
    assert answers.get(200, 0) > 0, answers  # and some mutations are harmless


def _png_with(chunk_type: bytes, data: bytes) -> bytes:
    png = _saved(Image.new("RGB", (8, 8)), "PNG")
    chunk = struct.pack(">I", len(data)) + chunk_type + data + struct.pack(">I", zlib.crc32(chunk_type + data))
    return png[:33] + chunk + png[33:]  # right after IHDR


@pytest.mark.parametrize(
    "media_type, body, status",
    [
        ("image/x-portable-pixmap", b"P6\n12345678901234567890 1\n255\n" + bytes(30), 422),  # ValueError
        ("image/png", _saved(Image.new("RGB", (8, 8)), "PNG")[:20], 422),  # a truncated header
        ("image/png", _png_with(b"eXIf", b"MM\0*\0\0\0\x08\xff\xff" + b"\x01" * 20), 200),  # EXIF ignored
        ("image/png", _png_with(b"eXIf", b"II*\0\xff\xff\xff\x7f"), 200),
        ("image/png", _png_with(b"eXIf", b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\xff\xff\xff\x7f\0\0\0\0"), 200),
        ("image/png", _png_with(b"eXIf", b"MM\0\xd7\0\0\0\x08" + bytes(8)), 200),  # SyntaxError: ignored
        ("image/x-icon", b"\0\0\1\0\1\0" + bytes(16), 422),
    ],
    ids=[
        "ppm-20-digit-width",
        "png-truncated-header",
        "png-exif-short",
        "png-exif-offset",
        "png-exif-count",
        "png-exif-not-tiff",
        "ico-empty",
    ],
)
def test_the_issues_reproductions_are_4xx_or_decoded(tmp_path, media_type, body, status):
    assert _through_the_pipeline(ImageFetcher(tmp_path / "cache"), media_type, body) == status


def test_mutated_images_through_the_app_never_answer_500(tmp_path):
    client, _ = make_backend(tmp_path, max_image_pixels=MAX_PIXELS)
    statuses = {}
    for name, media_type, body in cases()[::6]:
        response = client.post("/predict", json=predict_body(image=data_url(media_type, body)))
        assert response.status_code in (200, 413, 422), f"{name}: {response.status_code} {response.get_data()[:300]}"
        if response.status_code != 200:
            assert response.get_json()["error"].startswith(FIELD + ": "), name
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    assert statuses.get(422, 0) > 0, statuses
