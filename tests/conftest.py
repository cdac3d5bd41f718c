"""Shared fixtures, and the fast loop: a bare `python -m pytest` leaves out the slow tests.

Naming paths (`python -m pytest tests/bigimg`) or a marker expression (`-m slow`) runs
exactly what was asked for, slow tests included.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sam2plus.fetch import ImageFetcher
from sam2plus.framestore import FrameStore
from sam2plus.pipeline import Pipeline

# One Label Studio (stack.DEFAULT_VERSION) and one SAM2Plus under gunicorn for tests/browser: a
# session fixture is shared only by the tests below the conftest that defines it. tests/e2e/conftest.py
# overrides `label_studio` with one per supported version (`backend` then follows it).
from tests.e2e.stack import backend, image_path, label_studio  # noqa: F401
from tests.support.geometry_segmenter import ColorRegionSegmenter

DEFAULT_MARKEXPR = "not gpu"  # pyproject.toml's addopts: a bare run still leaves out the slow tests


def pytest_collection_modifyitems(config, items):
    if config.option.markexpr not in ("", DEFAULT_MARKEXPR) or config.args_source != pytest.Config.ArgsSource.TESTPATHS:
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def make_pipeline(cache_dir, segmenter=None) -> Pipeline:
    frames = FrameStore(Path(cache_dir) / "frames", 2 << 30)
    return Pipeline(
        segmenter or ColorRegionSegmenter(),
        ImageFetcher(cache_dir),
        frames,
        max_pixels=400_000_000,
        cache_dir=cache_dir,
    )


@pytest.fixture
def geometry_pipeline(tmp_path):
    return make_pipeline(tmp_path)
