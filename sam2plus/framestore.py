"""Decoded frames kept as raw RGB files under CACHE_DIR/frames and read through memory maps.

A frame is decoded once, straight into a file-backed memory map (libjpeg-turbo writes into it),
and every later request maps that file read-only. A request touches only the pages of its patch,
so a 100-megapixel frame costs a worker a few MB of its own memory instead of 300 MB, the
kernel's page cache keeps what is hot (and may drop it under pressure), and all gunicorn
workers on one CACHE_DIR share each decoded frame. The folder is a `BoundedFolder`
(sam2plus/boundedfolder.py, as the download cache and the embedding store): files published
atomically, the least recently used deleted past `max_bytes` of disk blocks (or its file bound).
A mapped frame needs no lease: a deleted file stays readable through its mapping.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import metrics
from .boundedfolder import BoundedFolder, touch
from .files import part_file, remove_stale_parts

__all__ = ["Decoder", "FrameStore"]

log = logging.getLogger(__name__)

SUFFIX = ".rgb"

# decode(out) writes the frame into `out` (H x W x 3 uint8) and returns it; decode(None) returns a new array.
Decoder = Callable[[np.ndarray | None], np.ndarray]


class FrameStore:
    """Frames by (content digest, frame size), on disk, bounded in bytes, shared by processes."""

    def __init__(self, directory: str | Path, max_bytes: int):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.folder = BoundedFolder(self.directory, max_bytes, kind="frames")
        self.hits = self.misses = 0
        self._lock = threading.Lock()
        self._loading: dict[Path, threading.Lock] = {}
        remove_stale_parts(self.directory)  # left by a worker that died while decoding

    def path(self, digest: str, size: tuple[int, int]) -> Path:
        return self.directory / f"{digest}-{size[0]}x{size[1]}{SUFFIX}"

    def get(self, digest: str, size: tuple[int, int], decode: Decoder) -> np.ndarray:
        """The read-only frame of this size for the image with this digest, decoded at most once
        even when several threads ask at the same time."""
        width, height = size
        if width * height * 3 > self.max_bytes:
            self._count(hit=False)
            return decode(None)
        path = self.path(digest, size)
        frame = _map(path, size)
        if frame is None:
            with self._lock:
                gate = self._loading.setdefault(path, threading.Lock())
            with gate:
                frame = _map(path, size)
                if frame is None:
                    try:
                        frame = self._decode_into_file(path, size, decode)
                    finally:
                        with self._lock:
                            self._loading.pop(path, None)
                    self._count(hit=False)
                    return frame
        self._count(hit=True)
        touch(path)  # marks it recently used for eviction
        return frame

    def clear(self) -> None:
        """Delete every stored frame (a frame mapped by a request stays readable until it is done)."""
        for path in self.directory.glob(f"*{SUFFIX}"):
            path.unlink(missing_ok=True)

    def discard(self, digest: str) -> int:
        """Delete the stored frames of every size of the image with this digest; returns how many."""
        paths = list(self.directory.glob(f"{digest}-*{SUFFIX}"))
        for path in paths:
            self.folder.remove(path)  # taken out of the folder's running total too
        return len(paths)

    def _decode_into_file(self, path: Path, size: tuple[int, int], decode: Decoder) -> np.ndarray:
        width, height = size
        nbytes = width * height * 3
        with part_file(self.directory, SUFFIX) as part:
            try:
                # Reserve the blocks now: writing a memory map past a full disk kills the process.
                os.posix_fallocate(part.fd, 0, nbytes)
            except OSError as exc:
                log.warning(
                    "cannot store a %dx%d frame in %s (%s): decoding it in memory", width, height, self.directory, exc
                )
                return decode(None)
            decode(np.frombuffer(mmap.mmap(part.fd, nbytes), np.uint8).reshape(height, width, 3))
            try:
                self.folder.publish(part, path)[0].release()
            except OSError as exc:
                log.warning("cannot store a %dx%d frame in %s (%s)", width, height, self.directory, exc)
        frame = _map(path, size)
        return frame if frame is not None else decode(None)  # another worker deleted it meanwhile

    def _count(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1
        metrics.count_cache("frame", hit)


def _map(path: Path, size: tuple[int, int]) -> np.ndarray | None:
    """The file as a read-only H x W x 3 array, or None when it is missing or of another size.
    The mapping lives as long as the array or a view of it."""
    width, height = size
    try:
        with open(path, "rb") as file:
            if os.fstat(file.fileno()).st_size != width * height * 3:
                return None
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        return None
    return np.frombuffer(mapped, np.uint8).reshape(height, width, 3)
