"""WORKERS > 1 on a CUDA device is logged as a warning at start (issue 19, item 2): each worker
loads its own SAM2 and embedding cache on the GPU, and a task's clicks spread over the workers
read the embedding store (or run the encoder again where it is off)."""

from __future__ import annotations

from sam2plus.startup import workers_warning


def test_more_than_one_worker_on_cuda_is_a_warning_naming_the_cost_and_the_remedy():
    for device in ("cuda", "cuda:1"):
        warning = workers_warning(2, device)
        assert warning.startswith("WORKERS=2 on a CUDA device")
        assert "GPU" in warning and "embedding store" in warning and "WORKERS=1 with THREADS" in warning


def test_one_worker_or_a_cpu_gives_no_warning():
    assert workers_warning(1, "cuda") is None
    assert workers_warning(4, "cpu") is None


def test_auto_warns_only_when_torch_sees_a_gpu(monkeypatch):
    import sam2plus.startup as startup

    monkeypatch.setattr(startup, "_cuda_devices", lambda: 0)
    assert workers_warning(2, "auto") is None
    monkeypatch.setattr(startup, "_cuda_devices", lambda: 1)
    assert workers_warning(2, "auto").startswith("WORKERS=2")
