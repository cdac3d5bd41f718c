"""Shared fixtures: an in-process pipeline around the geometry test double."""

from __future__ import annotations

import pytest

from sam2plus.fetch import ImageFetcher
from sam2plus.images import FrameCache
from sam2plus.pipeline import Pipeline
from tests.support.geometry_segmenter import ColorRegionSegmenter


def make_pipeline(cache_dir, segmenter=None) -> Pipeline:
    return Pipeline(segmenter or ColorRegionSegmenter(), ImageFetcher(cache_dir), FrameCache(2 << 30),
                    max_pixels=400_000_000, cache_dir=cache_dir)


@pytest.fixture
def geometry_pipeline(tmp_path):
    return make_pipeline(tmp_path)
