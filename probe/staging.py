"""How the probe's image reaches the backend: by name in a shared cache folder, or inside the task.

- A folder shared with the backend (`--cache-dir`, given and existing, or `--local`): the file is
  copied byte for byte to CACHE_DIR/probe/<content hash>-<name>, and the task names that copy
  relative to CACHE_DIR, so the backend reads it from disk with no network access. The name
  works wherever the folder is mounted: /cache in the container, --cache-dir here.
- No shared folder: the task carries the file's bytes as a `data:` URL (base64). The backend
  stores it in CACHE_DIR/downloads by content like any download, bounded by MAX_IMAGE_BYTES
  (and the request by MAX_REQUEST_BYTES); it needs no path from the backend back to the probe.

Either way the backend decodes exactly the bytes of the file.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from sam2plus.files import copy_atomically, sha1_of_file
from sam2plus.images import ImageInfo

from .errors import ProbeError

__all__ = ["SentImage", "data_url", "send_image", "stage_image"]

STAGE_FOLDER = "probe"


@dataclass(frozen=True)
class SentImage:
    """The task's image value and how it travels."""

    value: str  # a path relative to the backend's CACHE_DIR, or a data: URL
    shared: bool  # True: the value names a copy in the shared cache folder
    nbytes: int  # the image file's size

    def described(self) -> str:
        """The value for records and messages: the path, or the data: URL's header and size."""
        if self.shared:
            return self.value
        return f"{self.value.partition(',')[0]},... ({self.nbytes} bytes of the image, base64)"


def send_image(source: Path, info: ImageInfo, shared_cache: Path | None) -> SentImage:
    """The image as a name in `shared_cache` when there is one, else as a data: URL."""
    nbytes = source.stat().st_size
    if shared_cache is not None:
        return SentImage(stage_image(source, shared_cache), True, nbytes)
    return SentImage(data_url(source, info), False, nbytes)


def stage_image(source: Path, cache_dir: Path) -> str:
    """Copy `source` into `cache_dir`/probe (once per content); returns the copy's name relative to it."""
    digest = sha1_of_file(source)[:16]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", source.stem)[:60] or "image"
    name = f"{STAGE_FOLDER}/{digest}-{stem}{source.suffix.lower()}"
    local = cache_dir / name
    if not local.is_file():
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            copy_atomically(source, local)
        except OSError as exc:
            raise ProbeError(f"cache-dir: cannot write into {local.parent} ({exc.strerror or exc})") from None
    return name


def data_url(source: Path, info: ImageInfo) -> str:
    """`data:<media type>;base64,<the file's bytes>`; the media type follows the decoded format."""
    media_type = Image.MIME.get(info.format.upper(), f"image/{info.format.lower() or 'unknown'}")
    return f"data:{media_type};base64,{base64.b64encode(source.read_bytes()).decode('ascii')}"
