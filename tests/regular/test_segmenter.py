"""sam2plus.segmenter: checkpoints, devices, the model input, the embedding cache, and the real SAM2.

The tests marked slow build the real `sam2` architecture (untrained weights, CPU): every hiera
size of both config families, a checkpoint file round trip, and the embedding cache handing
back exactly the features the encoder produced.
"""

from __future__ import annotations

import functools
import gc
import threading
import warnings

import cv2
import numpy as np
import pytest
import torch
from sam2.utils.transforms import SAM2Transforms

from sam2plus import segmenter as seg
from sam2plus.config import ConfigError
from sam2plus.identity import ModelIdentity, weights_digest
from sam2plus.segmenter import (
    EmbeddingCache,
    PatchPrompt,
    Segmenter,
    multimask,
    resolve_checkpoint,
    resolve_device,
    to_model_input,
)

TINY = "configs/sam2.1/sam2.1_hiera_t.yaml"
CONFIGS = [
    f"configs/{family}/{family}_hiera_{size}.yaml" for family in ("sam2.1", "sam2") for size in ("t", "s", "b+", "l")
]


# ---------------------------------------------------------------- checkpoints and devices


def test_untrained_means_no_checkpoint():
    assert resolve_checkpoint("untrained", "/nowhere") is None


def test_a_checkpoint_name_is_looked_up_in_the_checkpoint_dir_and_an_absolute_path_as_it_is(tmp_path):
    (tmp_path / "sam2.1_hiera_tiny.pt").write_bytes(b"weights")
    assert resolve_checkpoint("sam2.1_hiera_tiny.pt", str(tmp_path)) == str(tmp_path / "sam2.1_hiera_tiny.pt")
    assert resolve_checkpoint(str(tmp_path / "sam2.1_hiera_tiny.pt"), "/elsewhere") == str(
        tmp_path / "sam2.1_hiera_tiny.pt"
    )


def test_a_missing_checkpoint_names_the_path_and_how_to_get_it(tmp_path):
    with pytest.raises(ConfigError) as caught:
        resolve_checkpoint("sam2.1_hiera_large.pt", str(tmp_path))
    message = str(caught.value)
    assert str(tmp_path / "sam2.1_hiera_large.pt") in message
    assert "download-checkpoints.py" in message and "MODEL_CHECKPOINT=untrained" in message


@pytest.mark.parametrize("cuda, expected", [(True, "cuda"), (False, "cpu")])
def test_auto_device_is_cuda_when_torch_sees_one(monkeypatch, cuda, expected):
    monkeypatch.setattr(seg.torch.cuda, "is_available", lambda: cuda)
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == "cpu"


def test_cuda_without_a_gpu_is_a_start_up_error(monkeypatch):
    monkeypatch.setattr(seg.torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=f"DEVICE={device}"):
            resolve_device(device)


def test_cuda_runs_under_bfloat16_autocast_and_cpu_without():
    on_gpu = object.__new__(Segmenter)
    on_gpu.device = "cuda"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that it sees no CUDA device
        autocast = on_gpu._autocast()
    assert isinstance(autocast, torch.autocast) and autocast.fast_dtype == torch.bfloat16
    on_cpu = object.__new__(Segmenter)
    on_cpu.device = "cpu"
    assert not isinstance(on_cpu._autocast(), torch.autocast)


# ---------------------------------------------------------------- model input


# SAM2's own transform against ours: both in grey levels (0..255) of the tensor SAM2's encoder gets.
# Ours runs the same torch resampling on uint8, so it may differ by rounding only: once after
# each of the two resize passes, with torch's fixed-point weights on top. OpenCV's area and
# linear resize (what this replaced) differ by up to 177 grey levels on these patches.
GREY_TOLERANCE = 1.5  # the most any value may differ
MEAN_TOLERANCE = 0.4  # the mean difference (uniform rounding errors average about 0.3)


@functools.cache
def _sam2_transforms() -> SAM2Transforms:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # sam2 builds it with the deprecated torch.jit.script
        return SAM2Transforms(resolution=1024, mask_threshold=0.0)


def _encoder_input(image: np.ndarray) -> torch.Tensor:
    """What `SAM2ImagePredictor.set_image` hands the encoder for `image`, in grey levels."""
    transforms = _sam2_transforms()
    std, mean = torch.tensor(transforms.std)[:, None, None], torch.tensor(transforms.mean)[:, None, None]
    return (transforms(image) * std + mean) * 255


@pytest.mark.parametrize("shape", [(1024, 1024, 3), (600, 800, 3), (2048, 1500, 3), (3000, 700, 3), (37, 2000, 3)])
def test_the_model_input_is_what_sam2s_own_transform_makes_of_the_patch(shape):
    rng = np.random.default_rng(0)
    patch = rng.integers(0, 256, shape, dtype=np.uint8)  # noise: where resampling filters differ most
    image = to_model_input(patch, 1024)
    assert image.shape == (1024, 1024, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
    difference = (_encoder_input(image) - _encoder_input(patch)).abs()
    assert difference.max() <= GREY_TOLERANCE and difference.mean() <= MEAN_TOLERANCE, (
        f"{shape}: max {difference.max():.3f}, mean {difference.mean():.3f} grey levels"
    )
    if shape[:2] == (1024, 1024):
        assert np.array_equal(image, patch) and difference.max() == 0


def test_a_big_read_only_view_is_resized_in_uint8_bands_never_copied_whole(monkeypatch):
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (4000, 6000, 3), dtype=np.uint8)
    frame.flags.writeable = False  # as the frame store's memory maps are
    patch = frame[100:3900, 50:5950]
    whole = torch.nn.functional.interpolate(
        torch.from_numpy(np.array(patch)).permute(2, 0, 1)[None],
        size=(1024, 1024),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    resize, inputs = torch.nn.functional.interpolate, []

    def spy(source, *args, **kwargs):
        inputs.append((source.dtype, source.numel()))
        return resize(source, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "interpolate", spy)
    image = to_model_input(patch, 1024)
    assert np.array_equal(image, whole[0].permute(1, 2, 0).numpy()), "bands give what one resize gives"
    assert all(dtype == torch.uint8 for dtype, _ in inputs), "never a float tensor"
    assert max(numel for _, numel in inputs) <= max(seg.INPUT_BAND_BYTES, 1024 * patch.shape[0] * 3) < patch.nbytes / 4


def test_a_view_of_a_frame_becomes_a_contiguous_input():
    frame = np.zeros((2000, 3000, 3), np.uint8)
    frame[100:1124, 200:1224] = 9
    for view in (frame[100:1124, 200:1224], frame[100:1124, 200:1224][::-1]):
        image = to_model_input(view, 1024)
        assert image.flags.c_contiguous and (image == 9).all()


# ---------------------------------------------------------------- embedding cache


def _features(mb: int, value: float = 0.0) -> dict:
    """Features shaped like SAM2's: a tensor and a list of tensors, `mb` MB in all."""
    quarter = mb * (1 << 20) // 4 // 4
    return {"image_embed": torch.full((2 * quarter,), value), "high_res_feats": [torch.zeros(quarter)] * 2}


def test_the_embedding_cache_counts_bytes_and_drops_the_least_recently_used():
    cache = EmbeddingCache(max_bytes=3 << 20)
    cache.put(("a",), _features(1, 1.0))
    cache.put(("b",), _features(1, 2.0))
    assert cache.bytes == 2 << 20
    assert cache.get(("a",))["image_embed"][0] == 1.0  # a is now the most recent
    cache.put(("c",), _features(2, 3.0))  # 4 MB > 3 MB: b, the least recent, goes
    assert cache.get(("b",)) is None
    assert cache.get(("a",)) is not None and cache.get(("c",)) is not None
    assert cache.bytes == 3 << 20
    assert (cache.hits, cache.misses) == (3, 1)


def test_features_larger_than_the_whole_cache_are_not_kept():
    cache = EmbeddingCache(max_bytes=1 << 20)
    cache.put(("big",), _features(2))
    assert cache.get(("big",)) is None and cache.bytes == 0


def test_clear_empties_the_embedding_cache():
    cache = EmbeddingCache(max_bytes=4 << 20)
    cache.put(("a",), _features(1))
    cache.clear()
    assert cache.get(("a",)) is None and cache.bytes == 0


def test_the_embedding_cache_lists_its_keys_and_replaces_a_key_put_twice():
    cache = EmbeddingCache(max_bytes=4 << 20)
    cache.put(("a",), _features(1))
    cache.put(("b",), _features(1))
    cache.put(("a",), _features(1, 5.0))
    assert cache.keys() == [("b",), ("a",)] and cache.bytes == 2 << 20
    assert cache.get(("a",), count=False)["image_embed"][0] == 5.0 and (cache.hits, cache.misses) == (0, 0)


# ---------------------------------------------------------------- multimask output


@pytest.mark.parametrize(
    "points, box, expected",
    [
        (1, False, True),  # a single key point is ambiguous: three candidates, the best score wins
        (2, False, False),  # several points: one mask
        (0, True, False),  # a rectangle: one mask
        (1, True, False),  # a rectangle and a point: one mask
    ],
)
def test_multimask_output_follows_sam2s_guidance(points, box, expected):
    prompt = PatchPrompt(
        np.full((points, 2), 10.0), np.ones(points, np.int64), np.array([0.0, 0.0, 50.0, 50.0]) if box else None
    )
    assert multimask(prompt) is expected


# ---------------------------------------------------------------- the real SAM2 (slow)


def _scene(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    patch = cv2.resize(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    cv2.circle(patch, (512, 512), 150, (240, 240, 240), -1)
    return patch


POINT = PatchPrompt(np.array([[512.0, 512.0]]), np.array([1]), None)
BOX = PatchPrompt(np.zeros((0, 2)), np.zeros(0, np.int64), np.array([350.0, 350.0, 670.0, 670.0]))
TWO_POINTS = PatchPrompt(np.array([[512.0, 512.0], [800.0, 300.0]]), np.array([1, 0]), None)


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=[c.split("/")[-1] for c in CONFIGS])
def test_every_hiera_config_builds_and_segments(config):
    model = Segmenter(config, None, "cpu", 64 << 20)
    assert model.input_size == 1024 and model.untrained and model.name.endswith(":untrained")
    first = model.predict(_scene(1), ("scene",), POINT)
    assert first.encoded and first.low_res_logits.shape == (256, 256)
    assert first.low_res_logits.dtype == np.float32 and np.isfinite(first.low_res_logits).all()
    assert np.isfinite(first.score)
    again = model.predict(_scene(1), ("scene",), BOX)
    assert not again.encoded and model.encoder_runs == 1
    del model
    gc.collect()


@pytest.fixture(scope="module")
def tiny():
    return Segmenter(TINY, None, "cpu", 256 << 20)


@pytest.mark.slow
def test_a_cached_embedding_gives_exactly_what_the_encoder_gave(tiny):
    """Clicks on A, then B, then A again: the third answer is the first, not one on B's features."""
    a1 = tiny.predict(_scene(1), ("a",), POINT)
    b = tiny.predict(_scene(2), ("b",), POINT)
    a2 = tiny.predict(_scene(1), ("a",), POINT)
    assert a1.encoded and b.encoded and not a2.encoded
    assert np.array_equal(a1.low_res_logits, a2.low_res_logits) and a1.score == a2.score
    assert not np.array_equal(a1.low_res_logits, b.low_res_logits)


@pytest.mark.slow
def test_untrained_weights_are_the_same_in_every_process(tiny):
    """Workers built from one seed answer alike, as workers loading one checkpoint do."""
    other = Segmenter(TINY, None, "cpu", 64 << 20)
    assert np.array_equal(
        other.predict(_scene(4), ("d",), POINT).low_res_logits, tiny.predict(_scene(4), ("d",), POINT).low_res_logits
    )


@pytest.mark.slow
def test_a_checkpoint_file_is_loaded(tiny, tmp_path):
    """A checkpoint in the format Meta publishes ({"model": state_dict}) round-trips the weights."""
    donor = Segmenter(TINY, None, "cpu", 64 << 20)
    with torch.no_grad():
        for parameter in donor.predictor.model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    path = tmp_path / "weights.pt"
    torch.save({"model": donor.predictor.model.state_dict()}, path)
    loaded = Segmenter(TINY, str(path), "cpu", 64 << 20)
    assert not loaded.untrained and loaded.name == f"sam2.1_hiera_t@{loaded.identity.label()}"
    got = loaded.predict(_scene(3), ("c",), BOX).low_res_logits
    assert np.allclose(got, donor.predict(_scene(3), ("c",), BOX).low_res_logits, atol=1e-4)
    assert not np.allclose(got, tiny.predict(_scene(3), ("c",), BOX).low_res_logits, atol=1e-2)


@pytest.mark.slow
def test_an_unknown_config_is_a_start_up_error_naming_it():
    with pytest.raises(ConfigError, match="MODEL_CONFIG=configs/sam2.1/sam2.1_hiera_xl.yaml"):
        Segmenter("configs/sam2.1/sam2.1_hiera_xl.yaml", None, "cpu", 1 << 20)


@pytest.mark.slow
@pytest.mark.parametrize(
    "prompt, candidates", [(POINT, 3), (BOX, 1), (TWO_POINTS, 1)], ids=["point", "box", "two-points"]
)
def test_sam2_is_asked_for_three_candidates_only_for_a_single_point(tiny, monkeypatch, prompt, candidates):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    seen = []
    real = SAM2ImagePredictor._predict

    def spy(self, *args, **kwargs):
        masks, scores, low_res = real(self, *args, **kwargs)
        seen.append(scores.shape[-1])
        return masks, scores, low_res

    monkeypatch.setattr(SAM2ImagePredictor, "_predict", spy)
    output = tiny.predict(_scene(5), ("e",), prompt)
    assert seen == [candidates]
    assert output.low_res_logits.shape == (256, 256)


@pytest.mark.slow
def test_a_cached_click_never_waits_for_another_requests_encoder_run(tiny, monkeypatch):
    """While one request's encoder run is held half-way, a click on a cached embedding is answered
    (with exactly its serial answer), and another encoder run waits for the first to end."""
    cached = tiny.predict(_scene(6), ("f",), POINT)
    encoding, release = threading.Event(), threading.Event()

    def held(patch, size):  # the encoder run's first step, under the encoder lock
        encoding.set()
        assert release.wait(120)
        return to_model_input(patch, size)

    monkeypatch.setattr(seg, "to_model_input", held)
    answers = {}
    first = threading.Thread(target=lambda: answers.setdefault("g", tiny.predict(_scene(7), ("g",), BOX)))
    first.start()
    try:
        assert encoding.wait(60), "the encoder run did not start"
        encoding.clear()
        again = tiny.predict(_scene(6), ("f",), POINT)  # would deadlock behind a shared lock
        assert not again.encoded and np.array_equal(again.low_res_logits, cached.low_res_logits)
        second = threading.Thread(target=lambda: answers.setdefault("h", tiny.predict(_scene(8), ("h",), BOX)))
        second.start()
        assert not encoding.wait(1), "a second encoder run started beside the first"
    finally:
        release.set()
    first.join(120)
    second.join(120)
    assert answers["g"].encoded and answers["h"].encoded
    monkeypatch.undo()
    assert np.array_equal(answers["g"].low_res_logits, Segmenter.predict(tiny, _scene(7), ("g",), BOX).low_res_logits)


@pytest.mark.slow
@pytest.mark.parametrize("prompt", [POINT, BOX, TWO_POINTS], ids=["point", "box", "two-points"])
def test_prompts_reach_sam2_where_its_own_predictor_puts_them(tiny, prompt):
    """Our fractions of the input give the logits SAM2's predictor gives for pixel-index coordinates
    of the 1024x1024 input on an image of that size (its documented use), on a non-square patch
    (a prompt may reach past the patch: only the mapping is compared)."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    patch = cv2.resize(_scene(9), (700, 500), interpolation=cv2.INTER_AREA)
    ours = tiny.predict(patch, ("i",), prompt)
    reference = SAM2ImagePredictor(tiny.predictor.model)
    reference.set_image(to_model_input(patch, 1024))
    to_input = np.array([1024 / 700, 1024 / 500])
    points = prompt.points * to_input - 0.5 if len(prompt.points) else None
    box = (prompt.box.reshape(2, 2) * to_input - 0.5).reshape(4) if prompt.box is not None else None
    with torch.inference_mode():
        _, scores, logits = reference.predict(
            point_coords=points,
            point_labels=prompt.labels if len(prompt.points) else None,
            box=box,
            multimask_output=multimask(prompt),
            return_logits=True,
        )
    best = int(np.argmax(scores))
    assert np.allclose(ours.low_res_logits, logits[best], atol=1e-4) and ours.score == pytest.approx(
        float(scores[best])
    )


def test_identity_names_config_weights_runtime_and_precision(tiny, tmp_path):
    """Features key on the model's identity: weights by content, so a renamed file is the same model
    and a changed one is another."""
    model = tiny
    assert model.identity.weights == "untrained-seed0"
    assert (model.identity.runtime, model.identity.precision) == (f"torch-{torch.__version__.split('+')[0]}", "f32")
    assert model.name == f"sam2.1_hiera_t@{model.identity.label()}:untrained"
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    first.write_bytes(b"weights")
    second.write_bytes(b"weights")
    assert weights_digest(first) == weights_digest(second)
    second.write_bytes(b"weights!")
    assert weights_digest(first) != weights_digest(second)
    base = ModelIdentity("c.yaml", weights_digest(first))
    others = [
        ModelIdentity("d.yaml", base.weights),
        ModelIdentity("c.yaml", weights_digest(second)),
        ModelIdentity("c.yaml", base.weights, runtime="openvino"),
        ModelIdentity("c.yaml", base.weights, precision="bf16"),
    ]
    assert len({base.digest(), *(o.digest() for o in others)}) == 5
    assert ModelIdentity("c.yaml", weights_digest(first)).digest() == base.digest()
