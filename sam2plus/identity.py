"""Which model computes the image features: what every cache of features keys on.

Features are only interchangeable between encoders that agree on all of it: the SAM2 config, the
weights' content (not the checkpoint's name: two files of one name can differ), the runtime that
runs the encoder and its numeric precision. The embedding caches (in memory and on disk) and any
converted encoder key on `ModelIdentity.digest`, so one model's features never serve another.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ModelIdentity", "weights_digest", "untrained_weights"]

_CHUNK = 8 << 20


def weights_digest(checkpoint: str | Path) -> str:
    """The sha256 of a checkpoint file's content (read in chunks: a checkpoint is up to ~900 MB)."""
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def untrained_weights(seed: int) -> str:
    """The weights' identity of an untrained model: random weights drawn from `seed`."""
    return f"untrained-seed{seed}"


@dataclass(frozen=True)
class ModelIdentity:
    """The model as far as its image features are concerned."""

    config: str  # MODEL_CONFIG, e.g. configs/sam2.1/sam2.1_hiera_t.yaml
    weights: str  # weights_digest of the checkpoint, or untrained_weights(seed)
    runtime: str = "torch"  # what runs the image encoder, with its version where it matters
    precision: str = "f32"  # the encoder's compute precision: f32 or bf16

    def digest(self) -> str:
        """A stable hex name of this identity, for keys and file names."""
        text = "\n".join((self.config, self.weights, self.runtime, self.precision))
        return hashlib.sha256(text.encode()).hexdigest()

    def label(self) -> str:
        """The short form for the model version string and logs: runtime and precision."""
        return f"{self.runtime}-{self.precision}"
