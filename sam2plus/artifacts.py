"""Review images of one request, written into a folder of its own under CACHE_DIR/artifacts.

They show what SAM2 saw and produced: the patch, the patch with the prompt, the frame with
the prompt and the patch window (downscaled to at most 2048 px), the mask and an overlay.
They never touch a cached source image. `prune` keeps their total size bounded (ARTIFACTS_MB).
A folder is named by its time and 128 random bits; `request_files` and `open_request_file`
read one back for `GET /artifacts/<id>` and nothing else (no links, no other folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from .errors import RequestError, describe
from .files import write_atomically
from .frames import FrameMap
from .masks import Mask
from .pictures import BLUE, GREEN, LINE, YELLOW, draw_prompt, preview, save_picture, to_canvas
from .prompts import PatchPrompt

__all__ = ["ARTIFACTS_FOLDER", "new_request_dir", "open_request_file", "prune", "request_files", "write_artifacts"]

ARTIFACTS_FOLDER = "artifacts"  # inside CACHE_DIR


def new_request_dir(cache_dir: str | Path) -> Path:
    folder = Path(cache_dir) / ARTIFACTS_FOLDER / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    return folder


def request_files(cache_dir: str | Path, ident: str) -> list[str]:
    """The names of the regular files in the request folder `ident` of CACHE_DIR/artifacts (no
    links, folders or partial files); a RequestError (404) for anything that is not such a folder."""
    with _request_folder(cache_dir, ident) as folder, os.scandir(folder) as entries:
        return sorted(entry.name for entry in entries if _is_plain(entry.name) and entry.is_file(follow_symlinks=False))


def open_request_file(cache_dir: str | Path, ident: str, name: str) -> BinaryIO:
    """One regular file of the request folder `ident`, opened for reading without following any
    link; a RequestError (404) for anything else."""
    with _request_folder(cache_dir, ident) as folder:
        missing = RequestError("path", f"{describe(name)} is not a file of the review artifacts {describe(ident)}", 404)
        if not _is_plain(name):
            raise missing
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
        except OSError:
            raise missing from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise missing
        return os.fdopen(fd, "rb")


@contextlib.contextmanager
def _request_folder(cache_dir: str | Path, ident: str) -> Iterator[int]:
    """A descriptor of CACHE_DIR/artifacts/<ident>, opened only when that is a folder and not a link."""
    try:
        if not _is_plain(ident):
            raise FileNotFoundError(ident)
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(Path(cache_dir) / ARTIFACTS_FOLDER / ident, flags)
    except OSError:
        raise RequestError("path", f"{describe(ident)} is not a folder of review artifacts here", 404) from None
    try:
        yield fd
    finally:
        os.close(fd)


def _is_plain(name: str) -> bool:
    """One visible path segment: no separator, no NUL, not `.`/`..` and no hidden (partial) file."""
    return bool(name) and not name.startswith(".") and not any(ch in name for ch in "/\\\0")


def prune(root: Path, max_bytes: int, keep: Path) -> list[Path]:
    """Remove the oldest request folders under `root` until the folders total at most `max_bytes`;
    `keep` (the folder just written) stays whatever its size. Returns the folders removed.
    Several workers may prune at once: a folder another one removed is simply skipped."""
    folders = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root):
            if entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    folders.append((entry.stat().st_mtime_ns, entry.name, Path(entry.path), _size(Path(entry.path))))
    total = sum(size for *_, size in folders)
    removed = []
    for _, _, folder, size in sorted(folders):
        if total <= max_bytes:
            break
        if folder != keep:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            total -= size
    return removed


def _size(folder: Path) -> int:
    total = 0
    for entry in os.scandir(folder):
        with contextlib.suppress(FileNotFoundError):
            total += entry.stat(follow_symlinks=False).st_size
    return total


def write_artifacts(
    folder: Path,
    frame: np.ndarray,
    frame_map: FrameMap,
    patch: np.ndarray,
    prompt: PatchPrompt,
    mask: Mask,
    rings: list[np.ndarray],
    summary: dict,
) -> list[Path]:
    """Write the review images of one request into `folder`; returns their paths."""
    written = []

    def save(name: str, rgb: np.ndarray) -> None:
        written.append(save_picture(folder / name, rgb))

    save("patch.jpg", patch)
    save("patch.prompt.jpg", _draw_prompt(patch.copy(), prompt, (0.0, 0.0), 1.0))
    canvas, factor = preview(frame)
    w = frame_map.window
    if frame_map.mode == "patch":  # otherwise the window is the whole frame
        cv2.rectangle(
            canvas,
            to_canvas((w.x, w.y), factor=factor),
            to_canvas((w.x + w.width, w.y + w.height), factor=factor),
            YELLOW,
            LINE,
        )
    save("frame.prompt.jpg", _draw_prompt(canvas, prompt, (w.x, w.y), factor))
    mask_patch = np.zeros(patch.shape[:2], np.uint8)
    if mask.area:
        h, wd = mask.bits.shape
        mask_patch[mask.y : mask.y + h, mask.x : mask.x + wd] = mask.bits * 255
    save("mask.patch.png", np.repeat(mask_patch[:, :, None], 3, axis=2))
    overlay = patch.copy()
    overlay[mask_patch > 0] = (0.5 * overlay[mask_patch > 0] + 0.5 * np.array(BLUE)).astype(np.uint8)
    for ring in rings:
        cv2.polylines(overlay, [np.round(ring - 0.5).astype(np.int32)], True, GREEN, 2)
    save("patch.mask_overlay.jpg", overlay)
    written.append(write_atomically(folder / "request.json", json.dumps(summary, indent=2).encode()))
    return written


def _draw_prompt(canvas: np.ndarray, prompt: PatchPrompt, origin, factor: float) -> np.ndarray:
    """Draw the patch-coordinate prompt on a canvas whose pixel = (patch + origin) * factor."""
    return draw_prompt(canvas, prompt.box, prompt.points, [label == 1 for label in prompt.labels], origin, factor)
