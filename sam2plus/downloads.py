"""CACHE_DIR/downloads: image files named by their content, bounded in disk space and files,
shared by workers.

A file is written under a temporary name and linked to `<sha1><suffix>` atomically, so no
reader ever sees part of one, and a content-named file never changes. Each request that uses
a file holds a shared `flock` on it (the `Lease` of its `LocalImage`) until it is done; eviction
removes the least recently used files past `max_bytes` and skips every file someone holds, so a
file is never pulled out from under a request, whichever worker evicts. A small JSON record per
URL remembers which content it last had and the server's validators (ETag, Last-Modified).

A file is kept only if the caller's `check` accepts it before it gets its name (the backend
checks it is a supported image within MAX_IMAGE_PIXELS), and `discard` removes one that later
fails to decode. The bound counts disk blocks (`st_blocks`, so a one-byte file costs a block)
and files. Stores do not rescan the folder: every process adds what it stores to a running total
shared in `.usage` (under a flock), and the folder is scanned, and evicted from, only when that
total passes a bound or is older than RESCAN_SECONDS (which also corrects any drift: files
removed by hand, additions that raced a scan).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .files import PART_PREFIX, STALE_PART_SECONDS, PartFile, part_file, write_atomically

__all__ = ["DownloadCache", "Lease", "LocalImage"]

RECORD_SUFFIX = ".json"
EVICTION_LOCK = ".evict.lock"
USAGE = ".usage"  # "<bytes> <files> <scanned at>": the running total every process adds to
EVICTION_ROUNDS = 3  # scans one eviction may take while other workers keep storing
RESCAN_SECONDS = 300.0  # a total older than this is recounted by a scan at the next store
BYTES_PER_FILE = 64 << 10  # the default file bound: one file per 64 KiB of the byte bound ...
MIN_FILES = 1024  # ... and never fewer than this


def default_max_files(max_bytes: int) -> int:
    """The default bound on the number of files: one per BYTES_PER_FILE of `max_bytes`, at least
    MIN_FILES (163840 for the default 10 GiB)."""
    return max(MIN_FILES, max_bytes // BYTES_PER_FILE)


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
    checked: object = field(default=None, compare=False, repr=False)  # what the store's `check` returned

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()

    def __enter__(self) -> LocalImage:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class DownloadCache:
    """Content-named files in one directory, least recently used evicted first past `max_bytes`
    of disk space or `max_files` files (`default_max_files` when not given)."""

    def __init__(self, directory: str | Path, max_bytes: int, max_files: int | None = None):
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_files = max_files if max_files is not None else default_max_files(max_bytes)
        self.scans = 0  # full scans of the folder by this instance

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
            fcntl.flock(part.fd, fcntl.LOCK_SH)  # held from the moment the file has its name
            digest = sha.hexdigest()
            path = self.path(digest, suffix)
            used = _disk_usage(os.fstat(part.fd))
            lease, created = _publish(part, path)
        _touch(path)
        self._account(used if created else 0, 1 if created else 0)
        return LocalImage(path, digest, lease, checked)

    def discard(self, path: Path) -> None:
        """Remove a file of this folder that turned out not to decode (files elsewhere are left);
        requests holding it keep reading it."""
        if path.parent != self.directory:
            return
        try:
            used = _disk_usage(path.stat())
            path.unlink()
        except FileNotFoundError:
            return
        self._account(-used, -1)

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
        path = self._record_path(key)
        new = not path.exists()
        write_atomically(path, json.dumps(record).encode())
        if new:
            with contextlib.suppress(OSError):
                self._account(_disk_usage(path.stat()), 1)

    def _record_path(self, key: str) -> Path:
        return self.directory / (hashlib.sha256(key.encode()).hexdigest()[:32] + RECORD_SUFFIX)

    # -- the bound ------------------------------------------------------------------------------
    def size(self) -> int:
        """The disk space the files and records take now (a scan)."""
        return sum(size for _, size, _ in self._entries())

    def usage(self) -> tuple[int, int, float]:
        """The shared running total: disk bytes, files, and when a scan last counted them (zeros
        when it cannot be read)."""
        try:
            with self._usage_file() as fd:
                return _read_usage(fd)
        except OSError:
            return 0, 0, 0.0

    def _account(self, used: int, files: int) -> None:
        """Add to the shared running total; evict when it passes a bound or is too old (or when
        it cannot be written: a full disk)."""
        total = count = 0
        try:
            with self._usage_file() as fd:
                total, count, scanned = _read_usage(fd)
                total, count = max(0, total + used), max(0, count + files)
                _write_usage(fd, total, count, scanned)
        except OSError:
            scanned = 0.0
        if total > self.max_bytes or count > self.max_files or time.time() - scanned > RESCAN_SECONDS:
            self.evict()

    @contextlib.contextmanager
    def _usage_file(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / USAGE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for a read and a write of a few bytes
            yield fd
        finally:
            os.close(fd)

    def evict(self) -> None:
        """Scan the folder and delete least recently used files until it fits in `max_bytes` and
        `max_files`, skipping files in use; the running total becomes what is left. One worker
        evicts at a time (the others skip it), so it scans again while what the others stored
        meanwhile keeps the total past a bound (a few rounds at most)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = os.open(self.directory / EVICTION_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            for _ in range(EVICTION_ROUNDS):
                total, count = self._evict_once()
                if total <= self.max_bytes and count <= self.max_files:
                    break
        finally:
            os.close(lock)

    def _evict_once(self) -> tuple[int, int]:
        """One scan and eviction (the eviction lock held); the running total it leaves, counting
        what other workers stored during the scan."""
        started = time.time()
        before = self.usage()[:2]
        entries = self._entries()
        self.scans += 1
        total, count = sum(size for _, size, _ in entries), len(entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes and count <= self.max_files:
                break
            if path.name.endswith(RECORD_SUFFIX):
                path.unlink(missing_ok=True)  # a URL's record: without it the URL is asked again
            elif not _remove_unused(path):
                continue
            total, count = total - size, count - 1
        try:
            with self._usage_file() as fd:  # plus what others stored meanwhile
                now = _read_usage(fd)
                total, count = total + max(0, now[0] - before[0]), count + max(0, now[1] - before[1])
                _write_usage(fd, total, count, started)
        except OSError:
            return 0, 0  # a full disk: the next store tries again
        return total, count

    def _entries(self) -> list[tuple[int, int, Path]]:
        """(mtime, disk usage, path) of every file and record; stale partial files are removed."""
        entries = []
        stale = time.time() - STALE_PART_SECONDS
        with contextlib.suppress(FileNotFoundError), os.scandir(self.directory) as scan:
            for entry in scan:
                with contextlib.suppress(FileNotFoundError):
                    stat = entry.stat(follow_symlinks=False)
                    if entry.name.startswith(PART_PREFIX) and stat.st_mtime < stale:
                        os.unlink(entry.path)
                    elif not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                        entries.append((stat.st_mtime_ns, _disk_usage(stat), Path(entry.path)))
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


def _publish(part: PartFile, path: Path) -> tuple[Lease, bool]:
    """Give the written (and share-locked) partial file its content name and lease it; when the
    name exists already, lease that file instead. True when the file is new."""
    for _ in range(100):
        try:
            os.link(part.path, path)
            return Lease(part.detach()), True
        except FileExistsError:
            existing = _lease(path)
            if existing is not None:
                return existing, False
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


def _disk_usage(stat: os.stat_result) -> int:
    """What a file takes on the disk: its blocks (a tiny file takes a whole one), or its size
    where the file system reports fewer blocks (compressed, or not yet allocated)."""
    return max(stat.st_blocks * 512, stat.st_size)


def _read_usage(fd: int) -> tuple[int, int, float]:
    """The running total in `.usage`; a missing or damaged one reads as never scanned."""
    try:
        total, count, scanned = os.pread(fd, 64, 0).decode().split()
        return int(total), int(count), float(scanned)
    except (ValueError, UnicodeDecodeError):
        return 0, 0, 0.0


def _write_usage(fd: int, total: int, count: int, scanned: float) -> None:
    data = f"{total} {count} {scanned:.3f}".encode().ljust(64)
    os.pwrite(fd, data, 0)
