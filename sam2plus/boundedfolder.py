"""A folder of files shared by processes and bounded in disk space and files, least recently used
evicted first: the one mechanism under the download cache, the frame store and the embedding store.

A file is written under a partial name and linked to its final name atomically (`publish`), so no
reader ever sees part of one, and a named file never changes. A request that must not lose a file
while it uses it holds a shared `flock` on it (a `Lease`); eviction removes the least recently used
files past the bounds and skips every file someone holds, whichever process evicts. The bound
counts disk blocks (`st_blocks`, so a one-byte file costs a block) and files. Stores do not rescan
the folder: every process adds what it stores to a running total shared in `.usage` (under a
flock), and the folder is scanned, and evicted from, only when that total passes a bound or is
older than RESCAN_SECONDS (which also corrects any drift: files removed by hand, additions that
raced a scan). Names starting with a dot (the total, the eviction lock, partial files) are the
folder's own and never counted.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from . import metrics
from .files import PART_PREFIX, STALE_PART_SECONDS, PartFile

__all__ = [
    "EVICTION_LOCK",
    "USAGE",
    "BoundedFolder",
    "Lease",
    "default_max_files",
    "disk_usage",
    "lease",
    "touch",
]

EVICTION_LOCK = ".evict.lock"
USAGE = ".usage"  # "<bytes> <files> <scanned at>": the running total every process adds to
EVICTION_ROUNDS = 3  # scans one eviction may take while other workers keep storing
RESCAN_SECONDS = 300.0  # a total older than this is recounted by a scan at the next store
BYTES_PER_FILE = 64 << 10  # the default file bound: one file per 64 KiB of the byte bound ...
MIN_FILES = 1024  # ... and never fewer than this


def default_max_files(max_bytes: int) -> int:
    """The default bound on the number of files: one per BYTES_PER_FILE of `max_bytes`, at least
    MIN_FILES (163840 for 10 GiB)."""
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


class BoundedFolder:
    """Files in one directory, least recently used evicted first past `max_bytes` of disk space
    or `max_files` files (`default_max_files` when not given); `kind` names it in the metrics."""

    def __init__(self, directory: str | Path, max_bytes: int, max_files: int | None = None, kind: str = "downloads"):
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_files = max_files if max_files is not None else default_max_files(max_bytes)
        self.kind = kind
        self.scans = 0  # full scans of the folder by this instance
        self.evictions = 0  # files this instance evicted

    def publish(self, part: PartFile, path: Path) -> tuple[Lease, bool]:
        """Give a written partial file of this folder its name (linked: a name, once given, never
        changes) and lease it, counting it in the total; when the name exists already, lease that
        file instead. True when the file is new."""
        fcntl.flock(part.fd, fcntl.LOCK_SH)  # held from the moment the file has its name
        used = disk_usage(os.fstat(part.fd))
        held, created = _publish(part, path)
        touch(path)
        if created:
            self.account(used, 1)
        return held, created

    def remove(self, path: Path) -> None:
        """Remove a file of this folder (one that turned out bad) and take it out of the total;
        files elsewhere are left, and requests holding it keep reading it."""
        if path.parent != self.directory:
            return
        try:
            used = disk_usage(path.stat())
            path.unlink()
        except FileNotFoundError:
            return
        self.account(-used, -1)

    def size(self) -> int:
        """The disk space the files take now (a scan)."""
        return sum(size for _, size, _ in self._entries())

    def usage(self) -> tuple[int, int, float]:
        """The shared running total: disk bytes, files, and when a scan last counted them (zeros
        when it cannot be read)."""
        try:
            with self._usage_file() as fd:
                return _read_usage(fd)
        except OSError:
            return 0, 0, 0.0

    def account(self, used: int, files: int) -> None:
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
        `max_files`, skipping files in use; the running total becomes what is left. One process
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
        what other processes stored during the scan."""
        started = time.time()
        before = self.usage()[:2]
        entries = self._entries()
        self.scans += 1
        total, count = sum(size for _, size, _ in entries), len(entries)
        evicted = 0
        for _, size, path in sorted(entries):
            if total <= self.max_bytes and count <= self.max_files:
                break
            if not _remove_unused(path):
                continue
            total, count, evicted = total - size, count - 1, evicted + 1
        if evicted:
            self.evictions += evicted
            metrics.count_evictions(self.kind, evicted)
        try:
            with self._usage_file() as fd:  # plus what others stored meanwhile
                now = _read_usage(fd)
                total, count = total + max(0, now[0] - before[0]), count + max(0, now[1] - before[1])
                _write_usage(fd, total, count, started)
        except OSError:
            return 0, 0  # a full disk: the next store tries again
        return total, count

    def _entries(self) -> list[tuple[int, int, Path]]:
        """(mtime, disk usage, path) of every file; stale partial files are removed."""
        entries = []
        stale = time.time() - STALE_PART_SECONDS
        with contextlib.suppress(FileNotFoundError), os.scandir(self.directory) as scan:
            for entry in scan:
                with contextlib.suppress(FileNotFoundError):
                    stat = entry.stat(follow_symlinks=False)
                    if entry.name.startswith(PART_PREFIX) and stat.st_mtime < stale:
                        os.unlink(entry.path)
                    elif not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                        entries.append((stat.st_mtime_ns, disk_usage(stat), Path(entry.path)))
        return entries


def lease(path: Path) -> Lease | None:
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
    """Link the share-locked partial file to `path` and lease it; when the name exists already,
    lease that file instead. True when the file is new."""
    for _ in range(100):
        try:
            os.link(part.path, path)
            return Lease(part.detach()), True
        except FileExistsError:
            existing = lease(path)
            if existing is not None:
                return existing, False
        # the existing file was being evicted: its name is free again in a moment
    raise OSError(f"cannot store {path}: it keeps changing")


def _remove_unused(path: Path) -> bool:
    """Unlink a file unless someone holds it."""
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


def touch(path: Path) -> None:
    """Mark a file recently used."""
    with contextlib.suppress(OSError):
        os.utime(path)


def disk_usage(stat: os.stat_result) -> int:
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
