"""SAM2 behind a tiny surface: build once, `predict(patch, key, prompt)` -> low-res logits.

The image encoder's output is kept per patch key in a memory-bounded LRU, so a repeated
click on the same patch runs only the prompt encoder and the mask decoder. Behind it, when
`Segmenter.store` is set, the embedding store on disk (sam2plus/embeddingstore.py) keeps every
encoded window for the other workers, restarted processes and replicas sharing its folder: a
miss in memory reads the store before it runs the encoder, and every encoder run is stored.

Threads: the model is one and read-only; the image state lives in a predictor of each call
(`SAM2ImagePredictor` keeps the current image's features on the instance, so one shared
instance would hand a request another request's image). Encoder runs take their own lock,
which caps the encoder's working memory at one run per process and encodes a window once when
several requests want it; prompt encoder and mask decoder runs take no lock, so a click whose
embedding is cached never waits for another request's encoder run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import metrics
from .config import UNTRAINED, ConfigError, ServerConfig, checkpoint_file
from .encoders import EncoderStore, choose_encoder, fresh_predictor, load_encoder
from .heap import HeapTrim, release_free_memory
from .identity import ModelIdentity, untrained_weights, weights_digest
from .logtext import logtext
from .prompts import PatchPrompt  # what `predict` takes; defined with `Prompt`
from .startup import checkpoint_problem

__all__ = [
    "UNTRAINED_SEED",
    "LOW_RES",
    "SegmentOutput",
    "PatchPrompt",
    "resolve_checkpoint",
    "resolve_device",
    "INPUT_BAND_BYTES",
    "to_model_input",
    "EmbeddingCache",
    "multimask",
    "Segmenter",
]

log = logging.getLogger(__name__)

UNTRAINED_SEED = 0
LOW_RES = 256  # SAM2's mask logits are 256x256 for its 1024x1024 input


@dataclass(frozen=True)
class SegmentOutput:
    low_res_logits: np.ndarray  # float32 (256, 256): SAM2's mask logits over the whole patch
    score: float  # SAM2's predicted IoU of the chosen mask
    encoded: bool  # True when this call ran the image encoder (a cache miss)


def resolve_checkpoint(checkpoint: str, checkpoint_dir: str) -> str | None:
    """The checkpoint file to load, None for untrained weights; a missing file is a ConfigError
    naming its path and the command that fetches it."""
    problem = checkpoint_problem(checkpoint, checkpoint_dir)
    if problem:
        raise ConfigError(problem)
    path = checkpoint_file(checkpoint, checkpoint_dir)
    return None if path is None else str(path)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"DEVICE={device} but torch sees no CUDA device")
    return device


INPUT_BAND_BYTES = 16 << 20  # how much of the patch to_model_input copies at a time


def to_model_input(patch: np.ndarray, size: int) -> np.ndarray:
    """The patch (H x W x 3 uint8) resized to SAM2's square `size` x `size` input (uint8), the way SAM2 resizes.

    SAM2's own `SAM2Transforms` runs torchvision's `Resize` (bilinear, antialiased, half-pixel
    centres) on the patch as a float tensor. This is the same torch resampling run on uint8, so
    the input SAM2 sees differs from its own transform's only by rounding: at most 1.5 grey levels
    (tests/regular/test_segmenter.py compares the two), and SAM2's transform then finds the size
    already right. It is done here, not by SAM2, so that a big patch (a 100-megapixel frame when
    the whole frame is segmented) never becomes a float tensor (1.2 GB): the width is resized in
    bands of rows, copying at most INPUT_BAND_BYTES of the patch at a time, then the height.
    Resizing in bands gives the same result as one torch call: torch resizes the width, then the height.
    """
    height, width = patch.shape[:2]
    if (height, width) == (size, size):
        return np.ascontiguousarray(patch)
    rows = patch
    if width != size:
        rows = np.empty((height, size, 3), np.uint8)
        band = max(1, INPUT_BAND_BYTES // (width * 3))
        for top in range(0, height, band):
            part = np.array(patch[top : top + band])  # contiguous and writable, as torch wants it
            rows[top : top + len(part)] = _resize_uint8(part, len(part), size)
    elif not patch.flags.c_contiguous or not patch.flags.writeable:
        rows = np.array(patch)  # already `size` wide: a copy of at most size x H pixels
    if height != size:
        rows = _resize_uint8(rows, size, size)
    return np.ascontiguousarray(rows)


def _resize_uint8(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """torch's antialiased bilinear resize (what torchvision's Resize runs) of a contiguous H x W x 3 uint8 image."""
    source = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0)
    resized = torch.nn.functional.interpolate(
        source, size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )
    return resized[0].permute(1, 2, 0).numpy()


class EmbeddingCache:
    """Image features per patch key, on the model's device, bounded in bytes; safe across threads."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, tuple[dict, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = 0

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0

    def get(self, key: tuple, count: bool = True) -> dict | None:
        """The features under `key` (now the most recently used), or None; counted as a hit or a
        miss unless `count` is false."""
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            if count:
                if item is None:
                    self.misses += 1
                else:
                    self.hits += 1
        if count:
            metrics.count_cache("embedding", item is not None)
        return None if item is None else item[0]

    def keys(self) -> list[tuple]:
        with self._lock:
            return list(self._items)

    def __contains__(self, key: tuple) -> bool:
        with self._lock:
            return key in self._items

    def discard(self, digest: str) -> int:
        """Drop the features of every patch of the image with this content digest (a key's first
        item); returns how many."""
        with self._lock:
            keys = [key for key in self._items if key and key[0] == digest]
            for key in keys:
                self.bytes -= self._items.pop(key)[1]
        return len(keys)

    def put(self, key: tuple, features: dict) -> None:
        size = sum(t.numel() * t.element_size() for t in _tensors(features))
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                self.bytes -= self._items.pop(key)[1]
            self._items[key] = (features, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, old) = self._items.popitem(last=False)
                self.bytes -= old


def _tensors(features: dict):
    for value in features.values():
        if isinstance(value, torch.Tensor):
            yield value
        else:
            yield from value


def multimask(prompt: PatchPrompt) -> bool:
    """SAM2's guidance: three candidate masks for an ambiguous prompt (a single point), the best
    score wins; one mask for a rectangle or several points."""
    return prompt.box is None and len(prompt.points) == 1


class Segmenter:
    """The real SAM2 image predictor with an embedding cache and an encoder lock; its image encoder
    is SAM2's in torch, or converted for the CPU (`encoder_runtime`, sam2plus.encoders), whose
    converted copies live in `encoder_dir`."""

    def __init__(
        self,
        model_config: str,
        checkpoint: str | None,
        device: str,
        cache_bytes: int,
        encoder_runtime: str = "torch",
        encoder_precision: str = "auto",
        encoder_dir: str | Path | None = None,
    ):
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.device = device
        self.model_config = model_config
        self.untrained = checkpoint is None
        choice = choose_encoder(encoder_runtime, encoder_precision, device)
        started = time.perf_counter()
        try:
            # Untrained weights come from a fixed seed, so that every worker holds the same model,
            # as workers loading one checkpoint do.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(UNTRAINED_SEED)
                model = build_sam2(model_config, checkpoint, device=device)
        except Exception as exc:  # hydra names a missing config in many ways
            if "config" in str(exc).lower() or type(exc).__name__ in (
                "MissingConfigException",
                "ConfigCompositionException",
            ):
                raise ConfigError(
                    f"MODEL_CONFIG={model_config} is not a sam2 config ({type(exc).__name__}: {exc})"
                ) from None
            raise
        self.predictor = SAM2ImagePredictor(model)
        weights = untrained_weights(UNTRAINED_SEED) if checkpoint is None else weights_digest(checkpoint)
        store = EncoderStore(encoder_dir) if encoder_dir is not None else None
        self.encoder = load_encoder(self.predictor, ModelIdentity(model_config, weights), choice, store)
        self.identity: ModelIdentity = self.encoder.identity
        release_free_memory()  # the torch copy of a converted encoder's weights
        self.input_size = int(model.image_size)
        self.cache = EmbeddingCache(cache_bytes)
        self.store = None  # an EmbeddingStore keyed on `identity` (model.py sets it), or None
        self.encoder_runs = 0
        self._encoder = threading.Lock()
        self.heap = HeapTrim()  # when the encoder's freed memory goes back to the system
        if device.startswith("cuda") and torch.cuda.get_device_properties(0).major >= 8:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        log.info(
            "SAM2 %s loaded on %s in %.1f s%s",
            model_config,
            device,
            time.perf_counter() - started,
            " with UNTRAINED random weights: masks are meaningless" if self.untrained else "",
        )
        log.info(
            "image encoder: %s (ENCODER_RUNTIME=%s, ENCODER_PRECISION=%s)",
            logtext(self.identity.label()),
            logtext(encoder_runtime),
            logtext(encoder_precision),
        )
        if self.untrained:
            log.warning("MODEL_CHECKPOINT=untrained: SAM2 runs with random weights, for tests and benchmarks only")

    @classmethod
    def from_config(cls, config: ServerConfig) -> Segmenter:
        """The segmenter a backend process serves with (docs/configuration.md)."""
        return cls(
            config.model_config,
            resolve_checkpoint(config.model_checkpoint, config.checkpoint_dir),
            resolve_device(config.device),
            config.embedding_cache_mb << 20,
            config.encoder_runtime,
            config.encoder_precision,
            Path(config.cache_dir) / "encoders",
        )

    @property
    def name(self) -> str:
        """The model in the model version: config, encoder runtime and precision, and untrained weights."""
        return f"{Path(self.model_config).stem}@{self.identity.label()}" + (f":{UNTRAINED}" if self.untrained else "")

    def _autocast(self):
        if self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def cached_keys(self, digest: str | None = None) -> list[tuple]:
        """The patch keys whose embedding is held now: in memory and, for the image with this
        content `digest`, in the embedding store."""
        keys = self.cache.keys()
        if digest is not None and self.store is not None:
            held = set(keys)
            keys += [key for key in self.store.keys(digest) if key not in held]
        return keys

    def holds(self, key: tuple) -> bool:
        """Whether the embedding of `key` is held, in memory or in the store (nothing is read)."""
        return key in self.cache or (self.store is not None and self.store.contains(key))

    def forget(self, digest: str) -> int:
        """Drop the embeddings of the image with this content digest, in memory and in the store;
        returns how many."""
        stored = self.store.discard(digest) if self.store is not None else 0
        return self.cache.discard(digest) + stored

    def embed(self, patch: np.ndarray, key: tuple) -> bool:
        """Make sure the embedding of `patch` is cached under `key`; True when this call encoded it."""
        return self._features(patch, key)[1]

    def predict(self, patch: np.ndarray, key: tuple, prompt: PatchPrompt) -> SegmentOutput:
        """Segment `prompt` on `patch` (H x W x 3 uint8); `key` names the patch's content."""
        height, width = patch.shape[:2]
        # SAM2 takes pixel-index coordinates of its input (it adds 0.5 itself); ours are continuous
        # patch coordinates. They are handed over as fractions of the input, so that SAM2 needs no
        # image size: with one of LOW_RES it upsamples its masks to nothing (we use the low-res
        # logits), where the input size would cost a 1024x1024 upsampling per candidate and click.
        scale = np.array([1 / width, 1 / height])
        points = (prompt.points * scale - 0.5 / self.input_size) if len(prompt.points) else None
        box = (prompt.box.reshape(2, 2) * scale - 0.5 / self.input_size).reshape(4) if prompt.box is not None else None
        features, encoded = self._features(patch, key)
        predictor = self._predictor()
        predictor._features = features
        predictor._orig_hw = [(LOW_RES, LOW_RES)]
        predictor._is_image_set = True
        started = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            _, scores, low_res = predictor.predict(
                point_coords=points,
                point_labels=prompt.labels if points is not None else None,
                box=box,
                multimask_output=multimask(prompt),
                return_logits=True,
                normalize_coords=False,
            )
        metrics.observe_stage("decoder", time.perf_counter() - started)
        self.heap.touch()
        best = int(np.argmax(scores))
        return SegmentOutput(np.asarray(low_res[best], dtype=np.float32), float(scores[best]), encoded)

    def predict_points(self, patch: np.ndarray, key: tuple, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SAM2's three candidate masks for each single positive point (N x 2, continuous patch
        coordinates) on `patch`, as the automatic mask generator asks, in one decoder batch:
        low-resolution logits (N, 3, 256, 256) and predicted IoUs (N, 3). The encoder runs (or
        the cache serves) as for a click."""
        height, width = patch.shape[:2]
        features, _ = self._features(patch, key)
        predictor = self._predictor()
        predictor._features = features
        predictor._orig_hw = [(LOW_RES, LOW_RES)]
        predictor._is_image_set = True
        fractions = np.asarray(points, np.float64) / (width, height) - 0.5 / self.input_size
        if not len(fractions):
            return np.zeros((0, 3, LOW_RES, LOW_RES), np.float32), np.zeros((0, 3), np.float32)
        started = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            _, iou, low_res = predictor.predict(
                point_coords=fractions[:, None, :],
                point_labels=np.ones((len(fractions), 1), np.int64),
                multimask_output=True,
                return_logits=True,
                normalize_coords=False,
            )
        metrics.observe_stage("decoder", time.perf_counter() - started)
        self.heap.touch()
        count = len(fractions)
        return (
            np.asarray(low_res, np.float32).reshape(count, 3, LOW_RES, LOW_RES),
            np.asarray(iou, np.float32).reshape(count, 3),
        )

    def _predictor(self):
        """A predictor of this call over the shared model: its own image state, the model's weights."""
        return fresh_predictor(self.predictor)

    def _features(self, patch: np.ndarray, key: tuple) -> tuple[dict, bool]:
        """The patch's image features from the cache, or from an encoder run under the encoder lock
        (a request that waited there for another's run of the same key takes its result)."""
        features = self.cache.get(key)
        if features is None:
            features = self._stored(key)
        if features is not None:
            return features, False
        with self._encoder:
            features = self.cache.get(key, count=False)
            if features is not None:
                return features, False
            with self.heap.encoding():  # its freed memory handed back when the worker is idle
                started = time.perf_counter()
                features = self.encoder(to_model_input(patch, self.input_size))
                self.encoder_runs += 1
                metrics.count_encoder_run(time.perf_counter() - started)
                self.cache.put(key, features)
        self._keep(key, features)
        return features, True

    def _stored(self, key: tuple) -> dict | None:
        """The features of `key` from the embedding store, moved to the model's device and cached
        in memory; None without a store or on a miss."""
        if self.store is None:
            return None
        stored = self.store.get(key)
        if stored is None:
            return None
        features = {
            name: value.to(self.device) if isinstance(value, torch.Tensor) else [t.to(self.device) for t in value]
            for name, value in stored.items()
        }
        self.cache.put(key, features)
        return features

    def _keep(self, key: tuple, features: dict) -> None:
        """Store what the encoder made for the other processes (failures are the store's to log)."""
        if self.store is not None:
            self.store.put(key, features)
