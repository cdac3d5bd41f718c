"""Benchmark: SAM2Plus against the stock SAM2 backend's pipeline, in one process, real SAM2.

    python -m sam2plus.bench [--config CONFIG] [--checkpoint untrained|PATH] [--device cpu|cuda|auto]
                             [--size 10240x9800] [--repeats N] [--json PATH] [--store-only | --no-store]
                             [--encoder-runtime auto|torch|openvino] [--encoder-precision auto|bf16|f32]
                             [--scenarios all|encoder]

A synthetic JPEG (10240x9800 by default) is written to a temporary CACHE_DIR. SAM2Plus runs
its real request path (`SAM2Plus.setup` + `SAM2Plus.predict`, subpatching 1024) on a 320 px
box; the stock pipeline is HumanSignal's example reproduced step by step: Pillow decode of
the whole image, `set_image` on it on every click, `predict`, and label-studio-sdk's
`mask2rle` of the full-resolution mask. Every figure is a median in milliseconds over runs
in this process. SAM2Plus is measured first and its peak memory read before anything else
allocates (`peak_rss_mb`); the stock part's peak is `stock_peak_rss_mb`. On CUDA the same peaks
of GPU memory held by torch are `peak_gpu_mb` and `stock_peak_gpu_mb` (None on CPU), and the
bare encoder timings (`encoder_ms`, `session_encoder_ms`) read the clock after
`torch.cuda.synchronize()`: `set_image` returns before the GPU has finished.

Two scenarios measure what Label Studio really sends (contexts built by `sam2plus.contexts`,
as the editor serialises them: a refinement click resends every earlier point of the object):
- a session on the big image, subpatching 1024: the task opens (`/predict` without a context,
  then the warm-up runs), object 1 takes 4 accumulating clicks (+, +, -, +), object 2 one
  click 150 px away, object 3 a rectangle far away (`session_*`, `refine_ms`, `warm_first_ms`;
  `cold_first_ms` is the same first click without the warm-up);
- 4 annotators at once (threads through `SAM2Plus.predict`) on 4 images of 3000x2000 without
  subpatching, each a first click and 6 refinement clicks 0.3 s apart, starting 1 s after one
  another, against the same clicks alone, before and after (`multi_*`).

The Bitmask PNG (`bitmask_*`) is timed and sized against the brush RLE of the same mask, the
main click's and a large disc's, on the benchmark image's size (100 megapixels by default).

The model runs with the encoder its settings give (`--encoder-runtime`, `--encoder-precision`:
ENCODER_RUNTIME and ENCODER_PRECISION, `auto` by default: OpenVINO on a CPU; `encoder` names
it). Where that is not torch eager, three more scenarios measure it against torch eager:
- a worker's start in a child process each: converting into an empty cache (`startup_cold_ms`),
  loading what that built (`startup_warm_ms`), torch eager (`startup_eager_ms`), with its RSS
  after the start, idle after one encoder run and at peak (`worker_*rss_mb`);
- the bare encoder on the main box's window and that box's first click from cold caches, the
  model and a torch eager model in turns (`converted_*_ms`, `eager_*_ms`);
- the stock pipeline then runs on the torch eager model, as HumanSignal's example does.
`--scenarios encoder` runs only these (no stock pipeline, no store scenarios). The embedding
store's scenarios (`store_figures`; `--store-only`, `--no-store`) run with the same encoder
settings and load the encoder the main run converted.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .bitmask import bitmask_data_url
from .config import UNTRAINED, ServerConfig
from .contexts import context, control, keypoint_region, label_config, rectangle_region
from .encoders import fresh_predictor, probe_image
from .frames import extract_patch, plan_frame
from .images import read_info
from .labelconfig import find_output_control
from .masks import Mask, mask_in_image
from .pipeline import padding_fill
from .prompts import parse_prompt
from .rle import encode_brush_rle
from .segmenter import to_model_input

__all__ = [
    "PROMPT",
    "LABEL_CONFIG",
    "Scene",
    "OBJECT_1",
    "OBJECT_2",
    "ANNOTATOR",
    "LOOK_S",
    "make_image",
    "reset_rss_peak",
    "synchronized",
    "gpu_peak_mb",
    "median_ms",
    "write_images",
    "load_model",
    "forget",
    "Encoder",
    "bench_config",
    "run",
    "worker_start",
    "startup_figures",
    "eager_figures",
    "click_figures",
    "session_figures",
    "first_patch",
    "encoder_run",
    "encode_ms",
    "multi_figures",
    "request_path_memory",
    "component_figures",
    "rle_figures",
    "stock_figures",
    "RATIOS",
    "ratios",
    "print_table",
    "store_figures",
    "store_ratios",
    "print_store_table",
    "main",
]

PROMPT = 320
LABEL_CONFIG = label_config(
    control("RectangleLabels", "prompt", smart=True, labels=["object"]),
    control("KeyPointLabels", "point", smart=True, labels=["object"]),
    control("BrushLabels", "brush", labels=["object"]),
    control("PolygonLabels", "polygon", labels=["object"]),
)


@dataclass(frozen=True)
class Scene:
    """The benchmark image's size and where the clicks go (fractions of it)."""

    width: int = 10240
    height: int = 9800

    def box(self, fx: float, fy: float) -> tuple[int, int, int, int]:
        """The PROMPT px box whose top-left corner is at (fx, fy) of the room the image leaves it."""
        x0, y0 = int(fx * (self.width - PROMPT)), int(fy * (self.height - PROMPT))
        return x0, y0, x0 + PROMPT, y0 + PROMPT

    @property
    def main_box(self):
        """The box of the single clicks, the RLE and the stock pipeline."""
        return self.box(0.4, 0.62)

    @property
    def other_boxes(self):
        """Three boxes far from the main one and from each other (other windows)."""
        return [self.box(0.15, 0.15), self.box(0.8, 0.26), self.box(0.6, 0.88)]

    def context(self, box) -> dict:
        """The context of a rectangle click on `box`."""
        return context(rectangle_region(box, self.width, self.height, labels=["object"]))

    def clicks(self, points) -> dict:
        """The context of a refinement click: every point of the object so far, (x, y, positive)."""
        return context(
            *(
                keypoint_region(x, y, self.width, self.height, positive=positive, from_name="point", labels=["object"])
                for x, y, positive in points
            )
        )

    def object_points(self, fx: float, fy: float, offsets) -> list[tuple[float, float, bool]]:
        """Clicks on an object at (fx, fy) of the image, (dx, dy, positive) px from its centre."""
        cx, cy = fx * self.width, fy * self.height
        return [(cx + dx, cy + dy, positive) for dx, dy, positive in offsets]


# Object 1 of the session: 4 clicks (+, +, -, +) within about 130 px of the first.
OBJECT_1 = [(0, 0, True), (60, -45, True), (-110, 70, False), (30, 95, True)]
OBJECT_2 = (120, -90)  # one click 150 px from object 1's first
# An annotator of the multi-annotator scenario: a first click, then 6 refinement clicks.
ANNOTATOR = [
    (0, 0, True),
    (70, 40, True),
    (-90, -60, False),
    (40, -100, True),
    (-60, 110, True),
    (130, -20, False),
    (-120, 30, True),
]
ANNOTATORS, MULTI_SIZE, THINK_S, STAGGER_S = 4, (3000, 2000), 0.3, 1.0
LOOK_S = 1.0  # how long the annotator looks at a task before the first click


def make_image(path, width: int, height: int, seed: int = 0) -> Path:
    """A JPEG with texture and shapes, so that the file and its decode are realistic."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(1, height // 64), max(1, width // 64), 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(400):
        x, y, r = int(rng.integers(0, width)), int(rng.integers(0, height)), int(rng.integers(20, 250))
        cv2.circle(image, (x, y), r, tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return Path(path)


def _status_mb(field: str) -> float:
    """A memory figure of /proc/self/status in MiB (VmHWM, VmRSS); the peak RSS where there is none."""
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


def synchronized(fn, device: str):
    """fn, returning only once the GPU has finished what it queued (CUDA runs asynchronously), so
    that a clock read after it measures the work and not the kernel launches."""
    if not str(device).startswith("cuda"):
        return fn

    def run_and_wait():
        import torch

        result = fn()
        torch.cuda.synchronize()
        return result

    return run_and_wait


def gpu_peak_mb(device: str, reset: bool = False) -> float | None:
    """Peak GPU memory held by torch's tensors since the last reset, in MiB (None off CUDA);
    `reset` starts the peak over from now."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    peak = torch.cuda.max_memory_allocated() / 2**20
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return peak


def median_ms(fn, runs: int, before=None) -> tuple[float, object]:
    """Median wall time of `runs` calls of fn in milliseconds, and its last result; `before` runs
    ahead of each call, off the clock."""
    times, result = [], None
    for _ in range(runs):
        if before:
            before()
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def write_images(images: list[tuple[Path, int, int, int]]) -> None:
    """`make_image` for each (path, width, height, seed), in a child process, so that drawing the
    pictures does not count in this process's memory."""
    calls = "; ".join(f"make_image({str(path)!r}, {width}, {height}, {seed})" for path, width, height, seed in images)
    subprocess.run([sys.executable, "-c", f"from sam2plus.bench import make_image; {calls}"], check=True)


@dataclass(frozen=True)
class Encoder:
    """The encoder settings of a run (ENCODER_RUNTIME, ENCODER_PRECISION) and which scenarios it
    runs: "all", or "encoder" (start-up, encoder and first click against torch eager only)."""

    runtime: str = "auto"
    precision: str = "auto"
    scenarios: str = "all"


def bench_config(config_name: str, checkpoint: str, device: str, workdir: Path, encoder: Encoder) -> ServerConfig:
    """The settings of the benchmark's models: `workdir` as CACHE_DIR (converted encoders in
    `workdir`/encoders), the encoder's settings as given."""
    return ServerConfig(
        device=device,
        model_config=config_name,
        model_checkpoint=checkpoint,
        checkpoint_dir="/",
        cache_dir=str(workdir),
        model_dir=str(workdir / "models"),
        encoder_runtime=encoder.runtime,
        encoder_precision=encoder.precision,
    )


def load_model(config_name: str, checkpoint: str, device: str, workdir: Path, encoder: Encoder = Encoder()):
    """SAM2Plus on `workdir` as CACHE_DIR, with the projects the scenarios click in: BrushLabels and
    PolygonLabels subpatching 1024, and "stock" with the default settings."""
    from model import SAM2Plus

    model = SAM2Plus(bench_config(config_name, checkpoint, device, workdir, encoder))
    for fmt in ("BrushLabels", "PolygonLabels"):
        model.setup(fmt, LABEL_CONFIG, {"subpatching": {"patch_size": 1024}, "return_format": {"type": fmt}})
    model.setup("stock", LABEL_CONFIG, None)
    return model


def forget(model) -> None:
    """Cold caches: no decoded frame and no encoded patch kept from an earlier click, in memory or
    in the embedding store."""
    model.pipeline.frames.clear()
    model.pipeline.segmenter.cache.clear()
    if model.pipeline.segmenter.store is not None:
        model.pipeline.segmenter.store.clear()
    gc.collect()


def run(
    config_name: str,
    checkpoint: str,
    device: str,
    repeats: int,
    scene: Scene,
    workdir: Path,
    annotators: int = ANNOTATORS,
    encoder: Encoder = Encoder(),
) -> dict:
    """Every scenario on one model, in this order: the workers' start-up (child processes; the cold
    one converts the encoder into `workdir`), SAM2Plus's request path (single clicks, the session,
    the annotators), so that its peak memory is read before anything else allocates in this
    process, then the bare components, the encoder against torch eager, the RLE and the stock
    pipeline; the ratios last."""
    image_path = workdir / "bench.jpg"
    write_images([(image_path, scene.width, scene.height, 0)])
    figures = startup_figures(config_name, checkpoint, device, workdir, encoder)
    model = load_model(config_name, checkpoint, device, workdir, encoder)
    task = [{"id": 1, "data": {"image": image_path.name}}]
    cold = partial(forget, model)
    figures.update(
        {
            "config": config_name,
            "checkpoint": checkpoint,
            "device": model.pipeline.segmenter.device,
            "encoder": model.pipeline.segmenter.identity.label(),
            "image_px": scene.width * scene.height,
            "image_size": [scene.width, scene.height],
            "image_bytes": image_path.stat().st_size,
        }
    )
    if encoder.scenarios == "all":
        clicks, answer = click_figures(model, task, scene, repeats, cold)
        figures.update(clicks)
        figures.update(session_figures(model, task, scene, repeats, cold))
        figures.update(multi_figures(model, workdir, cold, annotators))
        figures.update(request_path_memory(figures["device"]))  # the request path ends here
        figures["regions_in_last_answer"] = len(answer["results"][0]["result"])
        figures.update(component_figures(model, image_path, scene, repeats, cold))
    eager = model if _is_eager(model) else load_model(config_name, checkpoint, device, workdir, Encoder("torch"))
    figures.update(eager_figures(model, eager, task, scene, repeats))
    if encoder.scenarios == "all":
        local = click_mask(model, task, scene)
        figures.update(rle_figures(local, scene, repeats))
        figures.update(bitmask_figures(local, scene, repeats))
        figures.update(stock_figures(eager, image_path, scene, repeats))
    figures["ratios"] = ratios(figures)
    return figures


def _is_eager(model) -> bool:
    """Whether SAM2's own torch encoder serves `model`."""
    return model.pipeline.segmenter.identity.runtime.startswith("torch")


def click_figures(model, task: list, scene: Scene, repeats: int, cold) -> tuple[dict, dict]:
    """Single box clicks on the big image: the same click first from cold caches and then repeated,
    clicks on other windows, a repeated polygon click; and the last repeated click's answer.
    The GPU peak of loading the model is read first (`model_gpu_mb`); both peaks start over here."""
    device = model.pipeline.segmenter.device

    def click(fmt="BrushLabels", box=scene.main_box):
        return model.predict(task, scene.context(box), fmt, LABEL_CONFIG)

    figures = {"model_gpu_mb": gpu_peak_mb(device, reset=True)}  # weights and torch's start-up
    reset_rss_peak()
    click()  # warm-up: first-call allocations of torch and the decoders
    figures["first_ms"], _ = median_ms(click, repeats, before=cold)
    figures["repeat_ms"], answer = median_ms(click, repeats * 3)
    boxes = iter(scene.other_boxes)
    figures["other_window_ms"], _ = median_ms(lambda: click(box=next(boxes)), len(scene.other_boxes))
    click("PolygonLabels")
    figures["polygon_repeat_ms"], _ = median_ms(lambda: click("PolygonLabels"), repeats * 3)
    return figures, answer


def _timed(fn) -> float:
    """Wall time of one call of fn in milliseconds."""
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def session_figures(model, task: list, scene: Scene, repeats: int, cold) -> dict:
    """One annotator on the big image, `repeats` times from cold caches: open the task (the warm-up
    runs while the annotator looks), object 1 in 4 accumulating clicks, object 2 one click 150 px
    away, object 3 a rectangle far away; each time followed by the first click without the warm-up.
    The annotator looks at the task for LOOK_S before the first click, warmed up or not; the bare
    encoder is timed on the first click's own window right after it (`session_encoder_ms`)."""
    segmenter, project = model.pipeline.segmenter, "BrushLabels"
    object_1 = scene.object_points(0.4, 0.62, OBJECT_1)
    object_2 = scene.object_points(0.4, 0.62, [(*OBJECT_2, True)])
    far = scene.box(0.8, 0.26)

    def click(ctx):
        return model.predict(task, ctx, project, LABEL_CONFIG)

    opens, warm_ups, firsts, colds, encoders, refines, objects, runs = [], [], [], [], [], [], [], []
    for _ in range(repeats):
        cold()
        before = segmenter.encoder_runs
        opens.append(_timed(lambda: model.predict(task, None, project, LABEL_CONFIG)))
        warm_ups.append(_timed(model.warmup.wait) + opens[-1])
        time.sleep(LOOK_S)
        clicks = [_timed(lambda n=n: click(scene.clicks(object_1[:n]))) for n in range(1, len(object_1) + 1)]
        encoders.append(encode_ms(segmenter, first_patch(model, task, scene.clicks(object_1[:1]), project)))
        second = _timed(lambda: click(scene.clicks(object_2)))
        third = _timed(lambda: click(scene.context(far)))
        firsts.append(clicks[0])
        refines += clicks[1:] + [second]
        objects.append(clicks + [second, third])
        runs.append(segmenter.encoder_runs - before)
        cold()  # the same first click without the warm-up, right after (a drifting CPU weighs on both)
        time.sleep(LOOK_S)
        colds.append(_timed(lambda: click(scene.clicks(object_1[:1]))))
    return {
        "session_encoder_runs": max(runs),
        "session_open_ms": statistics.median(opens),
        "session_warm_up_ms": statistics.median(warm_ups),
        "warm_first_ms": statistics.median(firsts),
        "session_encoder_ms": statistics.median(encoders),
        "cold_first_ms": statistics.median(colds),
        "refine_ms": statistics.median(refines),
        "session_clicks_ms": [statistics.median(column) for column in zip(*objects, strict=True)],
    }


def first_patch(model, task: list, ctx: dict, project: str) -> np.ndarray:
    """The patch of a first click (a window centred on its prompt), as the request path cuts it."""
    pipeline, params = model.pipeline, model.settings.load(project)
    local, info, field = pipeline.image(task[0], find_output_control(LABEL_CONFIG, params.return_format.type))
    frame_map = plan_frame(info.size, parse_prompt(ctx), params)
    frame = pipeline.frame(local, info, frame_map.frame_size, field)
    return np.ascontiguousarray(extract_patch(frame, frame_map, padding_fill(params)))


def encoder_run(segmenter, patch: np.ndarray):
    """A bare run of the segmenter's image encoder (torch or converted) on `patch`, returning its
    features; on CUDA it returns once the GPU has finished."""
    return synchronized(lambda: segmenter.encoder(to_model_input(patch, segmenter.input_size)), segmenter.device)


def encode_ms(segmenter, patch: np.ndarray) -> float:
    """One bare run of the segmenter's image encoder on `patch`."""
    return _timed(encoder_run(segmenter, patch))


def multi_figures(model, workdir: Path, cold, annotators: int = ANNOTATORS) -> dict:
    """`annotators` annotators (4 by default) on as many images (no subpatching): alone one after
    another, then all at once."""
    width, height = MULTI_SIZE
    names = [f"annotator-{i}.jpg" for i in range(annotators)]
    write_images([(workdir / name, width, height, i + 1) for i, name in enumerate(names)])
    scene = Scene(width, height)
    points = scene.object_points(0.5, 0.5, ANNOTATOR)

    def annotate(i: int, times: dict, think: float = 0.0, delay: float = 0.0) -> None:
        time.sleep(delay)
        task = [{"id": 100 + i, "data": {"image": names[i]}}]
        for n in range(1, len(points) + 1):
            ctx = scene.clicks(points[:n])
            times[i, n] = _timed(lambda ctx=ctx: model.predict(task, ctx, "stock", LABEL_CONFIG))
            time.sleep(think)

    def alone() -> dict:
        times: dict = {}
        for i in range(annotators):
            cold()
            annotate(i, times)
        return times

    # The clicks alone before and after the annotators together, so that a machine whose speed
    # drifts (a shared CPU) weighs on both sides alike.
    before = alone()
    cold()
    together: dict = {}
    threads = [threading.Thread(target=annotate, args=(i, together, THINK_S, i * STAGGER_S)) for i in range(annotators)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = alone()

    def refinements(*runs: dict) -> list[float]:
        return [ms for times in runs for (_, n), ms in times.items() if n > 1]

    return {
        "multi_annotators": annotators,
        "multi_refine_p50_ms": float(np.percentile(refinements(together), 50)),
        "multi_refine_p95_ms": float(np.percentile(refinements(together), 95)),
        "multi_alone_refine_p50_ms": float(np.percentile(refinements(before, after), 50)),
        "multi_alone_refine_p95_ms": float(np.percentile(refinements(before, after), 95)),
        "multi_first_max_ms": max(ms for (_, n), ms in together.items() if n == 1),
        "multi_alone_first_max_ms": max(ms for times in (before, after) for (_, n), ms in times.items() if n == 1),
    }


def worker_start(config_name: str, checkpoint: str, device: str, workdir: str, runtime: str, precision: str) -> None:
    """What a worker's start costs (run in a child process by `startup_figures`): its segmenter
    built as a worker builds it, one encoder run on the probe picture, then the embedding
    dropped; prints one JSON line: times in ms, RSS in MiB after the start, idle after the run,
    and the peak. RSS counts the mapped files too (libraries, the converted encoder's weights
    file), which the page cache shares between workers; `anon` is the worker's own memory."""
    from .heap import release_free_memory
    from .segmenter import Segmenter

    logging.basicConfig(level=logging.INFO, format="worker_start: %(name)s: %(message)s")  # on stderr
    config = bench_config(config_name, checkpoint, device, Path(workdir), Encoder(runtime, precision))
    started = time.perf_counter()
    segmenter = Segmenter.from_config(config)
    figures = {"start_ms": (time.perf_counter() - started) * 1000}
    figures.update(rss_mb=_status_mb("VmRSS"), anon_mb=_status_mb("RssAnon"))
    patch = probe_image(segmenter.input_size, seed=1)
    figures["encode_ms"] = _timed(lambda: segmenter.embed(patch, ("probe",)))
    segmenter.cache.clear()
    release_free_memory()
    figures.update(idle_rss_mb=_status_mb("VmRSS"), idle_anon_mb=_status_mb("RssAnon"))
    figures["peak_rss_mb"] = _status_mb("VmHWM")
    figures["encoder"] = segmenter.identity.label()
    print(json.dumps(figures))


WORKER_FIGURES = ("encode_ms", "rss_mb", "anon_mb", "idle_rss_mb", "idle_anon_mb", "peak_rss_mb")


def _worker(config_name: str, checkpoint: str, device: str, workdir: Path, encoder: Encoder) -> dict:
    """`worker_start` in a fresh process: its figures."""
    arguments = ", ".join(repr(str(a)) for a in (config_name, checkpoint, device, workdir))
    arguments += f", {encoder.runtime!r}, {encoder.precision!r}"
    call = f"from sam2plus.bench import worker_start; worker_start({arguments})"
    done = subprocess.run([sys.executable, "-c", call], check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def startup_figures(config_name: str, checkpoint: str, device: str, workdir: Path, encoder: Encoder) -> dict:
    """A worker's start-up and memory with each encoder, in child processes: the converted encoder
    with a cold cache (it converts into `workdir`/encoders), then warm (it loads what the first
    built), then torch eager; each runs the encoder once. None where torch serves anyway (CUDA)."""
    from .encoders import choose_encoder
    from .segmenter import resolve_device

    keys = ["startup_cold_ms", "startup_cold_peak_rss_mb", "startup_warm_ms", "startup_eager_ms"]
    keys += [f"worker{kind}_{figure}" for kind in ("", "_eager") for figure in WORKER_FIGURES]
    if choose_encoder(encoder.runtime, encoder.precision, resolve_device(device)).runtime == "torch":
        return dict.fromkeys(keys)
    cold = _worker(config_name, checkpoint, device, workdir, encoder)
    warm = _worker(config_name, checkpoint, device, workdir, encoder)
    eager = _worker(config_name, checkpoint, device, workdir, Encoder("torch"))
    figures = {"startup_cold_ms": cold["start_ms"], "startup_cold_peak_rss_mb": cold["peak_rss_mb"]}
    figures.update(startup_warm_ms=warm["start_ms"], startup_eager_ms=eager["start_ms"])
    for kind, worker in (("", warm), ("_eager", eager)):
        for figure in WORKER_FIGURES:
            figures[f"worker{kind}_{figure}"] = worker[figure]
    return figures


def eager_figures(model, eager, task: list, scene: Scene, repeats: int) -> dict:
    """The model's encoder and first click against torch eager's (`eager`, SAM2's own encoder) in
    turns, so that a drifting shared CPU weighs on both alike: the bare encoder on the main box's
    window, then the main box's click from cold caches (JPEG decode, encoder, decoder). None when
    torch eager serves the model itself."""
    keys = ("converted_encoder_ms", "eager_encoder_ms", "converted_first_ms", "eager_first_ms")
    if eager is model:
        return dict.fromkeys(keys)
    patch = first_patch(model, task, scene.context(scene.main_box), "BrushLabels")
    times: dict[str, list[float]] = {key: [] for key in keys}
    for _ in range(repeats):
        for name, which in (("converted", model), ("eager", eager)):
            times[f"{name}_encoder_ms"].append(encode_ms(which.pipeline.segmenter, patch))
    context = scene.context(scene.main_box)
    for _ in range(repeats):
        for name, which in (("converted", model), ("eager", eager)):
            forget(which)
            times[f"{name}_first_ms"].append(
                _timed(lambda w=which: w.predict(task, context, "BrushLabels", LABEL_CONFIG))
            )
    return {key: statistics.median(values) for key, values in times.items()}


def request_path_memory(device: str) -> dict:
    """The peaks of the request path's scenarios (RSS and GPU) and the RSS the process holds now."""
    return {
        "peak_rss_mb": _status_mb("VmHWM"),
        "peak_gpu_mb": gpu_peak_mb(device),
        "process_rss_mb": _status_mb("VmRSS"),
    }


def component_figures(model, image_path: Path, scene: Scene, repeats: int, cold) -> dict:
    """The parts of a click bare: the JPEG decode into the frame store (as a first click does), SAM2's
    image encoder on the 1024 patch around the main box, and its mask decoder on that box."""
    pipeline, segmenter = model.pipeline, model.pipeline.segmenter
    info = read_info(image_path, 10**9, "bench")
    image = pipeline.fetcher.fetch(image_path.name, "bench")
    figures = {}
    figures["decode_ms"], frame = median_ms(
        lambda: pipeline.frame(image, info, info.size, "bench"), repeats, before=cold
    )
    x0, y0, x1, y1 = scene.main_box
    top, left = max(0, y0 - 352), max(0, x0 - 352)
    patch = np.ascontiguousarray(frame[top : top + 1024, left : left + 1024])
    del frame
    box_in_patch = np.array([x0 - left, y0 - top, x1 - left, y1 - top], dtype=np.float32)
    figures["encoder_ms"], features = median_ms(encoder_run(segmenter, patch), repeats)
    predictor = fresh_predictor(segmenter.predictor)
    predictor._features, predictor._orig_hw, predictor._is_image_set = features, [patch.shape[:2]], True
    with segmenter._autocast():
        figures["decoder_ms"], _ = median_ms(
            lambda: predictor.predict(box=box_in_patch, multimask_output=True, return_logits=True), repeats * 3
        )
    return figures


def click_mask(model, task: list, scene: Scene) -> Mask:
    """The main click's own mask in image pixels (a disc at the box when untrained weights found nothing)."""
    prediction = model.pipeline.run(
        task[0], scene.context(scene.main_box), LABEL_CONFIG, model.settings.load("BrushLabels")
    )
    local = mask_in_image(prediction.mask, prediction.frame_map)
    if local.area == 0:
        x0, y0, _, _ = scene.main_box
        yy, xx = np.mgrid[-160:160, -160:160]
        local = Mask(xx**2 + yy**2 <= 150**2, x0, y0)
    return local


def rle_figures(local: Mask, scene: Scene, repeats: int) -> dict:
    """The brush RLE of the main click's mask: SAM2Plus's encoder on the mask's bounding box against
    label-studio-sdk's `mask2rle` on the full-resolution mask, and whether the two are identical."""
    from label_studio_sdk.converter.brush import mask2rle

    figures = {"rle_mask_px": local.area}
    figures["rle_ms"], ours = median_ms(
        lambda: encode_brush_rle(local.bits, local.x, local.y, scene.width, scene.height), repeats * 3
    )
    full = np.zeros((scene.height, scene.width), np.uint8)
    h, w = local.bits.shape
    full[local.y : local.y + h, local.x : local.x + w] = local.bits
    figures["rle_sdk_ms"], theirs = median_ms(lambda: mask2rle(full * 255), repeats)
    figures["rle_identical"] = list(theirs) == list(ours)
    return figures


def bitmask_figures(local: Mask, scene: Scene, repeats: int) -> dict:
    """The Bitmask PNG data URL against the brush RLE (as the JSON Label Studio stores), time and size:
    for the main click's mask (`bitmask_*`) and for a large object, a disc of a quarter of the
    image's height in radius (`bitmask_large_*`)."""
    radius = scene.height // 4
    yy, xx = np.ogrid[-radius:radius, -radius:radius]
    large = Mask(xx**2 + yy**2 < radius**2, scene.width // 2 - radius, scene.height // 2 - radius)
    figures = {}
    for name, mask in (("bitmask", local), ("bitmask_large", large)):
        placed = (mask.bits, mask.x, mask.y, scene.width, scene.height)
        png_ms, url = median_ms(lambda placed=placed: bitmask_data_url(*placed), repeats * 3)
        rle_ms, rle = median_ms(lambda placed=placed: encode_brush_rle(*placed), repeats * 3)
        figures |= {
            f"{name}_mask_px": mask.area,
            f"{name}_png_ms": png_ms,
            f"{name}_rle_ms": rle_ms,
            f"{name}_url_bytes": len(url),
            f"{name}_rle_json_bytes": len(json.dumps(rle, separators=(",", ":"))),
        }
    return figures


def stock_figures(model, image_path: Path, scene: Scene, repeats: int) -> dict:
    """HumanSignal's example pipeline on every click: Pillow decode of the whole image, `set_image` on
    it (SAM2's own torch encoder: `model` runs torch eager), `predict` on the main box, `mask2rle`
    of the full-resolution mask; its peaks after."""
    from label_studio_sdk.converter.brush import mask2rle

    segmenter = model.pipeline.segmenter
    predictor = segmenter.predictor

    def stock_click():
        image = np.array(Image.open(image_path).convert("RGB"))
        predictor.set_image(image)
        masks, scores, _ = predictor.predict(box=np.array(scene.main_box, dtype=np.float32), multimask_output=True)
        return mask2rle(masks[int(np.argmax(scores))].astype(np.uint8) * 255)

    figures = {}
    with segmenter._autocast():
        figures["stock_first_ms"], _ = median_ms(stock_click, 1, before=gc.collect)
        figures["stock_repeat_ms"], _ = median_ms(stock_click, max(1, repeats - 1), before=gc.collect)
    figures["stock_peak_rss_mb"] = _status_mb("VmHWM")
    figures["stock_peak_gpu_mb"] = gpu_peak_mb(segmenter.device)
    return figures


STORE_SIZE, GRID_SIZE = (3000, 2000), (2048, 2048)  # the store scenarios' images
STORE_PROJECT = "BrushLabels"  # subpatching 1024 (load_model), as the single clicks
GRID_PARAMS = {"subpatching": {"patch_size": 1024, "warm_grid": True}}


def _regions(answer: dict) -> list:
    """An answer's regions without their ids (new in every answer)."""
    return [{k: v for k, v in r.items() if k != "id"} for r in answer["results"][0]["result"]]


def _click_parts(model, task: list, ctx: dict, project: str):
    """The patch, embedding key and patch prompt of a click, as the request path makes them."""
    from .pipeline import embedding_key

    pipeline, params = model.pipeline, model.settings.load(project)
    local, info, field = pipeline.image(task[0], find_output_control(LABEL_CONFIG, params.return_format.type))
    with local:
        prompt = parse_prompt(ctx)
        frame_map = plan_frame(info.size, prompt, params, pipeline.encoded_windows(local.digest, info.size, (0, 0, 0)))
        frame = pipeline.frame(local, info, frame_map.frame_size, field)
        patch = np.ascontiguousarray(extract_patch(frame, frame_map, padding_fill(params)))
        return patch, embedding_key(local.digest, frame_map, padding_fill(params)), frame_map.prompt_to_patch(prompt)


def _bare_decoder_ms(model, task: list, ctx: dict, project: str, runs: int) -> float:
    """SAM2's prompt encoder and mask decoder alone on the click's held features (`Segmenter.predict`
    on an embedding in memory): the floor of any click on an encoded window."""
    segmenter = model.pipeline.segmenter
    patch, key, prompt = _click_parts(model, task, ctx, project)
    segmenter.embed(patch, key)  # held (read from the store when it is there)
    return median_ms(synchronized(lambda: segmenter.predict(patch, key, prompt), segmenter.device), runs)[0]


def _forget_image(model, key: tuple) -> None:
    """Nothing of this embedding kept: not in memory, not in the store (the next click encodes)."""
    model.pipeline.segmenter.cache.clear()
    model.pipeline.segmenter.store.path(key).unlink(missing_ok=True)


def other_process_figures(
    config_name: str, checkpoint: str, device: str, workdir: str, repeats: int, encoder: Encoder = Encoder()
) -> dict:
    """In a process of its own (spawned) on the same CACHE_DIR and store: its bare decoder on another
    image first (which also takes torch's first-call costs off the clock), then its first click on
    the encoded image (a restarted worker's), then the same click with its memory emptied before
    each (another worker's or replica's)."""
    model = load_model(config_name, checkpoint, device, Path(workdir), encoder)
    ctx = _store_context()
    segmenter = model.pipeline.segmenter
    other = [{"id": 9, "data": {"image": "store-c.jpg"}}]
    figures = {"other_process_decoder_ms": _bare_decoder_ms(model, other, ctx, STORE_PROJECT, repeats * 3)}
    task = [{"id": 1, "data": {"image": "store-a.jpg"}}]
    runs = segmenter.encoder_runs
    started = time.perf_counter()
    answer = model.predict(task, ctx, STORE_PROJECT, LABEL_CONFIG)
    figures |= {"restart_first_ms": (time.perf_counter() - started) * 1000, "restart_regions": _regions(answer)}
    figures["other_process_click_ms"], answer = median_ms(
        lambda: model.predict(task, ctx, STORE_PROJECT, LABEL_CONFIG), repeats * 3, before=segmenter.cache.clear
    )
    figures["other_process_regions"] = _regions(answer)
    figures["other_process_encoder_runs"] = segmenter.encoder_runs - runs
    return figures


def _store_context() -> dict:
    width, height = STORE_SIZE
    return context(rectangle_region((1200, 700, 1520, 1020), width, height, labels=["object"]))


def store_figures(
    config_name: str, checkpoint: str, device: str, workdir: Path, repeats: int, encoder: Encoder = Encoder()
) -> dict:
    """The embedding store's scenarios, each against the bare decoder measured in the same process:
    a click served from the store (memory emptied first), a restarted process's first click and
    another process's click (`other_process_figures`), the first click on the next task after
    its prefetch (`prefetched_figures`: a grid project's, a whole-frame project's), a subpatching
    click on a grid-encoded image; the store's read time and bytes per embedding; and whether each
    answer's regions are those of a fresh encoder run."""
    import multiprocessing

    width, height = STORE_SIZE
    names = ("store-a.jpg", "store-c.jpg")
    # the next tasks: one first click each (as many as the other figures' clicks), then as many
    # twins for the decoder's first call
    tasks = 3 * repeats
    next_frames = [f"next-frame-{i}.jpg" for i in range(2 * tasks)]
    next_grid = [f"next-grid-{i}.jpg" for i in range(2 * tasks)]
    write_images(
        [(workdir / name, width, height, 7 + i) for i, name in enumerate(names)]
        + [(workdir / "grid.jpg", *GRID_SIZE, 9)]
        + [(workdir / name, width, height, 20 + i) for i, name in enumerate(next_frames)]
        + [(workdir / name, *GRID_SIZE, 40 + i) for i, name in enumerate(next_grid)]
    )
    model = load_model(config_name, checkpoint, device, workdir, encoder)
    model.setup("grid", LABEL_CONFIG, GRID_PARAMS)
    segmenter, store = model.pipeline.segmenter, model.pipeline.segmenter.store
    task_a = [{"id": 1, "data": {"image": "store-a.jpg"}}]
    ctx = _store_context()

    def click(task):
        return model.predict(task, ctx, STORE_PROJECT, LABEL_CONFIG)

    fresh = _regions(click(task_a))  # an encoder run, stored
    figures = {"store_encoder": segmenter.identity.label()}
    figures["store_decoder_ms"] = _bare_decoder_ms(model, task_a, ctx, STORE_PROJECT, repeats * 3)
    figures["store_repeat_ms"], _ = median_ms(lambda: click(task_a), repeats * 3)  # held in memory
    figures["store_click_ms"], answer = median_ms(lambda: click(task_a), repeats * 3, before=segmenter.cache.clear)
    same = {"store_click": _regions(answer) == fresh}
    _, key, _ = _click_parts(model, task_a, ctx, STORE_PROJECT)
    figures["store_read_ms"], _ = median_ms(lambda: store.get(key), repeats * 3)
    figures["store_bytes_per_embedding"] = store.path(key).stat().st_size

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        other = pool.apply(other_process_figures, (config_name, checkpoint, device, str(workdir), repeats, encoder))
    same["restart_first"] = other.pop("restart_regions") == fresh
    same["other_process_click"] = other.pop("other_process_regions") == fresh
    figures.update(other)

    grid_ctx = context(keypoint_region(700, 1250, *GRID_SIZE, from_name="point", labels=["object"]))
    for scenario, project, names, click_ctx, first_id in (
        ("prefetched", "grid", next_grid, grid_ctx, 100),
        ("prefetched_frame", "stock", next_frames, ctx, 200),
    ):
        opened = [[{"id": first_id + i, "data": {"image": name}}] for i, name in enumerate(names)]
        found, same[f"{scenario}_first"] = prefetched_figures(
            model, project, opened[:tasks], opened[tasks:], click_ctx, repeats
        )
        figures |= {f"{scenario}_{name}": value for name, value in found.items()}

    found, same["grid_click"] = grid_figures(model, grid_ctx, repeats)
    figures |= found
    figures["store_regions_identical"] = same
    figures["store_ratios"] = store_ratios(figures)
    return figures


def grid_figures(model, ctx: dict, repeats: int) -> tuple[dict, bool]:
    """A click on grid.jpg after its task opened in the grid project (the grid encoded at warm-up):
    its time, encoder runs and bare decoder, the windows stored; and whether its regions equal
    those of the click after its window was encoded afresh."""
    segmenter, task = model.pipeline.segmenter, [{"id": 3, "data": {"image": "grid.jpg"}}]
    model.predict(task, None, "grid", LABEL_CONFIG)  # the task opens: the grid is encoded
    model.warmup.wait(3600)
    runs = segmenter.encoder_runs
    figures = {}
    figures["grid_click_ms"], answer = median_ms(lambda: model.predict(task, ctx, "grid", LABEL_CONFIG), repeats * 3)
    figures["grid_click_encoder_runs"] = segmenter.encoder_runs - runs
    _, key, _ = _click_parts(model, task, ctx, "grid")
    figures["grid_windows"] = len(segmenter.store.keys(key[0]))
    figures["grid_decoder_ms"] = _bare_decoder_ms(model, task, ctx, "grid", repeats * 3)
    _forget_image(model, key)
    model.pipeline.warm(task[0], LABEL_CONFIG, model.settings.load("grid"))  # the window encoded afresh
    return figures, _regions(model.predict(task, ctx, "grid", LABEL_CONFIG)) == _regions(answer)


def prefetched_figures(model, project: str, tasks: list, twins: list, ctx: dict, repeats: int) -> tuple[dict, bool]:
    """The next tasks of `project`, each prefetched as a task opening before it asks, then clicked
    once: the median of those first clicks (one sample a task) and their encoder runs, of the bare
    decoder timed right after each, and of the same click again on the last task; the median of
    the bare decoder's first call on each of `twins` after its prefetch (the same state: the
    encoder's memory just handed back, caches cold); and whether every first click's regions equal
    those of the click after its window was encoded afresh."""
    params, segmenter = model.settings.load(project), model.pipeline.segmenter
    firsts, decoders, answers, runs = [], [], [], 0
    for task in tasks:
        model.warmup.submit(task, LABEL_CONFIG, params, project, kind="prefetch")
        model.warmup.wait(3600)
        before, started = segmenter.encoder_runs, time.perf_counter()
        answers.append(_regions(model.predict(task, ctx, project, LABEL_CONFIG)))
        firsts.append((time.perf_counter() - started) * 1000)
        runs += segmenter.encoder_runs - before
        decoders.append(_bare_decoder_ms(model, task, ctx, project, 3))  # right after: the same load
    decoder_firsts = []
    for task in twins:
        model.warmup.submit(task, LABEL_CONFIG, params, project, kind="prefetch")
        model.warmup.wait(3600)
        patch, key, prompt = _click_parts(model, task, ctx, project)
        started = time.perf_counter()
        segmenter.predict(patch, key, prompt)
        decoder_firsts.append((time.perf_counter() - started) * 1000)
    last = tasks[-1]
    figures = {"first_ms": statistics.median(firsts), "first_encoder_runs": runs}
    figures["decoder_ms"] = statistics.median(decoders)
    figures["decoder_first_ms"] = statistics.median(decoder_firsts)
    figures["repeat_ms"], _ = median_ms(lambda: model.predict(last, ctx, project, LABEL_CONFIG), repeats * 3)
    same = True
    for task, regions in zip(tasks, answers, strict=True):
        _forget_image(model, _click_parts(model, task, ctx, project)[1])
        model.pipeline.warm(task[0], LABEL_CONFIG, params)  # the clicked window encoded afresh
        same &= _regions(model.predict(task, ctx, project, LABEL_CONFIG)) == regions
    return figures, same


def store_ratios(figures: dict) -> dict:
    """Each store scenario over the bare decoder of its process (the issue's bound: 1.5), and the
    store's and the prefetch's clicks over the same click held in memory."""
    return {
        "store_click_over_decoder": figures["store_click_ms"] / figures["store_decoder_ms"],
        "other_process_click_over_decoder": figures["other_process_click_ms"] / figures["other_process_decoder_ms"],
        "restart_first_over_decoder": figures["restart_first_ms"] / figures["other_process_decoder_ms"],
        "prefetched_first_over_decoder": figures["prefetched_first_ms"] / figures["prefetched_decoder_ms"],
        "prefetched_frame_first_over_decoder": figures["prefetched_frame_first_ms"]
        / figures["prefetched_frame_decoder_ms"],
        # the same, over the decoder's own first call after a prefetch (what the click adds to it)
        "prefetched_first_over_decoder_first": figures["prefetched_first_ms"] / figures["prefetched_decoder_first_ms"],
        "prefetched_frame_first_over_decoder_first": figures["prefetched_frame_first_ms"]
        / figures["prefetched_frame_decoder_first_ms"],
        "grid_click_over_decoder": figures["grid_click_ms"] / figures["grid_decoder_ms"],
        # what the store or the prefetch leaves of a click's cost beyond the same click held in memory
        "store_click_over_repeat": figures["store_click_ms"] / figures["store_repeat_ms"],
        "prefetched_first_over_repeat": figures["prefetched_first_ms"] / figures["prefetched_repeat_ms"],
        "prefetched_frame_first_over_repeat": figures["prefetched_frame_first_ms"]
        / figures["prefetched_frame_repeat_ms"],
    }


def print_store_table(figures: dict) -> None:
    """The store scenarios' figures as a table on stdout, then their ratios."""
    rows = [
        ("bare decoder (held features)", "store_decoder_ms"),
        ("the same click held in memory", "store_repeat_ms"),
        ("click served from the store", "store_click_ms"),
        ("another process: bare decoder", "other_process_decoder_ms"),
        ("another process: click from the store", "other_process_click_ms"),
        ("restarted process: first click", "restart_first_ms"),
        ("next task (grid): bare decoder", "prefetched_decoder_ms"),
        ("next task (grid): decoder's first call", "prefetched_decoder_first_ms"),
        ("next task (grid): first click", "prefetched_first_ms"),
        ("next task (grid): the same click again", "prefetched_repeat_ms"),
        ("next task (whole frame): bare decoder", "prefetched_frame_decoder_ms"),
        ("next task (whole frame): decoder's first", "prefetched_frame_decoder_first_ms"),
        ("next task (whole frame): first click", "prefetched_frame_first_ms"),
        ("next task (whole frame): click again", "prefetched_frame_repeat_ms"),
        ("grid image: bare decoder", "grid_decoder_ms"),
        ("grid image: subpatching click", "grid_click_ms"),
        ("store read of one embedding", "store_read_ms"),
    ]
    print(
        "embedding store scenarios (3000x2000 JPEGs, subpatching 1024; grid and the next tasks of a grid"
        " project 2048x2048; the next tasks of a whole-frame project 3000x2000)"
    )
    for label, key in rows:
        print(f"  {label:42s} {figures[key]:10.1f} ms")
    print(f"  {'bytes per embedding':42s} {figures['store_bytes_per_embedding']:10d}")
    print(f"  {'grid windows':42s} {figures['grid_windows']:10d}")
    print(f"  {'encoder runs of the grid clicks':42s} {figures['grid_click_encoder_runs']:10d}")
    print(f"  regions identical to a fresh encoder run: {figures['store_regions_identical']}")
    for name, value in figures["store_ratios"].items():
        print(f"  {name:42s} {value:10.2f}")


RATIOS = {
    "stock_repeat_over_repeat": ("stock_repeat_ms", "repeat_ms"),
    "repeat_over_decoder": ("repeat_ms", "decoder_ms"),
    "rle_sdk_over_rle": ("rle_sdk_ms", "rle_ms"),
    "stock_first_over_first": ("stock_first_ms", "first_ms"),
    "refine_over_decoder": ("refine_ms", "decoder_ms"),
    "warm_first_over_encoder": ("warm_first_ms", "session_encoder_ms"),
    "warm_first_over_cold_first": ("warm_first_ms", "cold_first_ms"),
    "multi_p95_over_alone": ("multi_refine_p95_ms", "multi_alone_refine_p95_ms"),
    "bitmask_png_over_rle_ms": ("bitmask_png_ms", "bitmask_rle_ms"),
    "bitmask_url_over_rle_json_bytes": ("bitmask_url_bytes", "bitmask_rle_json_bytes"),
    "bitmask_large_png_over_rle_ms": ("bitmask_large_png_ms", "bitmask_large_rle_ms"),
    "bitmask_large_url_over_rle_json_bytes": ("bitmask_large_url_bytes", "bitmask_large_rle_json_bytes"),
    # the encoder runtime against torch eager (same run, in turns)
    "eager_encoder_over_encoder": ("eager_encoder_ms", "converted_encoder_ms"),
    "eager_first_over_first": ("eager_first_ms", "converted_first_ms"),
    "startup_cold_over_warm": ("startup_cold_ms", "startup_warm_ms"),
    "worker_eager_rss_over_rss": ("worker_eager_idle_rss_mb", "worker_idle_rss_mb"),
    "worker_eager_anon_over_anon": ("worker_eager_idle_anon_mb", "worker_idle_anon_mb"),
}


def ratios(figures: dict) -> dict:
    """The ratios docs/performance.md discusses, of the scenarios that ran (None for the others)."""
    found = {}
    for name, (over, under) in RATIOS.items():
        found[name] = figures[over] / figures[under] if figures.get(over) and figures.get(under) else None
    if figures.get("first_ms"):
        found["first_over_decode_plus_encoder"] = figures["first_ms"] / (figures["decode_ms"] + figures["encoder_ms"])
    return found


def _rows(figures: dict) -> list[tuple[str, str]]:
    """(label, key) of the timings print_table shows, in its order."""
    annotators = figures.get("multi_annotators")
    return [
        ("stock first click", "stock_first_ms"),
        ("stock repeated click", "stock_repeat_ms"),
        ("SAM2Plus first click", "first_ms"),
        ("SAM2Plus repeated click", "repeat_ms"),
        ("SAM2Plus click, other window", "other_window_ms"),
        ("SAM2Plus repeated click, polygon", "polygon_repeat_ms"),
        ("JPEG decode into the frame store", "decode_ms"),
        ("image encoder (1024 patch)", "encoder_ms"),
        ("mask decoder (bare predict)", "decoder_ms"),
        ("label-studio-sdk mask2rle", "rle_sdk_ms"),
        ("SAM2Plus brush RLE", "rle_ms"),
        ("session: task open answered", "session_open_ms"),
        ("session: open until warmed up", "session_warm_up_ms"),
        ("session: first click after warm-up", "warm_first_ms"),
        ("session: same first click, cold", "cold_first_ms"),
        ("session: encoder alone, first window", "session_encoder_ms"),
        ("session: refinement click (median)", "refine_ms"),
        (f"{annotators} annotators: refinement p50", "multi_refine_p50_ms"),
        (f"{annotators} annotators: refinement p95", "multi_refine_p95_ms"),
        ("same clicks alone: p50", "multi_alone_refine_p50_ms"),
        ("same clicks alone: p95", "multi_alone_refine_p95_ms"),
        (f"{annotators} annotators: slowest first click", "multi_first_max_ms"),
        ("alone: slowest first click", "multi_alone_first_max_ms"),
        (f"encoder, {figures['encoder']}", "converted_encoder_ms"),
        ("encoder, torch eager", "eager_encoder_ms"),
        (f"first click, {figures['encoder']}", "converted_first_ms"),
        ("first click, torch eager", "eager_first_ms"),
        ("worker start, converts (cold cache)", "startup_cold_ms"),
        ("worker start, converted (warm cache)", "startup_warm_ms"),
        ("worker start, torch eager", "startup_eager_ms"),
        ("worker's first encoder run, converted", "worker_encode_ms"),
        ("worker's first encoder run, torch eager", "worker_eager_encode_ms"),
    ]


MEMORY_ROWS = [
    ("peak RSS, SAM2Plus request path", "peak_rss_mb"),
    ("peak RSS, with the stock pipeline", "stock_peak_rss_mb"),
    ("peak GPU memory, loading the model", "model_gpu_mb"),
    ("peak GPU memory, SAM2Plus request path", "peak_gpu_mb"),
    ("peak GPU memory, stock pipeline", "stock_peak_gpu_mb"),
    ("worker RSS after start, converted", "worker_rss_mb"),
    ("worker RSS after start, torch eager", "worker_eager_rss_mb"),
    ("worker RSS idle after a run, converted", "worker_idle_rss_mb"),
    ("worker RSS idle after a run, eager", "worker_eager_idle_rss_mb"),
    ("worker own memory (anon) after start, converted", "worker_anon_mb"),
    ("worker own memory (anon) after start, eager", "worker_eager_anon_mb"),
    ("worker own memory idle after a run, converted", "worker_idle_anon_mb"),
    ("worker own memory idle after a run, eager", "worker_eager_idle_anon_mb"),
    ("worker peak RSS, converted", "worker_peak_rss_mb"),
    ("worker peak RSS, torch eager", "worker_eager_peak_rss_mb"),
    ("peak RSS of the converting start", "startup_cold_peak_rss_mb"),
]


def print_table(figures: dict) -> None:
    """The figures of the scenarios that ran as a table on stdout, then the ratios."""
    width, height = figures["image_size"]
    print(
        f"SAM2Plus benchmark: {figures['config']} ({figures['checkpoint']}) on {figures['device']}, "
        f"encoder {figures['encoder']}, {width}x{height} JPEG ({figures['image_bytes'] / 1e6:.1f} MB)"
    )
    for label, key in _rows(figures):
        if figures.get(key) is not None:
            print(f"  {label:38s} {figures[key]:10.1f} ms")
    if "session_encoder_runs" in figures:
        print(f"  {'session: encoder runs':38s} {figures['session_encoder_runs']:10d}")
        print(
            "  session clicks (object 1 x4, object 2, object 3): "
            + ", ".join(f"{ms:.0f}" for ms in figures["session_clicks_ms"])
            + " ms"
        )
    for label, key in MEMORY_ROWS:
        if figures.get(key) is not None:
            print(f"  {label:48s} {figures[key]:10.0f} MB")
    if "rle_identical" in figures:
        print(f"  RLE identical to label-studio-sdk: {figures['rle_identical']} ({figures['rle_mask_px']} mask px)")
    for name, what in (("bitmask", "click's mask"), ("bitmask_large", "large disc")):
        if f"{name}_mask_px" in figures:
            print(
                f"  Bitmask PNG, {what} ({figures[f'{name}_mask_px']} px): {figures[f'{name}_png_ms']:.1f} ms, "
                f"{figures[f'{name}_url_bytes']} B data URL; brush RLE {figures[f'{name}_rle_ms']:.1f} ms, "
                f"{figures[f'{name}_rle_json_bytes']} B JSON"
            )
    for name, value in figures["ratios"].items():
        if value is not None:
            print(f"  {name:38s} {value:10.2f}")


def main(argv=None) -> int:
    """The command line: run every scenario, print the table, write the JSON if asked."""
    parser = argparse.ArgumentParser(prog="python -m sam2plus.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/sam2.1/sam2.1_hiera_t.yaml")
    parser.add_argument("--checkpoint", default=UNTRAINED, help="'untrained' or an absolute checkpoint path")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--size", default="10240x9800", help="WIDTHxHEIGHT of the synthetic JPEG")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--store-only", action="store_true", help="only the embedding store's scenarios")
    parser.add_argument("--no-store", action="store_true", help="without the embedding store's scenarios")
    parser.add_argument(
        "--annotators", type=int, default=ANNOTATORS, help="annotators at once in the multi-annotator scenario"
    )
    parser.add_argument("--encoder-runtime", default="auto", help="ENCODER_RUNTIME of the model: auto, torch, openvino")
    parser.add_argument("--encoder-precision", default="auto", help="ENCODER_PRECISION of the model: auto, bf16, f32")
    parser.add_argument(
        "--scenarios", choices=("all", "encoder"), default="all", help="encoder: start-up, encoder and first click only"
    )
    args = parser.parse_args(argv)
    width, _, height = args.size.partition("x")
    scene = Scene(int(width), int(height))
    encoder = Encoder(args.encoder_runtime, args.encoder_precision, args.scenarios)
    figures = {}
    with tempfile.TemporaryDirectory(prefix="sam2plus-bench-") as root:
        workdir, store_workdir = Path(root, "run"), Path(root, "store")
        workdir.mkdir()
        store_workdir.mkdir()
        if not args.store_only:
            figures = run(
                args.config, args.checkpoint, args.device, args.repeats, scene, workdir, args.annotators, encoder
            )
            print_table(figures)
            if (workdir / "encoders").is_dir():  # the store's scenarios load what the run converted
                (store_workdir / "encoders").symlink_to(workdir / "encoders", target_is_directory=True)
        if not args.no_store and encoder.scenarios == "all":
            figures.update(
                store_figures(args.config, args.checkpoint, args.device, store_workdir, args.repeats, encoder)
            )
            print_store_table(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
