"""sam2plus.embeddingstore: image features on disk, shared by processes, refused when not right.

The fast tests store SAM2-shaped features made of random numbers; the slow ones run the real
SAM2 (untrained hiera-t on the CPU) and check a click served from the store equals a fresh
encoder run, bit for bit.
"""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from sam2plus import embeddingstore
from sam2plus.boundedfolder import USAGE
from sam2plus.embeddingstore import EmbeddingStore
from sam2plus.identity import ModelIdentity

MODEL = "a" * 64  # a model identity's digest
OTHER_MODEL = "b" * 64
TINY = "configs/sam2.1/sam2.1_hiera_t.yaml"
KEY = ("0123abcd", (1024, 768), (0, 0, 1024, 1024), (0, 0, 0))
OTHER_KEY = ("0123abcd", (1024, 768), (512, 0, 512, 512), None)


def features(seed: int = 0, dtype=torch.float32, scale: int = 8) -> dict:
    """SAM2's features' structure, smaller by `scale` in each side."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "image_embed": torch.randn(1, 256, 64 // scale, 64 // scale, generator=gen).to(dtype),
        "high_res_feats": [
            torch.randn(1, 32, 256 // scale, 256 // scale, generator=gen).to(dtype),
            torch.randn(1, 64, 128 // scale, 128 // scale, generator=gen).to(dtype),
        ],
    }


def same(a: dict, b: dict) -> bool:
    return (
        a["image_embed"].dtype == b["image_embed"].dtype
        and torch.equal(a["image_embed"], b["image_embed"])
        and all(torch.equal(x, y) for x, y in zip(a["high_res_feats"], b["high_res_feats"], strict=True))
    )


def files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_features_come_back_exactly_from_another_instance(tmp_path, dtype):
    """Two stores on one folder stand for two processes; bf16 is what CUDA's autocast makes."""
    assert EmbeddingStore(tmp_path, 1 << 30, MODEL).put(KEY, features(1, dtype))
    other = EmbeddingStore(tmp_path, 1 << 30, MODEL)
    got = other.get(KEY)
    assert got is not None and same(got, features(1, dtype))
    assert other.get(OTHER_KEY) is None
    assert (other.hits, other.misses) == (1, 1)


def test_a_channels_last_array_comes_back_with_its_layout(tmp_path):
    """SAM2's image_embed is channels-last; the decoder's rounding depends on the layout."""
    made = features(1)
    made["image_embed"] = made["image_embed"].contiguous(memory_format=torch.channels_last)
    store = EmbeddingStore(tmp_path, 1 << 30, MODEL)
    store.put(KEY, made)
    got = store.get(KEY)["image_embed"]
    assert got.stride() == made["image_embed"].stride() and torch.equal(got, made["image_embed"])


def test_a_key_is_stored_once_and_found_by_its_image(tmp_path):
    store = EmbeddingStore(tmp_path, 1 << 30, MODEL)
    assert store.put(KEY, features(1)) and not store.put(KEY, features(2))
    assert same(store.get(KEY), features(1)), "written once: the first stays"
    store.put(OTHER_KEY, features(3))
    assert sorted(store.keys(KEY[0]), key=str) == sorted([KEY, OTHER_KEY], key=str)
    assert store.keys("ffff") == []


def test_an_images_windows_are_discarded_and_taken_out_of_the_total(tmp_path):
    """The `release` event drops a task's embeddings from the store too (model.py)."""
    store = EmbeddingStore(tmp_path, 1 << 30, MODEL)
    store.put(KEY, features(1))
    store.put(OTHER_KEY, features(2))
    other_image = ("ffff", *KEY[1:])
    store.put(other_image, features(3))
    assert store.discard(KEY[0]) == 2
    assert store.keys(KEY[0]) == [] and store.get(KEY) is None and store.get(other_image) is not None
    assert store.folder.usage()[1] == 1, "the running total counts the one file left"


def test_another_models_features_are_never_served(tmp_path):
    EmbeddingStore(tmp_path, 1 << 30, OTHER_MODEL).put(KEY, features(1))
    mine = EmbeddingStore(tmp_path, 1 << 30, MODEL)
    assert mine.get(KEY) is None and mine.keys(KEY[0]) == []
    assert mine.put(KEY, features(2)) and same(mine.get(KEY), features(2))
    assert same(EmbeddingStore(tmp_path, 1 << 30, OTHER_MODEL).get(KEY), features(1))


def test_features_of_one_encoder_runtime_or_precision_never_serve_another(tmp_path):
    """One model (config, weights) under each encoder a server may run (ENCODER_RUNTIME,
    ENCODER_PRECISION): torch f32 on a CPU, OpenVINO bf16 or f32, torch bf16 on CUDA, another
    OpenVINO release. Each reads back only what it stored itself, from one shared folder."""
    torch_f32 = ModelIdentity(TINY, "untrained-seed0", "torch-2.14.1", "f32")
    identities = [
        torch_f32,
        replace(torch_f32, runtime="openvino-2026.4.1", precision="bf16"),
        replace(torch_f32, runtime="openvino-2026.4.1"),
        replace(torch_f32, precision="bf16"),
        replace(torch_f32, runtime="openvino-2026.5.0", precision="bf16"),
    ]
    assert len({identity.digest() for identity in identities}) == len(identities)
    stores = [EmbeddingStore(tmp_path, 1 << 30, identity.digest()) for identity in identities]
    for seed, writer in enumerate(stores):
        assert writer.put(KEY, features(seed))
        for later, reader in zip(identities[seed + 1 :], stores[seed + 1 :], strict=True):
            assert reader.get(KEY) is None, f"{identities[seed].label()} features served to {later.label()}"
    for seed, reader in enumerate(stores):
        got = reader.get(KEY)
        assert got is not None and same(got, features(seed)), f"{identities[seed].label()} read another's"
    assert len(files(tmp_path)) == len(identities)


def test_a_foreign_file_under_my_name_is_refused_logged_once_and_removed(tmp_path, caplog):
    """Another model's file copied over this model's name (by hand, a botched sync)."""
    other = EmbeddingStore(tmp_path, 1 << 30, OTHER_MODEL)
    other.put(KEY, features(1))
    mine = EmbeddingStore(tmp_path, 1 << 30, MODEL)
    os.replace(other.path(KEY), mine.path(KEY))
    other.put(OTHER_KEY, features(2))
    os.replace(other.path(OTHER_KEY), mine.path(OTHER_KEY))
    with caplog.at_level(logging.WARNING, "sam2plus.embeddingstore"):
        assert mine.get(KEY) is None and mine.get(OTHER_KEY) is None
    assert len(caplog.records) == 1 and "another model" in caplog.text
    assert not mine.path(KEY).exists(), "removed, so that the fresh run is stored"
    assert mine.keys(KEY[0]) == []


def damage(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) - 100]
    elif how == "a flipped bit":
        data[-1000] ^= 0x10
    elif how == "overlong":
        data += b"\0" * 10
    elif how == "a damaged header":
        data[20:30] = b"}}}}}}}}}}"
    elif how == "not ours":
        data = bytearray(b"\x89PNG" + bytes(5000))
    elif how == "empty":
        data = bytearray()
    elif how == "a header out of bounds":
        data[8:12] = (1 << 30).to_bytes(4, "little")
    path.write_bytes(bytes(data))


DAMAGES = ["truncated", "a flipped bit", "overlong", "a damaged header", "not ours", "empty", "a header out of bounds"]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_file_is_a_miss_then_replaced(tmp_path, how, caplog):
    store = EmbeddingStore(tmp_path, 1 << 30, MODEL)
    store.put(KEY, features(1))
    damage(store.path(KEY), how)
    with caplog.at_level(logging.WARNING, "sam2plus.embeddingstore"):
        assert store.get(KEY) is None
        assert store.get(KEY) is None
    assert len(caplog.records) <= 1 and "refused" in caplog.text or how == "empty" and not caplog.records
    assert store.put(KEY, features(2)) and same(store.get(KEY), features(2))


def test_a_header_naming_arrays_outside_the_file_is_refused(tmp_path):
    """A header that passes the checksum (it covers the arrays only) but points past them."""
    store = EmbeddingStore(tmp_path, 1 << 30, MODEL)
    store.put(KEY, features(1))
    path = store.path(KEY)
    data = path.read_bytes()
    length = int.from_bytes(data[8:12], "little")
    header = data[12 : 12 + length].replace(b'"offset": 0', b'"offset": 999999999', 1)
    path.write_bytes(data[:8] + len(header).to_bytes(4, "little") + header + data[12 + length :])
    assert store.get(KEY) is None


def test_a_header_claiming_a_huge_payload_allocates_nothing(tmp_path):
    """A file of a few KB whose header says 1 TB: refused on its size, before any allocation."""
    store = EmbeddingStore(tmp_path, 1 << 30, MODEL)
    store.put(KEY, features(1))
    path = store.path(KEY)
    data = path.read_bytes()
    length = int.from_bytes(data[8:12], "little")
    header = json.loads(data[12 : 12 + length])
    header["bytes"] = 1 << 40
    text = json.dumps(header).encode()
    path.write_bytes(data[:8] + len(text).to_bytes(4, "little") + text + data[12 + length :][:4096])
    assert store.get(KEY) is None and not path.exists()


def test_an_unreadable_file_is_a_miss(tmp_path, caplog):
    """A folder where the file should be: open() fails (root reads any file, so no chmod here)."""
    store = EmbeddingStore(tmp_path, 1 << 30, MODEL)
    store.path(KEY).mkdir(parents=True)
    with caplog.at_level(logging.WARNING, "sam2plus.embeddingstore"):
        assert store.get(KEY) is None and store.get(KEY) is None
        assert not store.put(KEY, features(1))  # the name is taken: nothing to write
    messages = [r.getMessage().strip('"').split(" (")[0] for r in caplog.records]  # logtext quotes it
    assert messages == [f"embedding store: cannot read {store.path(KEY)}"]


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS], ids=["a full disk", "a read-only folder"])
def test_a_store_that_cannot_write_logs_once_and_leaves_nothing(tmp_path, monkeypatch, error, caplog):
    """A STAND-IN for the disk: writes fail as a full disk or a read-only mount makes them fail
    (this test runs as root, whom file modes do not stop)."""
    store = EmbeddingStore(tmp_path / "store", 1 << 30, MODEL)
    real = embeddingstore.part_file

    def failing(directory, suffix=""):
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(embeddingstore, "part_file", failing)
    with caplog.at_level(logging.WARNING, "sam2plus.embeddingstore"):
        assert not store.put(KEY, features(1)) and not store.put(OTHER_KEY, features(2))
    assert len(caplog.records) == 1 and os.strerror(error) in caplog.text
    assert store.get(KEY) is None
    monkeypatch.setattr(embeddingstore, "part_file", real)
    assert store.put(KEY, features(1)) and same(store.get(KEY), features(1))


def test_the_store_is_bounded_least_recently_used_first(tmp_path):
    probe = EmbeddingStore(tmp_path / "probe", 1 << 30, MODEL)
    probe.put(KEY, features(0))
    one = probe.folder.size()
    store = EmbeddingStore(tmp_path / "store", 3 * one + one // 2, MODEL)
    keys = [(f"{i:04x}", (64, 64), (0, 0, 64, 64), None) for i in range(5)]
    for i, key in enumerate(keys[:3]):
        store.put(key, features(i))
        os.utime(store.path(key), (1000 + i, 1000 + i))
    assert store.get(keys[0]) is not None  # now the most recent
    store.put(keys[3], features(3))
    assert store.get(keys[1]) is None and store.get(keys[0]) is not None
    assert store.folder.evictions == 1 and len(files(store.directory)) == 3
    assert store.folder.usage()[:2] == (3 * one, 3)


def test_features_bigger_than_the_store_are_not_stored(tmp_path):
    store = EmbeddingStore(tmp_path, 10_000, MODEL)
    assert not store.put(KEY, features(0)) and files(tmp_path) == []


def _put_many(folder, seed, barrier):
    barrier.wait()
    for _ in range(20):
        EmbeddingStore(folder, 1 << 30, MODEL).put(KEY, features(seed, scale=2))


def test_two_processes_storing_one_key_at_once_end_with_one_valid_file(tmp_path):
    """Two processes race to store the same window (different bytes, to tell who won)."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_put_many, args=(tmp_path, seed, barrier)) for seed in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert files(tmp_path) == [EmbeddingStore(tmp_path, 1 << 30, MODEL).path(KEY).name]
    got = EmbeddingStore(tmp_path, 1 << 30, MODEL).get(KEY)
    assert same(got, features(1, scale=2)) or same(got, features(2, scale=2))
    assert EmbeddingStore(tmp_path, 1 << 30, MODEL).folder.usage()[1] == 1


def test_nothing_is_written_outside_the_folder(tmp_path):
    folder = tmp_path / "deep" / "store"
    store = EmbeddingStore(folder, 1 << 30, MODEL)
    odd = ("../../../etc/passwd", (1, 1), (0, 0, 1, 1), None)  # a digest is hex, but never trusted
    store.put(odd, features(1))
    store.put(KEY, features(2))
    assert same(store.get(odd), features(1))
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert all(name.startswith("deep/store/") for name in written) and f"deep/store/{USAGE}" in written
    assert len(files(folder)) == 2


# ---------------------------------------------------------------- the real SAM2


def _scene() -> np.ndarray:
    rng = np.random.default_rng(5)
    patch = rng.integers(0, 60, (700, 900, 3), dtype=np.uint8)
    patch[200:500, 300:650] = 220
    return patch


@pytest.mark.slow
def test_a_click_served_from_the_store_equals_a_fresh_encoder_run(tmp_path):
    """Two real segmenters on one folder: the second reads the first's features and runs no
    encoder; its logits are those of a fresh run, bit for bit; a third without a store agrees."""
    from sam2plus.segmenter import PatchPrompt, Segmenter

    prompt = PatchPrompt(np.array([[450.0, 350.0]]), np.array([1]), None)
    first = Segmenter(TINY, None, "cpu", 64 << 20)
    first.store = EmbeddingStore(tmp_path, 1 << 30, first.identity.digest())
    fresh = first.predict(_scene(), KEY, prompt)
    assert fresh.encoded and len(files(tmp_path)) == 1
    second = Segmenter(TINY, None, "cpu", 64 << 20)
    second.store = EmbeddingStore(tmp_path, 1 << 30, second.identity.digest())
    served = second.predict(_scene(), KEY, prompt)
    assert not served.encoded and second.encoder_runs == 0 and second.store.hits == 1
    assert np.array_equal(served.low_res_logits, fresh.low_res_logits) and served.score == fresh.score
    assert second.cached_keys(KEY[0]) == [KEY]
    damage(second.store.path(KEY), "a flipped bit")
    third = Segmenter(TINY, None, "cpu", 64 << 20)
    third.store = EmbeddingStore(tmp_path, 1 << 30, third.identity.digest())
    again = third.predict(_scene(), KEY, prompt)
    assert again.encoded and np.array_equal(again.low_res_logits, fresh.low_res_logits)
