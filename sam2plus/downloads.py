"""CACHE_DIR/downloads: image files named by their content, bounded in bytes, shared by workers.

A file is written under a temporary name and linked to `<sha1><suffix>` atomically, so no
reader ever sees part of one, and a content-named file never changes. Each request that uses
a file holds a shared `flock` on it (the `Lease` of its `LocalImage`) until it is done; eviction
removes the least recently used files past `max_bytes` and skips every file someone holds, so a
file is never pulled out from under a request, whichever worker evicts. A small JSON record per
URL remembers which content it last had and the server's validators (ETag, Last-Modified).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .files import PART_PREFIX, STALE_PART_SECONDS, PartFile, part_file, write_atomically

__all__ = ["DownloadCache", "Lease", "LocalImage"]

RECORD_SUFFIX = ".json"
EVICTION_LOCK = ".evict.lock"


class Lease:
    """A shared flock on one file, held while a request uses it; released by `release()` or when
    the lease is garbage-collected."""

    def __init__(self, fd: int):
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # drops the flock with the last descriptor of this open file

    def __del__(self):
        self.release()


@dataclass(frozen=True)
class LocalImage:
    """An image file on this machine and the SHA-1 of its bytes; a downloaded file is leased
    (kept from eviction) until `release()`, the end of a `with` block, or garbage collection."""

    path: Path
    digest: str
    lease: Lease | None = field(default=None, compare=False, repr=False)

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()

    def __enter__(self) -> LocalImage:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class DownloadCache:
    """Content-named files in one directory, least recently used evicted first past `max_bytes`."""

    def __init__(self, directory: str | Path, max_bytes: int):
        self.directory = Path(directory)
        self.max_bytes = max_bytes

    def path(self, digest: str, suffix: str) -> Path | None:
        if not isinstance(digest, str) or not digest.isalnum():
            return None
        return self.directory / f"{digest}{suffix}"

    def get(self, digest: str, suffix: str) -> LocalImage | None:
        """The cached file with this content, leased, or None."""
        path = self.path(digest, suffix)
        lease = _lease(path) if path is not None else None
        if lease is None:
            return None
        _touch(path)
        return LocalImage(path, digest, lease)

    def lease(self, path: Path, digest: str) -> LocalImage | None:
        """A file of this directory given by path (a task naming it inside CACHE_DIR), leased."""
        lease = _lease(path)
        return LocalImage(path, digest, lease) if lease is not None else None

    def store(self, chunks: Iterable[bytes], suffix: str) -> LocalImage:
        """Write `chunks` into the content-named file atomically and lease it; an exception from
        `chunks` (a size limit, a broken connection) leaves nothing behind."""
        self.directory.mkdir(parents=True, exist_ok=True)
        sha = hashlib.sha1()
        with part_file(self.directory) as part:
            with open(part.fd, "wb", closefd=False) as handle:
                for chunk in chunks:
                    sha.update(chunk)
                    handle.write(chunk)
            fcntl.flock(part.fd, fcntl.LOCK_SH)  # held from the moment the file has its name
            digest = sha.hexdigest()
            path = self.path(digest, suffix)
            lease = _publish(part, path)
        _touch(path)
        self.evict()
        return LocalImage(path, digest, lease)

    # -- per-URL records ------------------------------------------------------------------------
    def record(self, key: str) -> dict:
        """What was stored for `key` (a URL) last time: digest and validators; {} if unknown."""
        path = self._record_path(key)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        _touch(path)
        return record if isinstance(record, dict) else {}

    def save_record(self, key: str, record: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomically(self._record_path(key), json.dumps(record).encode())

    def _record_path(self, key: str) -> Path:
        return self.directory / (hashlib.sha256(key.encode()).hexdigest()[:32] + RECORD_SUFFIX)

    # -- the bound ------------------------------------------------------------------------------
    def size(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def evict(self) -> None:
        """Delete least recently used files until the directory fits in `max_bytes`, skipping
        files in use; one worker evicts at a time (the others skip it)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = os.open(self.directory / EVICTION_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            entries = self._entries()
            total = sum(size for _, size, _ in entries)
            for _, size, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                if path.name.endswith(RECORD_SUFFIX):
                    path.unlink(missing_ok=True)  # a URL's record: without it the URL is asked again
                elif not _remove_unused(path):
                    continue
                total -= size
        finally:
            os.close(lock)

    def _entries(self) -> list[tuple[int, int, Path]]:
        """(mtime, size, path) of every file and record; stale partial files are removed."""
        entries = []
        stale = time.time() - STALE_PART_SECONDS
        with contextlib.suppress(FileNotFoundError), os.scandir(self.directory) as scan:
            for entry in scan:
                with contextlib.suppress(FileNotFoundError):
                    stat = entry.stat(follow_symlinks=False)
                    if entry.name.startswith(PART_PREFIX) and stat.st_mtime < stale:
                        os.unlink(entry.path)
                    elif not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                        entries.append((stat.st_mtime_ns, stat.st_size, Path(entry.path)))
        return entries


def _lease(path: Path) -> Lease | None:
    """A shared lock on the file now at `path`, or None if there is none (or it is being evicted)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        if not _is_at(fd, path):  # evicted (or replaced) between open and lock
            os.close(fd)
            return None
    except BaseException:
        os.close(fd)
        raise
    return Lease(fd)


def _publish(part: PartFile, path: Path) -> Lease:
    """Give the written (and share-locked) partial file its content name and lease it; when the
    name exists already, lease that file instead."""
    for _ in range(100):
        try:
            os.link(part.path, path)
            return Lease(part.detach())
        except FileExistsError:
            existing = _lease(path)
            if existing is not None:
                return existing
        # the existing file was being evicted: its name is free again in a moment
    raise OSError(f"cannot store {path}: it keeps changing")


def _remove_unused(path: Path) -> bool:
    """Unlink a content file unless someone holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        if _is_at(fd, path):
            path.unlink()
        return True
    finally:
        os.close(fd)


def _is_at(fd: int, path: Path) -> bool:
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return mine.st_nlink > 0 and (mine.st_dev, mine.st_ino) == (here.st_dev, here.st_ino)


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)  # marks it recently used
