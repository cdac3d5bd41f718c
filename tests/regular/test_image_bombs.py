"""Issue 21 item 1: image bombs in container formats and lying headers are refused before any
pixel is decoded. Each bomb goes as a data: URL through the backend's fetch + read_info +
decode_frame path in a fresh process (tests/support/bombs.py), which measures its peak memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.support.bombs import FIELD, bombs

ROOT = Path(__file__).resolve().parents[2]
MAX_PIXELS = 4_000_000
SIDE = 6000  # 36 megapixels inside each bomb: 144 MB as RGBA, 9 times MAX_PIXELS
SLACK = 16 << 20  # what a bomb may add to the peak beyond a small legitimate image's


def _measure(tmp_path: Path, files: dict[str, tuple[str, bytes]]) -> dict[str, dict]:
    arguments = []
    for name, (media_type, body) in files.items():
        (tmp_path / name).write_bytes(body)
        arguments.append(f"{media_type}:{tmp_path / name}")
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.bombs", str(MAX_PIXELS), *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {answer["file"]: answer for answer in map(json.loads, done.stdout.splitlines())}


def test_bombs_in_every_container_are_refused_with_flat_peak_memory(tmp_path):
    small = tmp_path / "small.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(small)
    answers = _measure(tmp_path, {"small": ("image/png", small.read_bytes()), **bombs(SIDE)})

    baseline = answers.pop("small")
    assert baseline["status"] == 200, baseline
    expected = {  # what each is answered; the 16x16 first page of a TIFF is the image it shows
        "ico": 422,  # not a supported format: Pillow's ICO reader decodes the PNG it holds in open()
        "icns": 422,
        "png": 413,
        "gif": 413,  # the first frame is larger than the screen: that is its size
        "webp": 413,  # the canvas the header says, refused before the reader allocates it
        "tiff-pages": 200,
    }
    assert {name: answer["status"] for name, answer in answers.items()} == expected
    for name, answer in answers.items():
        assert answer["grown"] <= baseline["grown"] + SLACK, f"{name}: peak grew {answer['grown'] >> 20} MiB"
        if answer["status"] != 200:
            assert answer["message"].startswith(FIELD + ":"), answer
    assert "JPEG, MPO, PNG, WEBP, GIF, TIFF, BMP" in answers["ico"]["message"]
    assert f"MAX_IMAGE_PIXELS={MAX_PIXELS}" in answers["webp"]["message"]
    assert answers["tiff-pages"]["message"] == "16x16 TIFF"
