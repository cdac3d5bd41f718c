"""One click, end to end: task + context -> prompt -> frame -> model -> mask -> regions.

`Pipeline.run` is the whole request path without HTTP, shared by the server, the benchmark
and the in-process probe; `Pipeline.warm` prepares an image before its first click (the
warm-up when a task opens).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np

from . import metrics
from .artifacts import new_request_dir, write_artifacts
from .errors import RequestError, Stopped, describe
from .events import TaskImages
from .fetch import ImageFetcher, LocalImage
from .frames import FrameMap, Window, extract_patch, frame_size, full_frame, grid_windows, plan_frame
from .framestore import FrameStore
from .images import ImageInfo, decode_frame, read_info
from .labelconfig import OutputControl, find_output_control
from .masks import Mask, mask_from_logits
from .params import ExtraParams
from .postprocess import postprocess
from .prompts import MAX_PROMPT_POINTS, parse_prompt
from .results import polygons, regions

__all__ = ["Prediction", "embedding_key", "padding_fill", "warm_windows", "Pipeline"]

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    regions: list[dict]
    score: float
    frame_map: FrameMap
    mask: Mask  # the post-processed mask in patch pixels
    artifacts: Path | None = None


def embedding_key(digest: str, frame_map: FrameMap, fill: tuple[int, int, int]) -> tuple:
    """What names a window's embedding: the image's content, the frame size, the window and, for a
    window reaching past the frame, the padding colour."""
    padded = frame_map.valid_box() != (0, 0, *frame_map.patch_size)
    return digest, frame_map.frame_size, astuple(frame_map.window), fill if padded else None


def warm_windows(image_size: tuple[int, int], params: ExtraParams) -> list[FrameMap]:
    """What a warm-up encodes: the whole frame without subpatching, the grid of windows with
    `subpatching.warm_grid` (`grid_windows`), nothing otherwise (the window depends on the click)."""
    if params.subpatching is None:
        return [full_frame(image_size, params)]
    return grid_windows(image_size, params) if params.subpatching.warm_grid else []


def padding_fill(params: ExtraParams) -> tuple[int, int, int]:
    return params.subpatching.padding_fill if params.subpatching else (0, 0, 0)


class Pipeline:
    def __init__(
        self,
        segmenter,
        fetcher: ImageFetcher,
        frames: FrameStore,
        max_pixels: int,
        cache_dir: str | Path,
        max_prompt_points: int = MAX_PROMPT_POINTS,
    ):
        self.segmenter = segmenter
        self.fetcher = fetcher
        self.frames = frames
        self.max_pixels = max_pixels
        self.cache_dir = Path(cache_dir)
        self.max_prompt_points = max_prompt_points
        self.decode_timeout: float | None = None  # DECODE_TIMEOUT (images.DECODE_TIMEOUT when None)
        self.task_images = TaskImages()  # image value -> content digest, for the `release` event

    def run(
        self,
        task: dict,
        context: dict,
        label_config: str,
        params: ExtraParams,
        artifacts: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> Prediction:
        """One click; `should_stop` is asked between stages and True raises `Stopped`."""
        clock = _Clock()
        fmt = params.return_format
        control = find_output_control(label_config, fmt.type)
        prompt = parse_prompt(context, self.max_prompt_points)
        local, info, field = self.image(task, control, should_stop)
        with local:  # the download stays leased (never evicted) until the click is done
            prompt.check_image_size(info.size)
            clock.lap("fetch")
            _stop_if(should_stop, "fetch")

            fill = padding_fill(params)
            encoded = (
                self.encoded_windows(local.digest, frame_size(info.size, params), fill) if params.subpatching else ()
            )
            frame_map = plan_frame(info.size, prompt, params, encoded)
            frame = self.frame(local, info, frame_map.frame_size, field, should_stop)
            clock.lap("decode")
            _stop_if(should_stop, "decode")
            patch = extract_patch(frame, frame_map, fill)
            prompt_in_patch = frame_map.prompt_to_patch(prompt)
            output = self.segmenter.predict(patch, embedding_key(local.digest, frame_map, fill), prompt_in_patch)
            clock.lap("model")
            _stop_if(should_stop, "model")

            mask = postprocess(
                mask_from_logits(output.low_res_logits, frame_map), params.postprocess, frame_map.valid_box()
            )
            label = prompt.label or (control.labels[0] if control.labels else None)
            result = regions(mask, frame_map, fmt, control, label, output.score)
            clock.lap("regions")

            folder = None
            if artifacts:
                folder = new_request_dir(self.cache_dir)
                rings = polygons(mask, fmt) if fmt.kind == "polygon" else []
                summary = {
                    "image": describe(task["data"][control.image_key], 300),
                    "image_size": info.size,
                    "frame_size": frame_map.frame_size,
                    "window": astuple(frame_map.window),
                    "mode": frame_map.mode,
                    "reused_window": frame_map.reused,
                    "score": output.score,
                    "regions": len(result),
                }
                write_artifacts(folder, frame, frame_map, patch, prompt_in_patch, mask, rings, summary)
                clock.lap("artifacts")
            log.info(
                "predict: %s %dx%d window %s%s, %s, %d regions; %s ms",
                frame_map.mode,
                *frame_map.frame_size,
                astuple(frame_map.window),
                " (reused)" if frame_map.reused else "",
                "encoded" if output.encoded else "cached embedding",
                len(result),
                ", ".join(f"{name} {ms:.0f}" for name, ms in clock.laps.items()),
            )
            return Prediction(result, output.score, frame_map, mask, folder)

    def warm(self, task: dict, label_config: str, params: ExtraParams, pause=lambda: None) -> str:
        """Prepare the task's image for its first click: fetch it, decode its frame into the frame
        store and encode it (`prepare`). `pause()` runs before each stage (the warm-up waits there
        for clicks in flight). Returns what was done, for the log."""
        control = find_output_control(label_config, params.return_format.type)
        pause()
        local, info, field = self.image(task, control)
        with local:
            return self.prepare(local, info, field, params, pause)

    def prepare(self, local: LocalImage, info: ImageInfo, field: str, params: ExtraParams, pause=lambda: None) -> str:
        """Decode the image's frame into the frame store and encode its windows (`warm_windows`)
        that no cache holds yet; an image whose windows are all held is not decoded at all."""
        fill = padding_fill(params)
        windows = warm_windows(info.size, params)
        todo = self.windows_to_encode(local.digest, info.size, params)
        frame_w, frame_h = frame_size(info.size, params)
        if windows and not todo:
            return f"frame {frame_w}x{frame_h}: {len(windows)} embeddings were held"
        pause()
        frame = self.frame(local, info, (frame_w, frame_h), field)
        encoded = 0
        for frame_map, key in todo:
            pause()
            encoded += self.segmenter.embed(extract_patch(frame, frame_map, fill), key)
        what = f"frame {frame_w}x{frame_h} stored"
        return what + (f", {encoded} of {len(windows)} embeddings encoded" if windows else "")

    def windows_to_encode(self, digest: str, image_size: tuple[int, int], params: ExtraParams) -> list:
        """(frame map, key) of each window a warm-up encodes (`warm_windows`) that no cache holds."""
        fill = padding_fill(params)
        keys = ((fm, embedding_key(digest, fm, fill)) for fm in warm_windows(image_size, params))
        return [(fm, key) for fm, key in keys if not self.segmenter.holds(key)]

    def image(
        self, task: dict, control: OutputControl, should_stop: Callable[[], bool] | None = None
    ) -> tuple[LocalImage, ImageInfo, str]:
        """The task's image as a local file with its size and orientation, and the request field naming
        it; a download stops (`Stopped`) once `should_stop()` is true."""
        data = task.get("data") if isinstance(task, dict) else None
        field = f"tasks[0].data.{control.image_key}"
        if not isinstance(data, dict) or control.image_key not in data:
            raise RequestError(field, f"missing: the task has no image under {describe(control.image_key)}")
        local = self.fetcher.fetch(data[control.image_key], field, task.get("id"), should_stop)
        self.task_images.note(data[control.image_key], local.digest)
        info = local.checked  # a new download's header, read once by the download cache's check
        if not isinstance(info, ImageInfo):
            info = read_info(local.path, self.max_pixels, field)
        return local, info, field

    def encoded_windows(self, digest: str, size: tuple[int, int], fill: tuple[int, int, int]) -> list[Window]:
        """The windows of this image's frame of this size whose embedding the segmenter holds (in
        memory or in the embedding store) and that show the same pixels with this padding fill (a
        window inside the frame shows no fill)."""
        return [
            Window(*window)
            for key_digest, key_size, window, key_fill in self.segmenter.cached_keys(digest)
            if key_digest == digest and key_size == size and key_fill in (None, fill)
        ]

    def frame(
        self,
        local: LocalImage,
        info: ImageInfo,
        frame_size: tuple[int, int],
        field: str,
        should_stop: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """The image's frame of this size from the frame store, decoded into it on a miss (within
        DECODE_TIMEOUT, and until `should_stop()`); a downloaded file that does not decode leaves
        the download cache."""

        def decode(out: np.ndarray) -> np.ndarray:
            try:
                return decode_frame(
                    local.path, info, frame_size, field, out, timeout=self.decode_timeout, should_stop=should_stop
                )
            except RequestError:
                self.fetcher.downloads.discard(local.path)
                raise

        return self.frames.get(local.digest, frame_size, decode)


def _stop_if(should_stop: Callable[[], bool] | None, stage: str) -> None:
    if should_stop is not None and should_stop():
        raise Stopped(f"the client went away; stopped after {stage}")


class _Clock:
    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = (now - self._last) * 1000
        if name != "model":  # the segmenter times the model's encoder and decoder apart
            metrics.observe_stage(name, now - self._last)
        self._last = now
