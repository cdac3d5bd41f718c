"""The benchmark runs end to end on a small image and reports every figure the docs quote."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.servers import REPO

KEYS = {
    "stock_first_ms",
    "stock_repeat_ms",
    "first_ms",
    "repeat_ms",
    "other_window_ms",
    "polygon_repeat_ms",
    "rle_sdk_ms",
    "rle_ms",
    "decoder_ms",
    "peak_rss_mb",
    "config",
    "device",
    "image_px",
    # the annotation session and the 4 annotators
    "session_encoder_runs",
    "session_encoder_ms",
    "session_open_ms",
    "session_warm_up_ms",
    "warm_first_ms",
    "cold_first_ms",
    "refine_ms",
    "multi_refine_p50_ms",
    "multi_refine_p95_ms",
    "multi_alone_refine_p50_ms",
    "multi_alone_refine_p95_ms",
    "multi_first_max_ms",
    # the Bitmask PNG against the brush RLE
    "bitmask_png_ms",
    "bitmask_rle_ms",
    "bitmask_url_bytes",
    "bitmask_rle_json_bytes",
    "bitmask_large_png_ms",
    "bitmask_large_url_bytes",
}
GPU_KEYS = {"model_gpu_mb", "peak_gpu_mb", "stock_peak_gpu_mb"}
RATIOS = {
    "stock_repeat_over_repeat",
    "repeat_over_decoder",
    "rle_sdk_over_rle",
    "refine_over_decoder",
    "warm_first_over_encoder",
    "warm_first_over_cold_first",
    "multi_p95_over_alone",
    "bitmask_png_over_rle_ms",
    "bitmask_url_over_rle_json_bytes",
    "bitmask_large_url_over_rle_json_bytes",
}


def bench(tmp_path, *args: str, timeout: float = 1200) -> tuple[subprocess.CompletedProcess, dict]:
    """`python -m sam2plus.bench` with `args`, which must succeed: its output and its JSON figures."""
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "sam2plus.bench", *args, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run, json.loads(out.read_text())


@pytest.mark.slow
def test_benchmark_prints_its_table_and_writes_every_figure(tmp_path):
    small = ["--size", "2400x1800", "--repeats", "1", "--annotators", "2"]
    run, figures = bench(tmp_path, *small, "--encoder-runtime", "torch", "--no-store")
    assert KEYS <= figures.keys()
    assert figures["image_px"] == 2400 * 1800 and figures["device"] == "cpu"
    assert figures["rle_identical"] is True
    assert all(figures[key] > 0 for key in KEYS if key.endswith("_ms"))
    assert RATIOS <= figures["ratios"].keys() and all(figures["ratios"][name] > 0 for name in RATIOS)
    # torch eager serves the model itself: no second encoder to compare it with
    assert figures["encoder"].startswith("torch-") and figures["ratios"]["eager_first_over_first"] is None
    # Facts, not timings: object 1's refinement clicks and object 2 reuse object 1's window, object 3
    # (far away) needs its own; the session has 6 clicks.
    assert figures["session_encoder_runs"] == 2
    assert len(figures["session_clicks_ms"]) == 6
    assert "SAM2Plus repeated click" in run.stdout and "stock_repeat_over_repeat" in run.stdout
    assert figures["multi_annotators"] == 2 and "2 annotators: refinement p95" in run.stdout
    assert "multi_p95_over_alone" in run.stdout and "session: encoder runs" in run.stdout
    assert "Bitmask PNG, large disc" in run.stdout and figures["bitmask_large_mask_px"] > 0
    # GPU memory is a CUDA figure: present and None on CPU (tests/gpu measures it on CUDA).
    assert {figures[key] for key in GPU_KEYS} == {None} and "peak GPU memory" not in run.stdout


STORE_KEYS = {
    "store_decoder_ms",
    "store_click_ms",
    "store_repeat_ms",
    "store_read_ms",
    "other_process_decoder_ms",
    "other_process_click_ms",
    "restart_first_ms",
    "prefetched_decoder_ms",
    "prefetched_first_ms",
    "prefetched_repeat_ms",
    "prefetched_frame_decoder_ms",
    "prefetched_frame_first_ms",
    "prefetched_frame_repeat_ms",
    "prefetched_decoder_first_ms",
    "prefetched_frame_decoder_first_ms",
    "grid_decoder_ms",
    "grid_click_ms",
}


ENCODER_KEYS = {
    "startup_cold_ms",
    "startup_warm_ms",
    "startup_eager_ms",
    "startup_cold_peak_rss_mb",
    "worker_rss_mb",
    "worker_idle_rss_mb",
    "worker_peak_rss_mb",
    "worker_eager_rss_mb",
    "worker_eager_idle_rss_mb",
    "worker_eager_peak_rss_mb",
    "worker_idle_anon_mb",
    "worker_eager_idle_anon_mb",
    "worker_encode_ms",
    "converted_encoder_ms",
    "eager_encoder_ms",
    "converted_first_ms",
    "eager_first_ms",
}


@pytest.mark.slow
def test_the_store_scenarios_report_their_figures_and_identical_regions(tmp_path):
    run, figures = bench(tmp_path, "--store-only", "--repeats", "1", "--encoder-runtime", "torch", timeout=1800)
    assert STORE_KEYS <= figures.keys() and all(figures[key] > 0 for key in STORE_KEYS)
    # Facts, not timings: every answer is a fresh encoder run's; no click of another process, of the
    # prefetched task or of the grid ran the encoder; an embedding is 16 MiB and a small header.
    assert set(figures["store_regions_identical"].values()) == {True}, figures["store_regions_identical"]
    assert figures["other_process_encoder_runs"] == 0 and figures["grid_click_encoder_runs"] == 0
    assert figures["prefetched_first_encoder_runs"] == 0 and figures["prefetched_frame_first_encoder_runs"] == 0
    assert figures["grid_windows"] == 9
    assert 16 << 20 < figures["store_bytes_per_embedding"] < (16 << 20) + 4096
    assert set(figures["store_ratios"]) == {
        "store_click_over_decoder",
        "other_process_click_over_decoder",
        "restart_first_over_decoder",
        "prefetched_first_over_decoder",
        "prefetched_frame_first_over_decoder",
        "prefetched_first_over_decoder_first",
        "prefetched_frame_first_over_decoder_first",
        "grid_click_over_decoder",
        "store_click_over_repeat",
        "prefetched_first_over_repeat",
        "prefetched_frame_first_over_repeat",
    }
    assert "click served from the store" in run.stdout and "SAM2Plus repeated click" not in run.stdout


@pytest.mark.slow
def test_the_encoder_scenarios_measure_the_default_runtime_against_torch_eager(tmp_path):
    """The default encoder on a CPU (OpenVINO), converted once by the first worker's start, against
    torch eager in the same run; `--scenarios encoder` leaves the other scenarios out."""
    run, figures = bench(tmp_path, "--size", "2400x1800", "--repeats", "1", "--scenarios", "encoder")
    assert figures["encoder"].startswith("openvino-") and figures["device"] == "cpu"
    assert all(figures[key] > 0 for key in ENCODER_KEYS), {key: figures[key] for key in ENCODER_KEYS}
    assert "first_ms" not in figures and "stock_first_ms" not in figures, "--scenarios encoder runs these only"
    # Facts, not timings: the cold start converted and the warm one loaded what it built.
    assert "converting the image encoder" in run.stderr and "converted image encoder found" in run.stderr
    assert figures["ratios"]["eager_first_over_first"] > 0 and "first click, torch eager" in run.stdout
