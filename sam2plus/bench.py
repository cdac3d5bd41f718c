"""Benchmark: SAM2Plus against the stock SAM2 backend's pipeline, in one process, real SAM2.

    python -m sam2plus.bench [--config CONFIG] [--checkpoint untrained|PATH] [--device cpu|cuda|auto]
                             [--size 10240x9800] [--repeats N] [--json PATH]

A synthetic JPEG (10240x9800 by default) is written to a temporary CACHE_DIR. SAM2Plus runs
its real request path (`SAM2Plus.setup` + `SAM2Plus.predict`, subpatching 1024) on a 320 px
box; the stock pipeline is HumanSignal's example reproduced step by step: Pillow decode of
the whole image, `set_image` on it on every click, `predict`, and label-studio-sdk's
`mask2rle` of the full-resolution mask. Every figure is a median in milliseconds over runs
in this process. SAM2Plus is measured first and its peak memory read before anything else
allocates (`peak_rss_mb`); the stock part's peak is `stock_peak_rss_mb`.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .config import ServerConfig
from .images import read_info
from .masks import mask_in_image
from .rle import encode_brush_rle
from .segmenter import UNTRAINED, to_model_input

PROMPT = 320
LABEL_CONFIG = ('<View><Image name="image" value="$image"/>'
                '<RectangleLabels name="prompt" toName="image" smart="true"><Label value="object"/></RectangleLabels>'
                '<BrushLabels name="brush" toName="image"><Label value="object"/></BrushLabels>'
                '<PolygonLabels name="polygon" toName="image"><Label value="object"/></PolygonLabels></View>')


@dataclass(frozen=True)
class Scene:
    """The benchmark image's size and where the clicks go (fractions of it)."""

    width: int = 10240
    height: int = 9800

    def box(self, fx: float, fy: float) -> tuple[int, int, int, int]:
        x0, y0 = int(fx * (self.width - PROMPT)), int(fy * (self.height - PROMPT))
        return x0, y0, x0 + PROMPT, y0 + PROMPT

    @property
    def main_box(self):
        return self.box(0.4, 0.62)

    @property
    def other_boxes(self):
        return [self.box(0.15, 0.15), self.box(0.8, 0.26), self.box(0.6, 0.88)]

    def context(self, box) -> dict:
        x0, y0, x1, y1 = box
        w, h = self.width, self.height
        return {"result": [{"original_width": w, "original_height": h, "type": "rectanglelabels",
                            "from_name": "prompt", "to_name": "image",
                            "value": {"x": x0 / w * 100, "y": y0 / h * 100, "width": (x1 - x0) / w * 100,
                                      "height": (y1 - y0) / h * 100, "rotation": 0, "rectanglelabels": ["object"]}}]}


def make_image(path, width: int, height: int) -> Path:
    """A JPEG with texture and shapes, so that the file and its decode are realistic."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (max(1, height // 64), max(1, width // 64), 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(400):
        x, y, r = int(rng.integers(0, width)), int(rng.integers(0, height)), int(rng.integers(20, 250))
        cv2.circle(image, (x, y), r, tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return Path(path)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_rss_peak() -> None:
    """Start the peak (Linux VmHWM) over from the current RSS."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def median_ms(fn, runs: int, before=None) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        if before:
            before()
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def run(config_name: str, checkpoint: str, device: str, repeats: int, scene: Scene, workdir: Path) -> dict:
    from label_studio_sdk.converter.brush import mask2rle

    from model import SAM2Plus

    image_path = workdir / "bench.jpg"
    # Written by a child process, so that drawing the picture does not count in this one's memory.
    subprocess.run([sys.executable, "-c", "from sam2plus.bench import make_image; "
                    f"make_image({str(image_path)!r}, {scene.width}, {scene.height})"], check=True)
    config = ServerConfig(device=device, model_config=config_name, model_checkpoint=checkpoint, checkpoint_dir="/",
                          cache_dir=str(workdir), model_dir=str(workdir / "models"))
    model = SAM2Plus(config)
    pipeline, segmenter = model.pipeline, model.pipeline.segmenter
    task = [{"id": 1, "data": {"image": image_path.name}}]
    for fmt in ("BrushLabels", "PolygonLabels"):
        model.setup(fmt, LABEL_CONFIG, {"subpatching": {"patch_size": 1024}, "return_format": {"type": fmt}})

    def click(fmt="BrushLabels", box=scene.main_box):
        return model.predict(task, scene.context(box), fmt, LABEL_CONFIG)

    def cold():
        pipeline.frames.clear()
        segmenter.cache.clear()
        gc.collect()

    figures = {"config": config_name, "checkpoint": checkpoint, "device": segmenter.device,
               "image_px": scene.width * scene.height, "image_size": [scene.width, scene.height],
               "image_bytes": image_path.stat().st_size}
    reset_rss_peak()
    click()  # warm-up: first-call allocations of torch and the decoders
    figures["first_ms"], _ = median_ms(click, repeats, before=cold)
    figures["repeat_ms"], answer = median_ms(click, repeats * 3)
    boxes = iter(scene.other_boxes)
    figures["other_window_ms"], _ = median_ms(lambda: click(box=next(boxes)), len(scene.other_boxes))
    click("PolygonLabels")
    figures["polygon_repeat_ms"], _ = median_ms(lambda: click("PolygonLabels"), repeats * 3)
    figures["peak_rss_mb"] = _status_mb("VmHWM")  # the request path ends here
    figures["process_rss_mb"] = _status_mb("VmRSS")
    figures["regions_in_last_answer"] = len(answer["results"][0]["result"])

    info = read_info(image_path, 10**9, "bench")
    image = pipeline.fetcher.fetch(image_path.name, "bench")
    figures["decode_ms"], frame = median_ms(lambda: pipeline.frame(image, info, info.size, "bench"), repeats,
                                            before=cold)  # as a first click does: into the frame store
    x0, y0, x1, y1 = scene.main_box
    top, left = max(0, y0 - 352), max(0, x0 - 352)
    patch = np.ascontiguousarray(frame[top:top + 1024, left:left + 1024])
    del frame
    predictor = segmenter.predictor
    box_in_patch = np.array([x0 - left, y0 - top, x1 - left, y1 - top], dtype=np.float32)
    with segmenter._autocast():
        figures["encoder_ms"], _ = median_ms(lambda: predictor.set_image(to_model_input(patch, segmenter.input_size)),
                                             repeats)
        figures["decoder_ms"], _ = median_ms(lambda: predictor.predict(box=box_in_patch, multimask_output=True,
                                                                        return_logits=True), repeats * 3)

    # The RLE of the click's own mask (a disc at the box when untrained weights found nothing).
    prediction = pipeline.run(task[0], scene.context(scene.main_box), LABEL_CONFIG, model.settings.load("BrushLabels"))
    local = mask_in_image(prediction.mask, prediction.frame_map)
    if local.area == 0:
        yy, xx = np.mgrid[-160:160, -160:160]
        local = type(local)(xx ** 2 + yy ** 2 <= 150 ** 2, x0, y0)
    figures["rle_mask_px"] = local.area
    figures["rle_ms"], ours = median_ms(
        lambda: encode_brush_rle(local.bits, local.x, local.y, scene.width, scene.height), repeats * 3)
    full = np.zeros((scene.height, scene.width), np.uint8)
    h, w = local.bits.shape
    full[local.y:local.y + h, local.x:local.x + w] = local.bits
    figures["rle_sdk_ms"], theirs = median_ms(lambda: mask2rle(full * 255), repeats)
    figures["rle_identical"] = list(theirs) == list(ours)
    full = None  # free it before the stock part

    def stock_click():
        image = np.array(Image.open(image_path).convert("RGB"))
        predictor.set_image(image)
        masks, scores, _ = predictor.predict(box=np.array(scene.main_box, dtype=np.float32), multimask_output=True)
        return mask2rle(masks[int(np.argmax(scores))].astype(np.uint8) * 255)

    with segmenter._autocast():
        figures["stock_first_ms"], _ = median_ms(stock_click, 1, before=gc.collect)
        figures["stock_repeat_ms"], _ = median_ms(stock_click, max(1, repeats - 1), before=gc.collect)
    figures["stock_peak_rss_mb"] = _status_mb("VmHWM")
    figures["ratios"] = {
        "stock_repeat_over_repeat": figures["stock_repeat_ms"] / figures["repeat_ms"],
        "repeat_over_decoder": figures["repeat_ms"] / figures["decoder_ms"],
        "rle_sdk_over_rle": figures["rle_sdk_ms"] / figures["rle_ms"],
        "first_over_decode_plus_encoder": figures["first_ms"] / (figures["decode_ms"] + figures["encoder_ms"]),
        "stock_first_over_first": figures["stock_first_ms"] / figures["first_ms"],
    }
    return figures


def print_table(figures: dict) -> None:
    rows = [("stock first click", "stock_first_ms"), ("stock repeated click", "stock_repeat_ms"),
            ("SAM2Plus first click", "first_ms"), ("SAM2Plus repeated click", "repeat_ms"),
            ("SAM2Plus click, other window", "other_window_ms"), ("SAM2Plus repeated click, polygon", "polygon_repeat_ms"),
            ("JPEG decode into the frame store", "decode_ms"), ("image encoder (1024 patch)", "encoder_ms"),
            ("mask decoder (bare predict)", "decoder_ms"), ("label-studio-sdk mask2rle", "rle_sdk_ms"),
            ("SAM2Plus brush RLE", "rle_ms")]
    width, height = figures["image_size"]
    print(f"SAM2Plus benchmark: {figures['config']} ({figures['checkpoint']}) on {figures['device']}, "
          f"{width}x{height} JPEG ({figures['image_bytes'] / 1e6:.1f} MB)")
    for label, key in rows:
        print(f"  {label:38s} {figures[key]:10.1f} ms")
    print(f"  {'peak RSS, SAM2Plus request path':38s} {figures['peak_rss_mb']:10.0f} MB")
    print(f"  {'peak RSS, with the stock pipeline':38s} {figures['stock_peak_rss_mb']:10.0f} MB")
    print(f"  RLE identical to label-studio-sdk: {figures['rle_identical']} ({figures['rle_mask_px']} mask px)")
    for name, value in figures["ratios"].items():
        print(f"  {name:38s} {value:10.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sam2plus.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/sam2.1/sam2.1_hiera_t.yaml")
    parser.add_argument("--checkpoint", default=UNTRAINED, help="'untrained' or an absolute checkpoint path")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--size", default="10240x9800", help="WIDTHxHEIGHT of the synthetic JPEG")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    width, _, height = args.size.partition("x")
    scene = Scene(int(width), int(height))
    with tempfile.TemporaryDirectory(prefix="sam2plus-bench-") as workdir:
        figures = run(args.config, args.checkpoint, args.device, args.repeats, scene, Path(workdir))
    print_table(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
