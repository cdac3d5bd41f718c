"""Issue 21 item 6: the download cache keeps only images that decode, its bound counts disk
blocks and files, and a store does not rescan the folder (a running total shared by processes)."""

from __future__ import annotations

import base64
import io
import multiprocessing
import os
from pathlib import Path

from PIL import Image

from sam2plus import boundedfolder
from sam2plus import downloads as downloads_module
from sam2plus.downloads import EVICTION_LOCK, USAGE, DownloadCache, default_max_files

FIELD = "tasks[0].data.image"


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in (EVICTION_LOCK, USAGE))


def data_url(body: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(body).decode()}"


def png(width: int = 32, height: int = 24, color=(10, 200, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def store_all(cache: DownloadCache, count: int, size: int = 1, tag: str = "") -> None:
    for n in range(count):
        cache.store([f"{tag}{n}".encode().ljust(size, b".")], ".bin").release()


# ---------------------------------------------------------------- only images that decode are kept


def test_refused_bodies_leave_nothing_in_the_download_cache(tmp_path):
    """The issue's reproduction, scaled down: distinct tiny data: non-images, each a 422, used to
    leave one file each. Now neither they, an image past MAX_IMAGE_PIXELS, a format that is not
    supported nor a PNG that fails only when decoded stay; a good image does."""
    from tests.support.inprocess import make_backend, predict_body  # here: spawned workers below skip torch

    client, cache = make_backend(tmp_path, max_image_pixels=2_000_000)
    downloads = cache / "downloads"
    refused = [data_url(f"not an image {n}".encode()) for n in range(200)]
    refused.append(data_url(png(1500, 1500)))  # past MAX_IMAGE_PIXELS: 413
    refused.append(data_url(b"\0\0\1\0\1\0" + bytes(16) + png(), "image/x-icon"))  # not a supported format
    refused.append(data_url(png(400, 300)[:-40]))  # its header reads, its pixel data is cut short
    for value in refused:
        response = client.post("/predict", json=predict_body(image=value))
        assert response.status_code in (413, 422), response.get_data()[:300]
        assert response.get_json()["error"].startswith(FIELD + ": ")
    assert not downloads.exists() or files_in(downloads) == []
    good = png(1600, 1200, (70, 70, 70))
    assert client.post("/predict", json=predict_body(image=data_url(good))).status_code == 200
    assert len(files_in(downloads)) == 1


# ---------------------------------------------------------------- blocks, files and the running total


def test_the_bound_counts_disk_blocks_not_bytes(tmp_path):
    block = os.statvfs(tmp_path).f_frsize
    cache = DownloadCache(tmp_path / "downloads", 8 * block)
    store_all(cache, 50)  # 50 one-byte files: 50 bytes, but 50 blocks
    assert len(files_in(cache.directory)) <= 8
    assert cache.size() <= 8 * block
    assert cache.size() == len(files_in(cache.directory)) * block


def test_the_bound_counts_files(tmp_path):
    cache = DownloadCache(tmp_path / "downloads", 1 << 30, max_files=10)
    store_all(cache, 40)
    assert len(files_in(cache.directory)) == 10
    assert cache.usage()[:2] == (cache.size(), 10)


def test_the_default_file_bound_follows_the_byte_bound():
    assert default_max_files(10240 << 20) == 163840  # DOWNLOAD_CACHE_MB's default
    assert default_max_files(1 << 20) == downloads_module.MIN_FILES


def test_stores_do_not_rescan_the_folder(tmp_path, monkeypatch):
    cache = DownloadCache(tmp_path / "downloads", 1 << 30, max_files=150)
    store_all(cache, 100)
    assert cache.scans == 1, "the first store counts what is there; the others add to the total"
    assert cache.usage()[:2] == (cache.size(), 100)
    store_all(cache, 60, tag="more")  # past 150 files: each store past the bound scans and evicts
    assert len(files_in(cache.directory)) == 150 and 1 < cache.scans <= 11
    monkeypatch.setattr(boundedfolder, "RESCAN_SECONDS", 0.0)  # the total is old: it is recounted
    before = cache.scans
    store_all(cache, 3, tag="late")
    assert cache.scans == before + 3


def test_a_total_that_drifted_is_corrected_by_the_next_scan(tmp_path):
    cache = DownloadCache(tmp_path / "downloads", 1 << 30, max_files=1000)
    store_all(cache, 20)
    for name in files_in(cache.directory)[:5]:
        (cache.directory / name).unlink()  # removed behind the cache's back
    assert cache.usage()[1] == 20
    cache.evict()
    assert cache.usage()[:2] == (cache.size(), 15)


def _store_many(folder: str, tag: str, count: int, max_files: int) -> None:
    store_all(DownloadCache(folder, 1 << 30, max_files=max_files), count, tag=tag)


def test_two_processes_share_one_running_total(tmp_path):
    """Two workers store into one folder at once: the total they share counts both, so the folder
    stays within the file bound (neither worker's own count would)."""
    folder = tmp_path / "downloads"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_store_many, args=(str(folder), tag, 150, 100)) for tag in "ab"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    cache = DownloadCache(folder, 1 << 30, max_files=100)
    assert len(files_in(folder)) <= 100 + 2, "at most a store in flight per worker past the bound"
    assert cache.usage()[1] >= len(files_in(folder)), "the shared total never undercounts"
    cache.store([b"last"], ".bin").release()
    assert len(files_in(folder)) <= 100
    assert cache.scans <= 1
