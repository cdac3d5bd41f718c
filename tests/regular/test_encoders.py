"""The encoder runtime (sam2plus.encoders): settings, the converted encoder's store, and parity.

The fast tests check the choice of runtime and precision and the store's integrity rules (a
missing, partial or damaged entry is never used) without converting anything. The slow ones
convert the real SAM2 hiera-t (untrained weights, seed UNTRAINED_SEED) to OpenVINO once for
the whole module (about a minute on 2 cores) and compare it with torch: the features within
TOLERANCE, the regions of clicks on drawn discs through the real pipeline within PARITY_IOU,
and a second segmenter loading what the first converted.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import requests
import torch

from sam2plus import encoders
from sam2plus.config import ConfigError, ServerConfig
from sam2plus.embeddingstore import EmbeddingStore
from sam2plus.encoders import (
    FILES,
    MANIFEST,
    EncoderChoice,
    EncoderStore,
    Parity,
    TorchEncoder,
    choose_encoder,
    compare_features,
    load_encoder,
    openvino_version,
    probe_image,
)
from sam2plus.identity import ModelIdentity
from sam2plus.params import parse_extra_params
from sam2plus.segmenter import PatchPrompt, Segmenter, to_model_input
from tests.conftest import make_pipeline
from tests.support.inprocess import SCENE, predict_body
from tests.support.scenes import DiscScene, brush_mask, iou, label_config, point_context, rect_context
from tests.support.servers import gunicorn_server

TINY = "configs/sam2.1/sam2.1_hiera_t.yaml"
IDENTITY = ModelIdentity(TINY, "untrained-seed0", "openvino-test", "bf16")
# The regions of one click from the converted bf16 encoder and from torch: their masks' IoU at
# least this (measured on the scenes below: 0.9994 to 0.9998; docs/performance.md, The image encoder on a CPU).
PARITY_IOU = 0.99


# ---------------------------------------------------------------- settings


def test_auto_on_a_cpu_is_openvino_in_the_cpus_best_precision():
    choice = choose_encoder("auto", "auto", "cpu")
    assert choice.runtime == "openvino" and choice.fallback, "auto may fall back to torch after the checks"
    assert choice.precision == ("bf16" if encoders._cpu_has_bf16() else "f32")
    assert choose_encoder("openvino", "f32", "cpu") == EncoderChoice("openvino", "f32", fallback=False)
    assert choose_encoder("torch", "auto", "cpu") == EncoderChoice("torch", "f32", fallback=False)


def test_cuda_stays_on_torch_in_bf16():
    assert choose_encoder("auto", "auto", "cuda") == EncoderChoice("torch", "bf16", fallback=False)
    assert choose_encoder("torch", "bf16", "cuda:1").runtime == "torch"


@pytest.mark.parametrize(
    "runtime, precision, device, named",
    [
        ("openvino", "auto", "cuda", "ENCODER_RUNTIME=openvino runs on the CPU only"),
        ("auto", "f32", "cuda", "ENCODER_PRECISION=f32"),
        ("torch", "bf16", "cpu", "bf16 needs ENCODER_RUNTIME=openvino"),
        ("onnx", "auto", "cpu", "ENCODER_RUNTIME='onnx'"),
        ("auto", "fp16", "cpu", "ENCODER_PRECISION='fp16'"),
    ],
)
def test_settings_the_device_cannot_have_are_start_up_errors_naming_them(runtime, precision, device, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        choose_encoder(runtime, precision, device)


def test_without_openvino_auto_is_torch_and_openvino_an_error(monkeypatch):
    monkeypatch.setattr(encoders, "openvino_version", lambda: None)
    assert choose_encoder("auto", "auto", "cpu") == EncoderChoice("torch", "f32", fallback=False)
    with pytest.raises(ConfigError, match="openvino package is not installed"):
        choose_encoder("openvino", "auto", "cpu")


def test_the_settings_are_read_from_the_environment_and_checked():
    config = ServerConfig.from_env({"ENCODER_RUNTIME": " OpenVINO ", "ENCODER_PRECISION": "F32"})
    assert (config.encoder_runtime, config.encoder_precision) == ("openvino", "f32")
    assert (ServerConfig().encoder_runtime, ServerConfig().encoder_precision) == ("auto", "auto")
    with pytest.raises(ConfigError) as bad:
        ServerConfig.from_env({"ENCODER_RUNTIME": "tensorrt", "ENCODER_PRECISION": "int8"})
    assert [line.split("=")[0] for line in bad.value.problems] == ["ENCODER_RUNTIME", "ENCODER_PRECISION"]


def test_openvino_is_imported_with_its_telemetry_off(tmp_path):
    """A plain `import openvino` writes a client id and counters into ~/intel and sends a usage
    event; the backend's import uses OpenVINO's own stub instead: nothing in HOME, no event."""
    code = (
        "from sam2plus import encoders; encoders.openvino_version(); import openvino.tools.ovc.convert_impl as c; "
        "print(c.tm.__name__)"
    )
    env = {**os.environ, "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["openvino.tools.ovc.telemetry_stub"] and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the store


def _fake_convert(predictor, identity, folder):
    """Stands in for the conversion in the store's tests: writes the entry's files, reports parity."""
    for name in FILES:
        (folder / name).write_bytes(f"{name} of {identity.digest()}".encode())
    return {"convert": 1.0, "torch_run": 2.0, "openvino_run": 1.0}, Parity((0.01,), (0.001,), 0.03, True)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(encoders, "_convert", _fake_convert)
    return EncoderStore(tmp_path / "encoders")


def test_a_built_entry_is_whole_and_loads(store):
    assert store.load(IDENTITY) is None, "nothing built yet"
    built = store.build(IDENTITY, predictor=None)
    folder = store.folder(IDENTITY)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*FILES, MANIFEST])
    assert store.load(IDENTITY) == built and built.identity["precision"] == "bf16"
    assert not [p for p in store.root.iterdir() if p.name.startswith(".part-")], "no partial folder is left"
    other = ModelIdentity(TINY, "untrained-seed0", "openvino-test", "f32")
    assert store.load(other) is None and store.folder(other) != folder, "each precision has its own entry"


@pytest.mark.parametrize(
    "damage",
    [
        lambda folder: (folder / "encoder.bin").write_bytes(b"encoder.bin of somebody else"),  # same size, other bytes
        lambda folder: (folder / "encoder.bin").write_bytes(b"short"),
        lambda folder: (folder / "encoder.xml").unlink(),
        lambda folder: (folder / MANIFEST).write_text("{not json"),
        lambda folder: (folder / MANIFEST).unlink(),  # a build that died before its last write
    ],
    ids=["content", "size", "missing-file", "bad-manifest", "no-manifest"],
)
def test_a_damaged_entry_is_never_used_and_is_built_again(store, damage):
    first = store.build(IDENTITY, predictor=None)
    damage(store.folder(IDENTITY))
    assert store.load(IDENTITY) is None
    assert store.build(IDENTITY, predictor=None).files == first.files
    assert store.load(IDENTITY) is not None


def test_an_entry_of_another_identity_or_format_is_not_used(store):
    store.build(IDENTITY, predictor=None)
    manifest_path = store.folder(IDENTITY) / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "format": 0}))
    assert store.load(IDENTITY) is None
    manifest_path.write_text(json.dumps({**manifest, "identity": {**manifest["identity"], "weights": "other"}}))
    assert store.load(IDENTITY) is None


def test_a_failed_build_leaves_no_entry_and_no_partial_folder(store, monkeypatch):
    def dies(predictor, identity, folder):
        (folder / FILES[0]).write_bytes(b"half")
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(encoders, "_convert", dies)
    with pytest.raises(RuntimeError, match="conversion failed"):
        store.build(IDENTITY, predictor=None)
    assert store.load(IDENTITY) is None and not [p for p in store.root.iterdir() if p.is_dir()]


def test_a_dead_builders_partial_folder_is_removed_by_the_next_build(store):
    dead = store.root / f".part-{IDENTITY.digest()}-killed"
    dead.mkdir(parents=True)
    (dead / "encoder.bin").write_bytes(b"half of a killed conversion")
    other = ModelIdentity(TINY, "untrained-seed0", "openvino-test", "f32")
    building = store.root / f".part-{other.digest()}-running"  # another identity's build, under its own lock
    building.mkdir()
    store.build(IDENTITY, predictor=None)
    assert not dead.exists() and building.exists() and store.load(IDENTITY) is not None


@pytest.mark.parametrize("passed, seconds", [(False, 1.0), (True, 3.0)], ids=["parity-failed", "slower"])
def test_auto_falls_back_to_torch_when_the_converted_encoder_failed_its_checks(store, monkeypatch, passed, seconds):
    def checked(predictor, identity, folder):
        times, parity = _fake_convert(predictor, identity, folder)
        return {**times, "openvino_run": seconds}, Parity((0.5,), (0.1,), 0.03, passed)

    monkeypatch.setattr(encoders, "_convert", checked)
    predictor = SimpleNamespace(device="cpu", model=SimpleNamespace(image_encoder="torch's weights"))
    auto = EncoderChoice("openvino", "bf16", fallback=True)
    encoder = load_encoder(predictor, ModelIdentity(TINY, "untrained-seed0"), auto, store)
    assert isinstance(encoder, TorchEncoder) and encoder.identity.runtime.startswith("torch-")
    assert encoder.identity.precision == "f32" and predictor.model.image_encoder == "torch's weights"


def test_parity_is_the_largest_difference_over_the_outputs_size():
    reference = {"image_embed": torch.full((1, 2), 4.0), "high_res_feats": [torch.ones(1, 2), torch.ones(1, 2)]}
    close = {"image_embed": torch.full((1, 2), 4.04), "high_res_feats": [torch.ones(1, 2), torch.ones(1, 2) * 1.02]}
    parity = compare_features(reference, close, "bf16")
    assert parity.passed and parity.relative == pytest.approx((0.0, 0.02, 0.01), abs=1e-6)
    assert not compare_features(reference, close, "f32").passed


# ---------------------------------------------------------------- real SAM2, converted


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """hiera-t converted once for the module (OpenVINO, the CPU's precision), and its store: the
    folder a backend with CACHE_DIR=`folder.parent` uses."""
    folder = tmp_path_factory.mktemp("cache") / "encoders"
    return Segmenter(TINY, None, "cpu", 256 << 20, "openvino", "auto", folder), folder


@pytest.fixture(scope="module")
def eager():
    return Segmenter(TINY, None, "cpu", 256 << 20, "torch")


@pytest.mark.slow
def test_the_converted_encoders_features_match_torchs(converted, eager):
    segmenter, folder = converted
    assert segmenter.identity.runtime == f"openvino-{openvino_version()}"
    assert segmenter.identity.digest() != eager.identity.digest(), "their features never share a cache entry"
    assert segmenter.predictor.model.image_encoder is None, "torch's copy of the encoder's weights is dropped"
    manifest = EncoderStore(folder).load(segmenter.identity)
    assert manifest is not None and manifest.parity["passed"], manifest
    image = to_model_input(probe_image(1024, seed=7), 1024)
    parity = compare_features(eager.encoder(image), segmenter.encoder(image), segmenter.identity.precision)
    print(f"\nparity on another picture: {parity}")
    assert parity.passed, parity


SCENES = [
    DiscScene(1024, 1024, 512, 512, 150),
    DiscScene(2400, 1800, 700, 1200, 260),
    DiscScene(800, 600, 200, 150, 90),
]


@pytest.mark.slow
@pytest.mark.parametrize("scene", SCENES, ids=[f"{s.width}x{s.height}" for s in SCENES])
def test_a_clicks_regions_are_those_of_torch(converted, eager, scene, tmp_path):
    """The same click through the real pipeline with each encoder: the brush masks agree."""
    path = scene.write(tmp_path / "scene.jpg")
    params = parse_extra_params({"return_format": {"type": "BrushLabels"}})
    task = {"id": 1, "data": {"image": str(path)}}
    for context in (
        rect_context(scene.box(), scene.width, scene.height),
        point_context([(scene.cx, scene.cy)], scene.width, scene.height),
    ):
        masks = []
        for segmenter in (eager, converted[0]):
            regions = make_pipeline(tmp_path, segmenter).run(task, context, label_config(), params).regions
            masks.append(np.any([brush_mask(r) for r in regions], axis=0) if regions else None)
        assert (masks[0] is None) == (masks[1] is None), "one encoder found a region, the other none"
        if masks[0] is not None:
            score = iou(masks[0], masks[1])
            print(f"\n{scene} IoU {score:.4f}, identical {np.array_equal(masks[0], masks[1])}")
            assert score >= PARITY_IOU


@pytest.mark.slow
def test_the_embedding_store_never_serves_one_runtimes_features_to_the_other(converted, eager, tmp_path):
    """torch (ENCODER_RUNTIME=torch) and OpenVINO on one embedding store folder, as model.py keys
    it (`identity.digest()`): each misses what the other stored and runs its own encoder."""
    openvino = converted[0]
    patch = probe_image(1024, seed=5)
    prompt = PatchPrompt(np.array([[512.0, 512.0]]), np.array([1]), None)
    first, second = ("img-a", (1024, 1024), (0, 0, 1024, 1024), None), ("img-b", (1024, 1024), (0, 0, 1024, 1024), None)
    try:
        for segmenter in (eager, openvino):
            segmenter.store = EmbeddingStore(tmp_path, 1 << 30, segmenter.identity.digest())
        for writer, reader, key in ((eager, openvino, first), (openvino, eager, second)):
            assert writer.predict(patch, key, prompt).encoded and writer.store.contains(key)
            runs = reader.encoder_runs
            assert reader.predict(patch, key, prompt).encoded, f"{reader.name} was served {writer.name}'s features"
            assert reader.encoder_runs == runs + 1 and reader.store.hits == 0
        assert eager.store.get(first) is not None and openvino.store.get(first) is not None, "each stored its own"
        assert len(list(tmp_path.glob("*.emb"))) == 4
    finally:
        eager.store = openvino.store = None
        eager.cache.clear()
        openvino.cache.clear()


@pytest.mark.slow
def test_a_second_worker_loads_the_converted_encoder_without_converting(converted, caplog):
    segmenter, folder = converted
    built = {p.name: p.stat().st_mtime_ns for p in folder.rglob("*")}
    with caplog.at_level(logging.INFO, logger="sam2plus.encoders"):
        second = Segmenter(TINY, None, "cpu", 64 << 20, "openvino", "auto", folder)
    assert "converted image encoder found" in caplog.text and "converting" not in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in folder.rglob("*")} == built
    assert second.identity == segmenter.identity and second.name.startswith("sam2.1_hiera_t@openvino-")
    image = probe_image(1024, seed=3)
    assert torch.equal(second.encoder(image)["image_embed"], segmenter.encoder(image)["image_embed"])


@pytest.mark.slow
def test_gunicorns_workers_serve_the_converted_encoder_by_default(converted, tmp_path):
    """The default settings under gunicorn, 2 workers, the store warm: both load it, none converts,
    and the model version names the runtime."""
    _, folder = converted
    env = {"ENCODER_RUNTIME": "", "CACHE_DIR": str(folder.parent), "MODEL_DIR": str(tmp_path / "models")}
    with gunicorn_server(env, workers=2, log_dir=tmp_path) as server:
        version = requests.get(f"{server.url}/health", timeout=10).json()["model_version"]
        assert f"sam2.1_hiera_t@openvino-{openvino_version()}-" in version and version.endswith(":untrained")
        SCENE.write(folder.parent / "scene.jpg")
        answer = requests.post(f"{server.url}/predict", json=predict_body(), timeout=300)
        assert answer.status_code == 200 and answer.json()["results"][0]["model_version"] == version
    log = server.log.read_text()
    assert log.count("converted image encoder found") == 2 and "converting" not in log
