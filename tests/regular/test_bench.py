"""The benchmark runs end to end on a small image and reports every figure the README quotes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.servers import ROOT

KEYS = {"stock_first_ms", "stock_repeat_ms", "first_ms", "repeat_ms", "other_window_ms", "polygon_repeat_ms",
        "rle_sdk_ms", "rle_ms", "decoder_ms", "peak_rss_mb", "config", "device", "image_px"}


@pytest.mark.slow
def test_benchmark_prints_its_table_and_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "sam2plus.bench", "--size", "2400x1800", "--repeats", "1",
                          "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert KEYS <= figures.keys()
    assert figures["image_px"] == 2400 * 1800 and figures["device"] == "cpu"
    assert figures["rle_identical"] is True
    assert all(figures[key] > 0 for key in KEYS if key.endswith("_ms"))
    assert "SAM2Plus repeated click" in run.stdout and "stock_repeat_over_repeat" in run.stdout
