"""sam2plus.framestore: decoded frames as files read through memory maps, shared by workers."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2plus import framestore
from sam2plus.files import STALE_PART_SECONDS
from sam2plus.framestore import FrameStore
from sam2plus.images import decode_frame, read_info

SIZE = (40, 30)  # 3600 bytes a frame


def painter(value, calls=None, delay=0.0):
    """A decoder that fills the frame with `value` and counts its calls."""

    def decode(out):
        if calls is not None:
            calls.append(value)
        time.sleep(delay)
        frame = out if out is not None else np.empty((SIZE[1], SIZE[0], 3), np.uint8)
        frame[...] = value
        return frame

    return decode


def stored(store):
    return sorted(p.name for p in store.directory.iterdir() if not p.name.startswith("."))


def test_a_frame_is_decoded_once_and_read_back_read_only(tmp_path):
    store = FrameStore(tmp_path, 1 << 20)
    calls = []
    first = store.get("aa", SIZE, painter(7, calls))
    again = store.get("aa", SIZE, painter(9, calls))
    assert calls == [7]
    assert (first == 7).all() and (again == 7).all() and again.shape == (30, 40, 3)
    assert not again.flags.writeable
    assert stored(store) == ["aa-40x30.rgb"]
    assert (store.hits, store.misses) == (1, 1)


def test_the_key_is_the_content_digest_and_the_frame_size(tmp_path):
    store = FrameStore(tmp_path, 1 << 20)
    calls = []
    store.get("aa", SIZE, painter(1, calls))
    store.get("bb", SIZE, painter(2, calls))

    def half(out):
        calls.append(3)
        out[...] = 3
        return out

    assert (store.get("aa", (20, 15), half) == 3).all()
    assert calls == [1, 2, 3]
    assert stored(store) == ["aa-20x15.rgb", "aa-40x30.rgb", "bb-40x30.rgb"]


def test_workers_on_one_cache_dir_share_a_decoded_frame(tmp_path):
    """Two stores on one folder stand for two gunicorn workers: the second never decodes."""
    FrameStore(tmp_path, 1 << 20).get("aa", SIZE, painter(5))
    other = FrameStore(tmp_path, 1 << 20)
    assert (other.get("aa", SIZE, lambda out: pytest.fail("decoded twice")) == 5).all()


def test_least_recently_used_frames_go_past_max_bytes(tmp_path):
    """The bound counts disk blocks: a 3600-byte frame takes a 4 KiB block."""
    store = FrameStore(tmp_path, 2 * 4096)
    for digest in ("aa", "bb"):
        store.get(digest, SIZE, painter(1))
        time.sleep(0.02)
    store.get("aa", SIZE, lambda out: pytest.fail("aa is stored"))  # aa becomes the most recent
    time.sleep(0.02)
    store.get("cc", SIZE, painter(3))
    assert stored(store) == ["aa-40x30.rgb", "cc-40x30.rgb"]


def test_a_frame_larger_than_max_bytes_is_decoded_in_memory_every_time(tmp_path):
    store = FrameStore(tmp_path, 1000)
    calls = []
    frame = store.get("aa", SIZE, painter(4, calls))
    store.get("aa", SIZE, painter(4, calls))
    assert calls == [4, 4] and (frame == 4).all()
    assert stored(store) == []


def test_a_failed_decode_leaves_no_file_and_the_next_request_decodes_again(tmp_path):
    store = FrameStore(tmp_path, 1 << 20)

    def broken(out):
        out[:5] = 1
        raise ValueError("corrupt data")

    with pytest.raises(ValueError):
        store.get("aa", SIZE, broken)
    assert stored(store) == []
    assert (store.get("aa", SIZE, painter(6)) == 6).all()


def test_a_full_disk_falls_back_to_memory(tmp_path, monkeypatch):
    """posix_fallocate is replaced by a stand-in that reports ENOSPC, as a full disk does."""

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(framestore.os, "posix_fallocate", no_space)
    store = FrameStore(tmp_path, 1 << 20)
    frame = store.get("aa", SIZE, painter(8))
    assert (frame == 8).all() and frame.flags.writeable  # a private array, not a stored file
    assert stored(store) == []


def test_threads_asking_for_one_frame_decode_it_once(tmp_path):
    store = FrameStore(tmp_path, 1 << 20)
    calls = []
    barrier = threading.Barrier(8)
    results = [None] * 8

    def worker(i):
        barrier.wait()
        results[i] = store.get("same", SIZE, painter(7, calls, delay=0.2))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert calls == [7]
    assert all((result == 7).all() for result in results)
    assert (store.hits, store.misses) == (7, 1)


def test_one_slow_decode_does_not_hold_up_another_frame(tmp_path):
    store = FrameStore(tmp_path, 1 << 20)
    started, release = threading.Event(), threading.Event()

    def slow(out):
        started.set()
        release.wait(5)
        out[...] = 1
        return out

    thread = threading.Thread(target=store.get, args=("slow", SIZE, slow))
    thread.start()
    assert started.wait(5)
    begin = time.monotonic()
    store.get("fast", SIZE, painter(2))
    assert time.monotonic() - begin < 1
    release.set()
    thread.join(5)


def test_stale_partial_files_are_removed_and_fresh_ones_kept(tmp_path):
    stale = tmp_path / ".part-stale.rgb"
    fresh = tmp_path / ".part-fresh.rgb"
    for path in (stale, fresh):
        path.write_bytes(b"x")
    old = time.time() - 2 * STALE_PART_SECONDS
    os.utime(stale, (old, old))
    FrameStore(tmp_path, 1 << 20)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".part-fresh.rgb"]


def test_clear_deletes_every_frame(tmp_path):
    store = FrameStore(tmp_path, 1 << 20)
    store.get("aa", SIZE, painter(1))
    store.clear()
    assert stored(store) == []


def _rss_anon_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


def test_a_jpeg_frame_costs_the_process_no_private_copy(tmp_path):
    """The point of the store: decoding and reading a patch do not put the frame into the worker's
    own (anonymous) memory; the page cache holds it."""
    width, height = 4000, 3000  # 36 MB as RGB
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (height // 50, width // 50, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(small).resize((width, height)).save(path, quality=90)
    info = read_info(path, 10**9, "image")
    store = FrameStore(tmp_path / "frames", 1 << 30)
    before = _rss_anon_kb()
    frame = store.get("photo", info.size, lambda out: decode_frame(path, info, info.size, "image", out))
    patch = np.ascontiguousarray(frame[1000:2024, 1000:2024])
    grown_mb = (_rss_anon_kb() - before) / 1024
    assert patch.shape == (1024, 1024, 3)
    assert grown_mb < 12, f"the worker's private memory grew by {grown_mb:.0f} MB for a 36 MB frame"
    reference = decode_frame(path, info, info.size, "image")
    assert np.array_equal(frame, reference)
