"""Benchmark: SAM2Plus against the stock SAM2 backend's pipeline, in one process, real SAM2.

    python -m sam2plus.bench [--config CONFIG] [--checkpoint untrained|PATH] [--device cpu|cuda]
                             [--repeats N] [--json PATH]

A synthetic 10240x9800 JPEG is written to a temporary CACHE_DIR. SAM2Plus runs its real
request path (`SAM2Plus.setup` + `SAM2Plus.predict`, subpatching 1024) on a 320 px box; the
stock pipeline is HumanSignal's example reproduced step by step: Pillow decode of the whole
image, `set_image` on it on every click, `predict`, and label-studio-sdk's `mask2rle` of the
full-resolution mask. Every figure is a median in milliseconds over runs in this process.
SAM2Plus is measured first, so `peak_rss_mb` is its own peak (the stock pipeline's is
reported apart as `stock_peak_rss_mb`).
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
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .config import ServerConfig
from .images import decode_frame, read_info
from .segmenter import UNTRAINED, to_model_input

WIDTH, HEIGHT = 10240, 9800
BOX = (4000, 6000, 4320, 6320)  # x0, y0, x1, y1: a 320 px prompt
OTHER_BOXES = [(1500, 1500, 1820, 1820), (8000, 2500, 8320, 2820), (6000, 8500, 6320, 8820)]
LABEL_CONFIG = ('<View><Image name="image" value="$image"/>'
                '<RectangleLabels name="prompt" toName="image" smart="true"><Label value="object"/></RectangleLabels>'
                '<BrushLabels name="brush" toName="image"><Label value="object"/></BrushLabels>'
                '<PolygonLabels name="polygon" toName="image"><Label value="object"/></PolygonLabels></View>')


def make_image(path) -> Path:
    """A 100-megapixel JPEG with texture and shapes, so the file and its decode are realistic."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (HEIGHT // 64, WIDTH // 64, 3), dtype=np.uint8)
    image = cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    for _ in range(400):
        x, y, r = int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT)), int(rng.integers(20, 250))
        cv2.circle(image, (x, y), r, tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return Path(path)


def rss_peak_mb() -> float:
    """This process's peak resident memory since the last `reset_rss_peak` (Linux VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_rss_peak() -> None:
    """Start the peak over from the current RSS, so that setup (writing the test image) is not counted."""
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


def context(box) -> dict:
    x0, y0, x1, y1 = box
    return {"result": [{"original_width": WIDTH, "original_height": HEIGHT, "type": "rectanglelabels",
                        "from_name": "prompt", "to_name": "image",
                        "value": {"x": x0 / WIDTH * 100, "y": y0 / HEIGHT * 100, "width": (x1 - x0) / WIDTH * 100,
                                  "height": (y1 - y0) / HEIGHT * 100, "rotation": 0, "rectanglelabels": ["object"]}}]}


def run(config_name: str, checkpoint: str, device: str, repeats: int, workdir: Path) -> dict:
    from label_studio_sdk.converter.brush import mask2rle

    from model import SAM2Plus

    from .rle import encode_brush_rle

    image_path = workdir / "bench.jpg"
    # Written by a child process, so that building the picture does not count in this one's memory.
    subprocess.run([sys.executable, "-c", f"from sam2plus.bench import make_image; make_image({str(image_path)!r})"],
                   check=True)
    config = ServerConfig(device=device, model_config=config_name, model_checkpoint=checkpoint,
                          checkpoint_dir=str(Path(checkpoint).parent) if checkpoint != UNTRAINED else "/",
                          cache_dir=str(workdir), model_dir=str(workdir / "models"))
    model = SAM2Plus(config)
    segmenter = model.pipeline.segmenter
    task = [{"id": 1, "data": {"image": image_path.name}}]
    model.setup("brush", LABEL_CONFIG, {"subpatching": {"patch_size": 1024}, "return_format": {"type": "BrushLabels"}})
    model.setup("polygon", LABEL_CONFIG, {"subpatching": {"patch_size": 1024}, "return_format": {"type": "PolygonLabels"}})
    click = lambda project, box=BOX: model.predict(task, context(box), project, LABEL_CONFIG)  # noqa: E731

    def cold():
        model.pipeline.frames.__init__(model.pipeline.frames.max_bytes)
        segmenter.cache.__init__(segmenter.cache.max_bytes)
        gc.collect()

    reset_rss_peak()
    click("brush")  # warm-up: first-call allocations of torch and OpenCV
    figures = {"config": config_name, "checkpoint": checkpoint, "device": segmenter.device,
               "image_px": WIDTH * HEIGHT, "image_bytes": image_path.stat().st_size}
    figures["first_ms"], _ = median_ms(lambda: click("brush"), repeats, before=cold)
    figures["repeat_ms"], answer = median_ms(lambda: click("brush"), repeats * 3)
    boxes = iter(OTHER_BOXES * repeats)
    figures["other_window_ms"], _ = median_ms(lambda: click("brush", next(boxes)), len(OTHER_BOXES))
    click("polygon")
    figures["polygon_repeat_ms"], _ = median_ms(lambda: click("polygon"), repeats * 3)

    # The request path ends here: its peak memory, before the micro-benchmarks allocate their own.
    figures["peak_rss_mb"] = rss_peak_mb()
    figures["process_rss_mb"] = _current_rss_mb()

    info = read_info(image_path, 10**9, "bench")
    decode = lambda: decode_frame(image_path, info, info.size, "bench")  # noqa: E731
    model.pipeline.frames.__init__(model.pipeline.frames.max_bytes)
    figures["decode_ms"], frame = median_ms(decode, repeats, before=gc.collect)
    patch = np.ascontiguousarray(frame[BOX[1] - 352:BOX[1] + 672, BOX[0] - 352:BOX[0] + 672])
    del frame
    predictor = segmenter.predictor
    with segmenter._autocast():
        figures["encoder_ms"], _ = median_ms(lambda: predictor.set_image(to_model_input(patch, segmenter.input_size)), repeats)
        box_in_model = np.array([352, 352, 672, 672], dtype=np.float32)
        figures["decoder_ms"], _ = median_ms(lambda: predictor.predict(box=box_in_model, multimask_output=True,
                                                                        return_logits=True), repeats * 3)

    # The RLE of this click's own mask: ours from the local mask, the SDK's from the full image.
    prediction = model.pipeline.run(task[0], context(BOX), LABEL_CONFIG, model.settings.load("brush"))
    local = _image_mask(prediction)
    figures["rle_mask_px"] = int(local.bits.sum())
    figures["rle_ms"], ours = median_ms(lambda: encode_brush_rle(local.bits, local.x, local.y, WIDTH, HEIGHT), repeats * 3)

    full = np.zeros((HEIGHT, WIDTH), np.uint8)
    h, w = local.bits.shape
    full[local.y:local.y + h, local.x:local.x + w] = local.bits
    figures["rle_sdk_ms"], theirs = median_ms(lambda: mask2rle(full * 255), max(1, repeats))
    figures["rle_identical"] = list(theirs) == list(ours)
    del full

    def stock_click():
        image = np.array(Image.open(image_path).convert("RGB"))
        predictor.set_image(image)
        masks, scores, _ = predictor.predict(box=np.array(BOX, dtype=np.float32), multimask_output=True)
        mask = masks[int(np.argmax(scores))].astype(np.uint8)
        return mask2rle(mask * 255)

    with segmenter._autocast():
        figures["stock_first_ms"], _ = median_ms(stock_click, 1, before=gc.collect)
        figures["stock_repeat_ms"], _ = median_ms(stock_click, max(1, repeats - 1), before=gc.collect)
    figures["stock_peak_rss_mb"] = rss_peak_mb()  # the whole run's peak: the stock part dominates it
    figures["ratios"] = {
        "stock_repeat_over_repeat": figures["stock_repeat_ms"] / figures["repeat_ms"],
        "repeat_over_decoder": figures["repeat_ms"] / figures["decoder_ms"],
        "rle_sdk_over_rle": figures["rle_sdk_ms"] / figures["rle_ms"],
        "first_over_decode_plus_encoder": figures["first_ms"] / (figures["decode_ms"] + figures["encoder_ms"]),
        "stock_first_over_first": figures["stock_first_ms"] / figures["first_ms"],
    }
    figures["regions_in_last_answer"] = len(answer["results"][0]["result"])
    return figures


def _current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _image_mask(prediction):
    """The click's mask on the image grid (a disc at the box when untrained weights gave nothing)."""
    from .masks import Mask

    regions = prediction.regions
    if regions:
        from label_studio_sdk.converter.brush import decode_rle  # only to recover the local mask once

        x0, y0, x1, y1 = BOX[0] - 1024, BOX[1] - 1024, BOX[2] + 1024, BOX[3] + 1024
        flat = decode_rle(regions[0]["value"]["rle"]).reshape(HEIGHT, WIDTH, 4)[y0:y1, x0:x1, 3] > 0
        return Mask(flat, x0, y0).tight()
    yy, xx = np.mgrid[-160:160, -160:160]
    return Mask(xx ** 2 + yy ** 2 <= 150 ** 2, BOX[0], BOX[1])


def print_table(figures: dict) -> None:
    rows = [("stock first click", "stock_first_ms"), ("stock repeated click", "stock_repeat_ms"),
            ("SAM2Plus first click", "first_ms"), ("SAM2Plus repeated click", "repeat_ms"),
            ("SAM2Plus click, other window", "other_window_ms"), ("SAM2Plus repeated click, polygon", "polygon_repeat_ms"),
            ("JPEG decode (full, as SAM2Plus does)", "decode_ms"), ("image encoder (1024 patch)", "encoder_ms"),
            ("mask decoder (bare predict)", "decoder_ms"), ("label-studio-sdk mask2rle", "rle_sdk_ms"),
            ("SAM2Plus brush RLE", "rle_ms")]
    print(f"SAM2Plus benchmark: {figures['config']} ({figures['checkpoint']}) on {figures['device']}, "
          f"{WIDTH}x{HEIGHT} JPEG ({figures['image_bytes'] / 1e6:.1f} MB)")
    for label, key in rows:
        print(f"  {label:34s} {figures[key]:10.1f} ms")
    print(f"  {'RSS after the SAM2Plus part':34s} {figures['process_rss_mb']:10.0f} MB")
    print(f"  {'peak RSS, SAM2Plus part':34s} {figures['peak_rss_mb']:10.0f} MB")
    print(f"  {'peak RSS, after the stock part':34s} {figures['stock_peak_rss_mb']:10.0f} MB")
    print(f"  RLE identical to label-studio-sdk: {figures['rle_identical']} ({figures['rle_mask_px']} mask px)")
    for name, value in figures["ratios"].items():
        print(f"  {name:34s} {value:10.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sam2plus.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/sam2.1/sam2.1_hiera_t.yaml")
    parser.add_argument("--checkpoint", default=UNTRAINED, help="'untrained' or a checkpoint file")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sam2plus-bench-") as workdir:
        figures = run(args.config, args.checkpoint, args.device, args.repeats, Path(workdir))
    print_table(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
