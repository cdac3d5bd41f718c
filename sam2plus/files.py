"""Files written atomically: a partial file in the target's folder, renamed (or linked) into place.

Readers see the old content or the new one, never a part; a writer that fails or dies leaves
only a partial file named `.part-*`, which the writer removes at once or `remove_stale_parts`
removes later (a worker killed mid-write). Shared by the download cache, the frame store, the
review artifacts and sam2plus-probe.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "CHUNK",
    "PART_PREFIX",
    "STALE_PART_SECONDS",
    "PartFile",
    "copy_atomically",
    "part_file",
    "remove_stale_parts",
    "sha1_of_file",
    "write_atomically",
]

CHUNK = 1 << 20  # bytes read or written at a time when streaming a file
PART_PREFIX = ".part-"
STALE_PART_SECONDS = 3600  # a partial file this old belongs to a writer that died


class PartFile:
    """A partial file: its open descriptor `fd` and its `path` (see `part_file`)."""

    def __init__(self, fd: int, path: Path):
        self.fd: int | None = fd
        self.path = path

    def detach(self) -> int:
        """Hand the descriptor over to the caller, who closes it; leaving the block no longer does."""
        fd, self.fd = self.fd, None
        if fd is None:
            raise ValueError("the descriptor was handed over already")
        return fd


@contextlib.contextmanager
def part_file(directory: Path, suffix: str = "") -> Iterator[PartFile]:
    """A new partial file in `directory`. The caller writes it and renames or links its path into
    place; on leaving the block, however it ends, the descriptor is closed (unless detached) and
    the partial name removed (a file renamed away is not affected)."""
    fd, name = tempfile.mkstemp(dir=directory, prefix=PART_PREFIX, suffix=suffix)
    part = PartFile(fd, Path(name))
    try:
        yield part
    finally:
        if part.fd is not None:
            os.close(part.fd)
        part.path.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes | Iterable[bytes]) -> Path:
    """Replace `path` with `data` (bytes, or chunks of them); an exception while writing,
    from the chunks too, leaves `path` as it was."""
    path = Path(path)
    with part_file(path.parent) as part:
        with open(part.fd, "wb", closefd=False) as handle:
            for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                handle.write(chunk)
        os.replace(part.path, path)
    return path


def copy_atomically(source: Path, path: Path) -> Path:
    """Copy `source` to `path` byte for byte, atomically."""
    with open(source, "rb") as handle:
        return write_atomically(path, iter(lambda: handle.read(CHUNK), b""))


def remove_stale_parts(directory: Path, max_age: float = STALE_PART_SECONDS) -> list[Path]:
    """Delete the partial files in `directory` older than `max_age` seconds; returns them."""
    cutoff = time.time() - max_age
    removed = []
    for path in Path(directory).glob(f"{PART_PREFIX}*"):
        with contextlib.suppress(FileNotFoundError):
            if path.lstat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
    return removed


def sha1_of_file(path: Path) -> str:
    """The SHA-1 of a file's bytes, read in chunks."""
    sha = hashlib.sha1()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()
