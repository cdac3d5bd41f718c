"""A TEST DOUBLE of SAM2 for geometry tests: it is not SAM2 and it learns nothing.

`ColorRegionSegmenter` segments the uniformly coloured region under the prompt, following
SAM2's real resolution path so that the pipeline's geometry can be checked against drawn
shapes with known answers: the patch is resized to the 1024x1024 model input with the same
function the real segmenter uses, the region is found there, averaged down to 256x256
low-resolution logits, and those logits go back through the pipeline's own upsampling.
"""

from __future__ import annotations

import cv2
import numpy as np

from sam2plus.segmenter import PatchPrompt, SegmentOutput, to_model_input

INPUT_SIZE = 1024
LOW_RES = 256


class ColorRegionSegmenter:
    name = "test-double:color-region"

    def __init__(self, tolerance: int = 40):
        self.tolerance = tolerance
        self.encoder_runs = 0
        self._encoded: dict = {}  # key -> None, in the order encoded
        self._window: tuple = (None, None, {}, {})  # predict_points' last window

    def cached_keys(self, digest: str | None = None) -> list[tuple]:
        """The keys "encoded" so far (the double forgets nothing)."""
        return list(self._encoded)

    def holds(self, key: tuple) -> bool:
        return key in self._encoded

    def forget(self, digest: str) -> int:
        """Forget the "embeddings" of the image with this digest, as Segmenter.forget does."""
        keys = [key for key in self._encoded if key[0] == digest]
        for key in keys:
            del self._encoded[key]
        return len(keys)

    def embed(self, patch: np.ndarray, key: tuple) -> bool:
        return self._encode(key)

    def _encode(self, key: tuple) -> bool:
        encoded = key not in self._encoded
        if encoded:
            self._encoded[key] = None
            self.encoder_runs += 1
        return encoded

    def predict_points(self, patch: np.ndarray, key: tuple, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The uniformly coloured region under each point, as `Segmenter.predict_points` shapes its
        answer: three identical candidates per point, each scored 1. Points whose colours agree
        within 8 levels share the components of the first one's colour (for speed)."""
        self._encode(key)
        height, width = patch.shape[:2]
        if self._window[0] != key:  # the last window's input and regions serve its next batches
            self._window = (key, to_model_input(patch, INPUT_SIZE).astype(np.int16), {}, {})
        _, image, components_of, logits_of = self._window  # (colour, component) -> its logits
        scale = np.array([INPUT_SIZE / width, INPUT_SIZE / height])
        logits = np.empty((len(points), 3, LOW_RES, LOW_RES), np.float32)
        for index, point in enumerate(np.asarray(points, np.float64)):
            sx, sy = np.clip((point * scale).astype(int), 0, INPUT_SIZE - 1)
            colour = tuple(image[sy, sx] // 8)
            if colour not in components_of or components_of[colour][sy, sx] == 0:
                near = np.all(np.abs(image - image[sy, sx]) <= self.tolerance, axis=2).astype(np.uint8)
                components_of[colour] = cv2.connectedComponents(near, connectivity=4)[1]
                for stale in [k for k in logits_of if k[0] == colour]:
                    del logits_of[stale]
            label = (colour, int(components_of[colour][sy, sx]))
            if label not in logits_of:
                region = (components_of[colour] == label[1]).astype(np.float32)
                logits_of[label] = (cv2.resize(region, (LOW_RES, LOW_RES), interpolation=cv2.INTER_AREA) - 0.5) * 20
            logits[index] = logits_of[label]
        return logits, np.ones((len(points), 3), np.float32)

    def predict(self, patch: np.ndarray, key: tuple, prompt: PatchPrompt) -> SegmentOutput:
        height, width = patch.shape[:2]
        image = to_model_input(patch, INPUT_SIZE).astype(np.int16)
        scale = np.array([INPUT_SIZE / width, INPUT_SIZE / height])
        positives = prompt.points[prompt.labels == 1] if len(prompt.points) else prompt.points
        if len(positives):
            seed = positives[0]
        else:
            seed = (prompt.box[:2] + prompt.box[2:]) / 2
        sx, sy = np.clip((seed * scale).astype(int), 0, INPUT_SIZE - 1)
        near = np.all(np.abs(image - image[sy, sx]) <= self.tolerance, axis=2).astype(np.uint8)
        _, components = cv2.connectedComponents(near, connectivity=4)
        region = (components == components[sy, sx]).astype(np.float32)
        fraction = cv2.resize(region, (LOW_RES, LOW_RES), interpolation=cv2.INTER_AREA)
        return SegmentOutput((fraction - 0.5) * 20, 1.0, self._encode(key))
