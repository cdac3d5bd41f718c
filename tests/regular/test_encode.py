"""`python -m sam2plus.encode`: images encoded into the embedding store ahead of the annotators,
run as a command with the real SAM2 (hiera-t, untrained, CPU). The project form (Label Studio's
API) runs against a real Label Studio in tests/e2e/test_prefetch.py."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sam2plus.encode import image_paths
from tests.support.servers import REPO, TEST_MODEL

pytestmark = pytest.mark.slow


def images(folder, count: int) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):
        path = folder / f"image-{i}.png"
        Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def encode(tmp_path, *args, store_mb: int = 1024) -> tuple[int, dict, str]:
    env = {
        "PATH": "/usr/bin:/bin",
        **TEST_MODEL,
        "CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_DIR": str(tmp_path / "models"),
        "EMBEDDING_STORE_MB": str(store_mb),
    }
    done = subprocess.run(
        [sys.executable, "-m", "sam2plus.encode", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout + done.stderr
    return done.returncode, json.loads(lines[-1]), done.stderr


def stored(tmp_path) -> int:
    return len(list((tmp_path / "cache" / "embeddings").glob("*.emb")))


def test_a_folder_is_encoded_once_then_skipped_with_a_progress_bar(tmp_path):
    paths = images(tmp_path / "images", 3)
    (tmp_path / "list.txt").write_text(f"{paths[0]}\n# a comment\n")
    assert image_paths([str(tmp_path / "images"), f"@{tmp_path / 'list.txt'}"]) == [*paths, paths[0]]
    rc, report, stderr = encode(tmp_path, tmp_path / "images")
    assert rc == 0 and report["images"] == 3 and report["encoded_windows"] == 3 and report["failed"] == 0
    assert report["images_per_second"] > 0 and "3/3" in stderr, "tqdm's bar"
    assert stored(tmp_path) == 3
    rc, again, _ = encode(tmp_path, tmp_path / "images")
    assert rc == 0 and again["images"] == 3 and again["encoded_windows"] == 0, "resumed: all held"


def test_encoding_stops_when_the_store_is_full(tmp_path):
    images(tmp_path / "images", 3)
    rc, report, stderr = encode(tmp_path, tmp_path / "images", store_mb=24)  # room for one 16 MB embedding
    assert rc == 1 and report["store_full"] and report["encoded_windows"] == 1 and stored(tmp_path) == 1
    assert "the embedding store is full" in stderr


def test_a_file_that_is_not_an_image_is_reported_and_the_rest_encoded(tmp_path):
    paths = images(tmp_path / "images", 1)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    rc, report, stderr = encode(tmp_path, tmp_path / "bad.png", *paths)
    assert rc == 1 and report["failed"] == 1 and report["images"] == 1 and "bad.png" in stderr
