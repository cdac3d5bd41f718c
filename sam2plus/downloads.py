"""CACHE_DIR/downloads: image files named by their content, bounded in disk space and files,
shared by workers (a `BoundedFolder`, sam2plus/boundedfolder.py).

A file is written under a temporary name and linked to `<sha1><suffix>` atomically, so no
reader ever sees part of one, and a content-named file never changes. Each request that uses
a file holds a shared `flock` on it (the `Lease` of its `LocalImage`) until it is done; eviction
removes the least recently used files past `max_bytes` and skips every file someone holds, so a
file is never pulled out from under a request, whichever worker evicts. A small JSON record per
URL remembers which content it last had and the server's validators (ETag, Last-Modified).

A file is kept only if the caller's `check` accepts it before it gets its name (the backend
checks it is a supported image within MAX_IMAGE_PIXELS), and `discard` removes one that later
fails to decode. The bound (disk blocks and files, a running total in `.usage`) is the bounded
folder's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .boundedfolder import (  # noqa: F401 - EVICTION_LOCK, USAGE, MIN_FILES: named here for the tests
    EVICTION_LOCK,
    MIN_FILES,
    USAGE,
    BoundedFolder,
    Lease,
    default_max_files,
    disk_usage,
    lease,
    touch,
)
from .files import part_file, write_atomically

__all__ = ["DownloadCache", "Lease", "LocalImage"]

RECORD_SUFFIX = ".json"


@dataclass(frozen=True)
class LocalImage:
    """An image file on this machine and the SHA-1 of its bytes; a downloaded file is leased
    (kept from eviction) until `release()`, the end of a `with` block, or garbage collection."""

    path: Path
    digest: str
    lease: Lease | None = field(default=None, compare=False, repr=False)
    checked: object = field(default=None, compare=False, repr=False)  # what the store's `check` returned

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()

    def __enter__(self) -> LocalImage:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class DownloadCache(BoundedFolder):
    """Content-named files in one directory, least recently used evicted first past `max_bytes`
    of disk space or `max_files` files (`default_max_files` when not given)."""

    def __init__(self, directory: str | Path, max_bytes: int, max_files: int | None = None):
        super().__init__(directory, max_bytes, max_files, kind="downloads")

    def path(self, digest: str, suffix: str) -> Path | None:
        if not isinstance(digest, str) or not digest.isalnum():
            return None
        return self.directory / f"{digest}{suffix}"

    def get(self, digest: str, suffix: str) -> LocalImage | None:
        """The cached file with this content, leased, or None."""
        path = self.path(digest, suffix)
        held = lease(path) if path is not None else None
        if held is None:
            return None
        touch(path)
        return LocalImage(path, digest, held)

    def lease(self, path: Path, digest: str) -> LocalImage | None:
        """A file of this directory given by path (a task naming it inside CACHE_DIR), leased."""
        held = lease(path)
        return LocalImage(path, digest, held) if held is not None else None

    def store(self, chunks: Iterable[bytes], suffix: str, check: Callable[[Path], object] | None = None) -> LocalImage:
        """Write `chunks` into the content-named file atomically and lease it. `check` is called
        with the written file's path before it gets its name (what it returns is the result's
        `checked`); an exception from it or from `chunks` (a size limit, a broken connection,
        not an image) leaves nothing behind."""
        self.directory.mkdir(parents=True, exist_ok=True)
        sha = hashlib.sha1()
        with part_file(self.directory) as part:
            with open(part.fd, "wb", closefd=False) as handle:
                for chunk in chunks:
                    sha.update(chunk)
                    handle.write(chunk)
            checked = check(part.path) if check is not None else None
            digest = sha.hexdigest()
            path = self.path(digest, suffix)
            held, _ = self.publish(part, path)
        return LocalImage(path, digest, held, checked)

    def discard(self, path: Path) -> None:
        """Remove a file of this folder that turned out not to decode (files elsewhere are left);
        requests holding it keep reading it."""
        self.remove(path)

    # -- per-URL records ------------------------------------------------------------------------
    def record(self, key: str) -> dict:
        """What was stored for `key` (a URL) last time: digest and validators; {} if unknown."""
        path = self._record_path(key)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        touch(path)
        return record if isinstance(record, dict) else {}

    def save_record(self, key: str, record: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._record_path(key)
        new = not path.exists()
        write_atomically(path, json.dumps(record).encode())
        if new:
            with contextlib.suppress(OSError):
                self.account(disk_usage(path.stat()), 1)

    def _record_path(self, key: str) -> Path:
        return self.directory / (hashlib.sha256(key.encode()).hexdigest()[:32] + RECORD_SUFFIX)
