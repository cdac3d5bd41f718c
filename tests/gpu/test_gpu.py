"""The CUDA path (marked `gpu`): what only a machine with an NVIDIA GPU can show.

Deselected everywhere by pyproject.toml's `-m "not gpu"`; `scripts/gpu-check.sh` runs them with
`-m gpu` on a CUDA machine, where a missing GPU fails them (they are never skipped). Untrained
hiera-t weights: masks are meaningless, the tests check devices, dtypes, memory and serving.
"""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest
import requests
import torch

from sam2plus.config import ServerConfig
from sam2plus.segmenter import PatchPrompt, Segmenter, resolve_device
from tests.support.prometheus import samples
from tests.support.scenes import DiscScene, label_config, rect_context
from tests.support.servers import gunicorn_server, static_server

pytestmark = pytest.mark.gpu

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter(CONFIG, None, "cuda", 1 << 30)


def patch(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)


def test_device_resolution_picks_cuda(monkeypatch):
    assert torch.cuda.is_available(), "a gpu test needs CUDA: run it on a machine with an NVIDIA GPU"
    assert resolve_device("auto") == "cuda" and resolve_device("cuda") == "cuda"
    monkeypatch.setenv("DEVICE", "auto")
    assert resolve_device(ServerConfig.from_env().device) == "cuda"


def test_the_model_runs_under_bf16_autocast_on_cuda(segmenter):
    dtypes = []
    first_conv = next(m for m in segmenter.predictor.model.image_encoder.modules() if isinstance(m, torch.nn.Conv2d))
    hook = first_conv.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    try:
        segmenter.embed(patch(1), ("bf16",))
    finally:
        hook.remove()
    assert dtypes == [torch.bfloat16]
    assert next(segmenter.predictor.model.parameters()).device.type == "cuda"
    if torch.cuda.get_device_properties(0).major >= 8:
        assert torch.backends.cuda.matmul.allow_tf32
    prompt = PatchPrompt(np.zeros((0, 2)), np.zeros(0, int), np.array([100, 100, 400, 400.0]))
    answer = segmenter.predict(patch(1), ("bf16",), prompt)
    assert answer.low_res_logits.dtype == np.float32 and answer.low_res_logits.shape == (256, 256)


def test_embedding_cache_bytes_are_gpu_memory(segmenter):
    segmenter.cache.clear()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for seed in range(3):
        segmenter.embed(patch(10 + seed), ("cache", seed))
    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated() - before
    features = [segmenter.cache.get(("cache", seed), count=False) for seed in range(3)]
    tensors = [t for f in features for v in f.values() for t in ([v] if isinstance(v, torch.Tensor) else v)]
    assert {t.device.type for t in tensors} == {"cuda"}
    assert segmenter.cache.bytes > 0
    print(f"\nembedding cache: {segmenter.cache.bytes / 2**20:.1f} MiB counted, {held / 2**20:.1f} MiB more on the GPU")
    assert 0.9 * segmenter.cache.bytes <= held <= 1.5 * segmenter.cache.bytes + (64 << 20)


SCENE = DiscScene(2400, 1800, 1200, 900, 200)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    (root / "images").mkdir()
    for i in range(4):
        DiscScene(2400, 1800, 600 + 300 * i, 900, 200).write(root / "images" / f"scene{i}.jpg")
    with static_server(root / "images") as host:
        env = {"DEVICE": "cuda", "CACHE_DIR": str(root / "cache"), "MODEL_DIR": str(root / "m"), "IMAGE_HOSTS": host}
        with gunicorn_server(env, workers=2, threads=4, log_dir=root) as server:
            yield server, host


def click(url: str, image: str) -> requests.Response:
    body = {
        "tasks": [{"id": 1, "data": {"image": image}}],
        "project": "1.1795599678",
        "label_config": label_config("BrushLabels"),
        "params": {"context": rect_context(SCENE.box(), SCENE.width, SCENE.height)},
    }
    return requests.post(f"{url}/predict", json=body, timeout=120)


def test_a_click_is_served_by_gunicorn_on_cuda(two_workers):
    server, host = two_workers
    answer = click(server.url, f"http://{host}/scene0.jpg")
    assert answer.status_code == 200, answer.text
    scraped = samples(requests.get(f"{server.url}/metrics", timeout=10).text)
    devices = {dict(labels)["device"] for name, labels in scraped if name == "sam2plus_model_info"}
    assert devices == {"cuda"}


def test_two_workers_share_one_gpu(two_workers):
    server, host = two_workers
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: click(server.url, f"http://{host}/scene{i % 4}.jpg"), range(16)))
    assert [a.status_code for a in answers] == [200] * 16
    scraped = samples(requests.get(f"{server.url}/metrics", timeout=10).text)
    gpu = {
        dict(labels)["pid"]: value
        for (name, labels), value in scraped.items()
        if name == "sam2plus_worker_gpu_allocated_bytes"
    }
    print(f"\nGPU memory per worker: { {pid: f'{v / 2**20:.0f} MiB' for pid, v in gpu.items()} }")
    assert set(gpu) == {str(pid) for pid in server.workers()} and len(gpu) == 2
    assert all(value > 50 * 2**20 for value in gpu.values()), "each worker holds its own model on the GPU"
