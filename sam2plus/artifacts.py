"""Review images of one request, written into a folder of its own under CACHE_DIR/artifacts.

They show what SAM2 saw and produced: the patch, the patch with the prompt, the frame with
the prompt and the patch window (downscaled to at most 2048 px), the mask and an overlay.
They never touch a cached source image. `prune` keeps their total size bounded (ARTIFACTS_MB).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import cv2
import numpy as np

from .frames import FrameMap
from .masks import Mask
from .segmenter import PatchPrompt

PREVIEW_MAX_SIDE = 2048
RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 128, 255), (255, 255, 0)


def new_request_dir(cache_dir: str | Path) -> Path:
    folder = Path(cache_dir) / "artifacts" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    return folder


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


def write_artifacts(folder: Path, frame: np.ndarray, frame_map: FrameMap, patch: np.ndarray,
                    prompt: PatchPrompt, mask: Mask, rings: list[np.ndarray], summary: dict) -> list[Path]:
    """Write the review images of one request into `folder`; returns their paths."""
    written = []

    def save(name: str, rgb: np.ndarray) -> None:
        path = folder / name
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        written.append(path)

    save("patch.jpg", patch)
    save("patch.prompt.jpg", _draw_prompt(patch.copy(), prompt, (0.0, 0.0), 1.0))
    preview, factor = _preview(frame)
    w = frame_map.window
    cv2.rectangle(preview, _pt((w.x, w.y), factor), _pt((w.x + w.width, w.y + w.height), factor), YELLOW, 2)
    save("frame.prompt.jpg", _draw_prompt(preview, prompt, (w.x, w.y), factor))
    mask_patch = np.zeros(patch.shape[:2], np.uint8)
    if mask.area:
        h, wd = mask.bits.shape
        mask_patch[mask.y:mask.y + h, mask.x:mask.x + wd] = mask.bits * 255
    save("mask.patch.png", np.repeat(mask_patch[:, :, None], 3, axis=2))
    overlay = patch.copy()
    overlay[mask_patch > 0] = (0.5 * overlay[mask_patch > 0] + 0.5 * np.array(BLUE)).astype(np.uint8)
    for ring in rings:
        cv2.polylines(overlay, [np.round(ring - 0.5).astype(np.int32)], True, GREEN, 2)
    save("patch.mask_overlay.jpg", overlay)
    (folder / "request.json").write_text(json.dumps(summary, indent=2))
    written.append(folder / "request.json")
    return written


def _preview(frame: np.ndarray) -> tuple[np.ndarray, float]:
    factor = min(1.0, PREVIEW_MAX_SIDE / max(frame.shape[:2]))
    if factor == 1.0:
        return frame.copy(), 1.0
    size = (max(1, round(frame.shape[1] * factor)), max(1, round(frame.shape[0] * factor)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), factor


def _pt(xy, factor: float) -> tuple[int, int]:
    return int(round(xy[0] * factor)), int(round(xy[1] * factor))


def _draw_prompt(canvas: np.ndarray, prompt: PatchPrompt, origin, factor: float) -> np.ndarray:
    """Draw the patch-coordinate prompt on a canvas whose pixel = (patch + origin) * factor."""
    to_canvas = lambda xy: _pt((xy[0] + origin[0], xy[1] + origin[1]), factor)  # noqa: E731
    if prompt.box is not None:
        cv2.rectangle(canvas, to_canvas(prompt.box[:2]), to_canvas(prompt.box[2:]), RED, 2)
    for xy, positive in zip(prompt.points, prompt.labels):
        cv2.circle(canvas, to_canvas(xy), 6, GREEN if positive else RED, -1)
    return canvas
