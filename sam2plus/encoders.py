"""SAM2's image encoder run by torch, or converted once to OpenVINO for the CPU (ENCODER_RUNTIME).

On a CPU the image encoder is what a first click waits for. OpenVINO runs the same network about
3x faster there in bf16 (docs/performance.md, The image encoder on a CPU). The network is
converted from torch once per model identity and cached on disk (`EncoderStore`): an IR
(encoder.xml + encoder.bin) and a manifest written last, in a partial folder renamed into
place, every file's size and sha256 checked before use; a missing or damaged entry is built
again under a file lock, so two workers never convert at once. Building also checks parity: the
converted encoder's features against torch's on a fixed probe image (`TOLERANCE`), and times
both; ENCODER_RUNTIME=auto serves OpenVINO only when it passed and was faster.

    python -m sam2plus.encoders   # builds the converted encoder the environment's settings ask for

Every encoder is called with SAM2's square input (uint8, input_size x input_size x 3) and gives
SAM2ImagePredictor's `_features`: {"image_embed": ..., "high_res_feats": [...]}, float32 tensors.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from .config import ENCODER_PRECISIONS as PRECISIONS
from .config import ENCODER_RUNTIMES as RUNTIMES
from .config import ConfigError
from .identity import ModelIdentity, weights_digest
from .logtext import logtext

__all__ = [
    "RUNTIMES",
    "PRECISIONS",
    "TOLERANCE",
    "EncoderChoice",
    "Parity",
    "Manifest",
    "ImageFeatures",
    "fresh_predictor",
    "TorchEncoder",
    "OpenVINOEncoder",
    "EncoderStore",
    "choose_encoder",
    "openvino_version",
    "probe_image",
    "compare_features",
    "load_encoder",
    "main",
]

log = logging.getLogger(__name__)

# Parity: the largest |converted - torch| of each output, over that output's largest |torch|.
# Measured on untrained weights (seed 0): bf16 0.3-1.2 % (hiera-t), up to 1.4 % (hiera-l); f32 1e-6.
TOLERANCE = {"bf16": 0.03, "f32": 1e-4}
FORMAT = 1  # of the store's entries: a change makes every older entry damaged, so it is rebuilt
FILES = ("encoder.xml", "encoder.bin")
MANIFEST = "manifest.json"
_FEATURE_NAMES = ("high_res_feats_0", "high_res_feats_1", "image_embed")


@dataclass(frozen=True)
class EncoderChoice:
    """What the settings ask for on this device, before the parity check: runtime and precision."""

    runtime: str  # "torch" or "openvino"
    precision: str  # "f32" or "bf16"
    fallback: bool  # ENCODER_RUNTIME=auto: torch serves if the converted encoder fails its checks


def _openvino():
    """The openvino module, imported with its telemetry off. OpenVINO's converter (imported with
    openvino itself) sends usage events to Google Analytics unless told not to, and keeps a client
    id and counters in ~/intel; its own code falls back to a stub where the openvino_telemetry
    package cannot be imported, so this process makes it so: no event leaves a backend, and
    nothing is written outside CACHE_DIR (the container's root is read-only)."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # `import openvino_telemetry` raises ImportError
    import openvino

    return openvino


def openvino_version() -> str | None:
    """OpenVINO's release (e.g. 2026.4.1), None when it is not installed."""
    try:
        openvino = _openvino()
    except ImportError:
        return None
    return openvino.__version__.split("-")[0]


def _cpu_has_bf16() -> bool:
    return "BF16" in _openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def choose_encoder(runtime: str, precision: str, device: str) -> EncoderChoice:
    """The encoder ENCODER_RUNTIME and ENCODER_PRECISION give on `device`; a ConfigError when they
    cannot be had there. CUDA: torch in bf16 (autocast), as SAM2 runs on GPUs. CPU: `auto` is
    OpenVINO where it is installed, in bf16 where the CPU has it (f32 otherwise); torch runs f32."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"ENCODER_RUNTIME={runtime!r} must be one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"ENCODER_PRECISION={precision!r} must be one of {', '.join(PRECISIONS)}")
    if device.startswith("cuda"):
        if runtime == "openvino":
            raise ConfigError("ENCODER_RUNTIME=openvino runs on the CPU only: use auto or torch with DEVICE=cuda")
        if precision == "f32":
            raise ConfigError("ENCODER_PRECISION=f32: on CUDA the encoder runs in bf16 (autocast); use auto or bf16")
        return EncoderChoice("torch", "bf16", fallback=False)
    installed = openvino_version() is not None
    if runtime == "openvino" and not installed:
        raise ConfigError("ENCODER_RUNTIME=openvino but the openvino package is not installed (requirements/*.lock)")
    if runtime == "torch" or (runtime == "auto" and not installed):
        if precision == "bf16":
            raise ConfigError(
                "ENCODER_PRECISION=bf16: torch runs the encoder in f32 on the CPU; bf16 needs ENCODER_RUNTIME=openvino"
            )
        return EncoderChoice("torch", "f32", fallback=False)
    has_bf16 = _cpu_has_bf16()
    if precision == "bf16" and not has_bf16:
        raise ConfigError("ENCODER_PRECISION=bf16 but this CPU has no bf16 instructions: use auto or f32")
    chosen = precision if precision != "auto" else ("bf16" if has_bf16 else "f32")
    return EncoderChoice("openvino", chosen, fallback=runtime == "auto")


class ImageFeatures(torch.nn.Module):
    """SAM2ImagePredictor.set_image's network as one module: SAM2's normalised input
    (1 x 3 x S x S float) -> (high_res_feats_0, high_res_feats_1, image_embed); what is converted."""

    def __init__(self, model, feature_sizes):
        super().__init__()
        self.model = model
        self.feature_sizes = [tuple(size) for size in feature_sizes]

    def forward(self, image: torch.Tensor):
        backbone = self.model.forward_image(image)
        _, features, _, _ = self.model._prepare_backbone_features(backbone)
        if self.model.directly_add_no_mem_embed:
            features[-1] = features[-1] + self.model.no_mem_embed
        return tuple(
            feature.permute(1, 2, 0).reshape(1, -1, *size)
            for feature, size in zip(features, self.feature_sizes, strict=True)
        )


def _as_features(outputs) -> dict:
    """The predictor's `_features` of the three outputs of `ImageFeatures`."""
    high_0, high_1, embed = (torch.as_tensor(np.asarray(output, dtype=np.float32)) for output in outputs)
    return {"image_embed": embed, "high_res_feats": [high_0, high_1]}


def _model_input(predictor, image: np.ndarray) -> torch.Tensor:
    """SAM2's own transform of `image` (already input-sized): 1 x 3 x S x S, normalised."""
    return predictor._transforms(image)[None].to(predictor.device)


def fresh_predictor(predictor):
    """A predictor of one call over the shared model: its own image state, the model's weights
    (`SAM2ImagePredictor` keeps the current image's features on the instance)."""
    predictor = copy.copy(predictor)
    predictor.reset_predictor()
    return predictor


class TorchEncoder:
    """SAM2's own encoder run (`SAM2ImagePredictor.set_image`), in bf16 autocast on CUDA."""

    def __init__(self, predictor, identity: ModelIdentity):
        self.predictor = predictor
        self.identity = identity
        self.device = str(predictor.device)

    def autocast(self):
        if self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def __call__(self, image: np.ndarray) -> dict:
        predictor = fresh_predictor(self.predictor)
        with torch.inference_mode(), self.autocast():
            predictor.set_image(image)
        return predictor._features


class OpenVINOEncoder:
    """The converted encoder, compiled for the CPU in its precision; one run at a time (the
    segmenter's encoder lock), each with the threads OpenVINO gives the CPU."""

    def __init__(self, predictor, identity: ModelIdentity, compiled):
        self.predictor = predictor
        self.identity = identity
        self.compiled = compiled

    @classmethod
    def compile(cls, predictor, identity: ModelIdentity, xml: Path) -> OpenVINOEncoder:
        core = _openvino().Core()
        # Unpinned threads: on a CPU shared with other workers and the decoder, threads pinned to
        # cores wait for a busy core (1.3x slower measured on 2 shared cores; pinning is the default).
        properties = {"INFERENCE_PRECISION_HINT": identity.precision, "ENABLE_CPU_PINNING": False}
        return cls(predictor, identity, core.compile_model(str(xml), "CPU", properties))

    def autocast(self):
        return contextlib.nullcontext()

    def __call__(self, image: np.ndarray) -> dict:
        with torch.inference_mode():
            model_input = _model_input(self.predictor, image).numpy()
        outputs = self.compiled(model_input)
        features = _as_features(outputs[i] for i in range(len(_FEATURE_NAMES)))
        # Between runs the activations' memory (~0.4 GB for hiera-t) goes back, as torch's does.
        self.compiled.release_memory()
        return features


@dataclass(frozen=True)
class Parity:
    """Converted against torch on the probe image: per output the largest difference and its share
    of the output's largest value; `passed` when every share is within TOLERANCE[precision]."""

    max_abs: tuple[float, ...]
    relative: tuple[float, ...]
    tolerance: float
    passed: bool


def compare_features(reference: dict, converted: dict, precision: str) -> Parity:
    """The parity of `converted` features against torch's `reference` features."""
    pairs = [
        *zip(reference["high_res_feats"], converted["high_res_feats"], strict=True),
        (reference["image_embed"], converted["image_embed"]),
    ]
    max_abs = tuple(float((ours.float() - theirs.float()).abs().max()) for theirs, ours in pairs)
    peaks = tuple(float(theirs.float().abs().max()) for theirs, _ in pairs)
    relative = tuple(diff / max(peak, 1e-12) for diff, peak in zip(max_abs, peaks, strict=True))
    tolerance = TOLERANCE[precision]
    return Parity(max_abs, relative, tolerance, all(share <= tolerance for share in relative))


def probe_image(size: int, seed: int = 0) -> np.ndarray:
    """A fixed size x size x 3 uint8 picture (smooth texture and discs) for the parity check."""
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):
        x, y = (int(v) for v in rng.integers(0, size, 2))
        radius = int(rng.integers(size // 20, size // 6))
        cv2.circle(image, (x, y), radius, tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
    return image


@dataclass(frozen=True)
class Manifest:
    """An entry of the store: whose encoder it is, its files, its parity and build timings."""

    identity: dict
    files: dict  # name -> {"bytes": int, "sha256": str}
    parity: dict  # asdict(Parity)
    seconds: dict  # convert, torch_run, openvino_run: what building measured
    format: int = FORMAT

    @property
    def faster(self) -> bool:
        """Whether the converted encoder ran faster than torch on the probe (second run against first)."""
        return self.seconds["openvino_run"] < self.seconds["torch_run"]


def _file_record(path: Path) -> dict | None:
    """A file's size and sha256, as the manifest records them; None when it is missing."""
    if not path.is_file():
        return None
    return {"bytes": path.stat().st_size, "sha256": weights_digest(path)}


class EncoderStore:
    """Converted encoders on disk, one folder per `ModelIdentity.digest` under `root`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def folder(self, identity: ModelIdentity) -> Path:
        return self.root / identity.digest()

    @contextlib.contextmanager
    def locked(self, identity: ModelIdentity):
        """Held while an entry is checked or built: another process waits, then finds it built."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{identity.digest()}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load(self, identity: ModelIdentity) -> Manifest | None:
        """The entry's manifest when the entry is whole: its identity, format and every file's
        size and sha256 as written; None when it is missing or damaged (then it is built again)."""
        folder = self.folder(identity)
        try:
            manifest = Manifest(**json.loads((folder / MANIFEST).read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if manifest.format != FORMAT or manifest.identity != asdict(identity) or set(manifest.files) != set(FILES):
            return None
        for name, expected in manifest.files.items():
            if _file_record(folder / name) != expected:
                return None
        return manifest

    def build(self, identity: ModelIdentity, predictor) -> Manifest:
        """Convert the predictor's encoder, check parity, and put the entry in place whole: written in
        a partial folder, manifest last, then renamed over whatever (damaged) entry was there. Call
        it under `locked(identity)`: it removes the partial folders of this identity's dead builds."""
        self.root.mkdir(parents=True, exist_ok=True)
        prefix = f".part-{identity.digest()}-"
        for stale in self.root.glob(f"{prefix}*"):  # a builder that died (the lock is ours now)
            shutil.rmtree(stale, ignore_errors=True)
        part = Path(tempfile.mkdtemp(dir=self.root, prefix=prefix))
        try:
            seconds, parity = _convert(predictor, identity, part)
            files = {name: _file_record(part / name) for name in FILES}
            text = json.dumps(asdict(Manifest(asdict(identity), files, asdict(parity), seconds)), indent=2)
            (part / MANIFEST).write_text(text)
            manifest = Manifest(**json.loads(text))  # as `load` reads it
            folder = self.folder(identity)
            if folder.exists():
                shutil.rmtree(folder)
            os.rename(part, folder)
        finally:
            shutil.rmtree(part, ignore_errors=True)
        return manifest


def _convert(predictor, identity: ModelIdentity, folder: Path) -> tuple[dict, Parity]:
    """Convert `ImageFeatures` to an IR in `folder`; time torch and the compiled IR on the probe."""
    openvino = _openvino()
    model = predictor.model
    network = ImageFeatures(model, predictor._bb_feat_sizes).eval()
    probe = probe_image(model.image_size)
    with torch.inference_mode():
        example = _model_input(predictor, probe)
    started = time.perf_counter()
    with torch.no_grad():
        converted = openvino.convert_model(network, example_input=example)
    openvino.save_model(converted, str(folder / FILES[0]), compress_to_fp16=False)
    seconds = {"convert": time.perf_counter() - started}
    del converted
    torch_encoder = TorchEncoder(predictor, identity)
    started = time.perf_counter()
    reference = torch_encoder(probe)
    seconds["torch_run"] = time.perf_counter() - started
    encoder = OpenVINOEncoder.compile(predictor, identity, folder / FILES[0])
    encoder(probe)  # the first run sets up OpenVINO's kernels and memory
    started = time.perf_counter()
    features = encoder(probe)
    seconds["openvino_run"] = time.perf_counter() - started
    return seconds, compare_features(reference, features, identity.precision)


def load_encoder(predictor, identity: ModelIdentity, choice: EncoderChoice, store: EncoderStore | None):
    """The encoder that serves: torch, or the converted one from `store` (built when missing or
    damaged). With a fallback (ENCODER_RUNTIME=auto) torch serves when the converted encoder
    failed parity or was not faster; otherwise a failed parity is logged and it serves anyway.
    The torch copy of the encoder's weights is dropped when OpenVINO serves."""
    torch_precision = choice.precision if choice.runtime == "torch" else "f32"
    torch_identity = replace(identity, runtime=f"torch-{torch.__version__.split('+')[0]}", precision=torch_precision)
    if choice.runtime == "torch":
        return TorchEncoder(predictor, torch_identity)
    if store is None:
        raise ValueError("ENCODER_RUNTIME=openvino needs a folder for the converted encoder")
    converted = replace(identity, runtime=f"openvino-{openvino_version()}", precision=choice.precision)
    with store.locked(converted):
        manifest = store.load(converted)
        if manifest is None:
            log.info(
                "converting the image encoder to OpenVINO %s (once per model; minutes)", logtext(converted.label())
            )
            manifest = store.build(converted, predictor)
        else:
            log.info("converted image encoder found in %s", logtext(store.folder(converted)))
        parity = Parity(**{k: tuple(v) if isinstance(v, list) else v for k, v in manifest.parity.items()})
        usable = parity.passed and manifest.faster
        if choice.fallback and not usable:
            log.warning(
                "OpenVINO's encoder is not used: parity %s (largest relative difference %s, tolerance %s), "
                "%s s against torch's %s s on the probe; torch serves",
                logtext("passed" if parity.passed else "FAILED"),
                logtext(max(parity.relative)),
                logtext(parity.tolerance),
                logtext(round(manifest.seconds["openvino_run"], 2)),
                logtext(round(manifest.seconds["torch_run"], 2)),
            )
            return TorchEncoder(predictor, torch_identity)
        if not parity.passed:
            log.warning(
                "ENCODER_RUNTIME=openvino: its features differ from torch's by up to %s of their size (tolerance %s)",
                logtext(max(parity.relative)),
                logtext(parity.tolerance),
            )
        encoder = OpenVINOEncoder.compile(predictor, converted, store.folder(converted) / FILES[0])
    predictor.model.image_encoder = None  # OpenVINO holds its own copy of these weights
    return encoder


def main(argv: list[str] | None = None) -> int:
    """Build (or check) the converted encoder that the environment's settings ask for, as a
    worker would at start, so that no worker pays the conversion: `python -m sam2plus.encoders`."""
    from .config import ServerConfig
    from .segmenter import Segmenter, resolve_device
    from .startup import report

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(levelname)s] [%(name)s] %(message)s")
    del argv
    try:
        config = ServerConfig.from_env()
        device = resolve_device(config.device)
        if choose_encoder(config.encoder_runtime, config.encoder_precision, device).runtime == "torch":
            print("sam2plus.encoders: torch runs the encoder here: nothing to build")
            return 0
        segmenter = Segmenter.from_config(config)
    except ConfigError as exc:
        report(exc)
        return 1
    print(f"sam2plus.encoders: ready: {segmenter.identity.label()} in {Path(config.cache_dir) / 'encoders'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
