"""The probe's image -> a copy inside the backend's CACHE_DIR, and the size Label Studio would show.

The backend resolves a task image given as a path relative to its CACHE_DIR without any
network. The probe copies the file byte for byte (the backend decodes it exactly as it
would the original) to CACHE_DIR/probe/<content hash>-<name>, so the name it sends works
wherever that folder is mounted: /cache in the container, --cache-dir on this machine.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from sam2plus.fetch import sha1_of_file
from sam2plus.images import exif_orientation

from .errors import ProbeError

Image.MAX_IMAGE_PIXELS = None  # the backend applies its own MAX_IMAGE_PIXELS
STAGE_FOLDER = "probe"
CHUNK = 1 << 20


@dataclass(frozen=True)
class StagedImage:
    source: Path  # the file the user named
    local: Path  # its copy inside the local cache dir
    name: str  # that copy's path relative to CACHE_DIR: what the task sends
    size: tuple[int, int]  # (width, height) after EXIF orientation, as the browser shows it


def image_size(path: Path) -> tuple[int, int]:
    """The displayed (EXIF-oriented) size, read from the header."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = exif_orientation(image)
    except FileNotFoundError:
        raise ProbeError(f"image: {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ProbeError(f"image: {path} is not a readable image ({type(exc).__name__})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def stage_image(source: Path, cache_dir: Path) -> StagedImage:
    """Copy `source` into `cache_dir`/probe (once per content) and name the copy relative to it."""
    size = image_size(source)
    digest = sha1_of_file(source)[:16]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", source.stem)[:60] or "image"
    name = f"{STAGE_FOLDER}/{digest}-{stem}{source.suffix.lower()}"
    local = cache_dir / name
    if not local.is_file():
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=".part-")
        except OSError as exc:
            raise ProbeError(f"cache-dir: cannot write into {local.parent} ({exc})") from None
        try:
            with os.fdopen(fd, "wb") as target, open(source, "rb") as handle:
                shutil.copyfileobj(handle, target, CHUNK)
            os.replace(tmp, local)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return StagedImage(source, local, name, size)
