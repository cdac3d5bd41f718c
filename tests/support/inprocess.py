"""The backend in-process: SAM2Plus around the `ColorRegionSegmenter` test double behind Flask's test
client, with one drawn disc in its cache, and the bodies Label Studio sends it."""

from __future__ import annotations

from pathlib import Path

from model import SAM2Plus
from sam2plus.config import ServerConfig
from sam2plus.server import create_app
from tests.support.geometry_segmenter import ColorRegionSegmenter
from tests.support.scenes import DiscScene, label_config, rect_context

SCENE = DiscScene(1600, 1200, 700, 500, 120)
PROJECT = "7.1795599678"


def make_backend(tmp_path: Path, segmenter=None, **settings):
    """The app's test client around SAM2Plus with `settings` (ServerConfig fields), and its cache
    folder holding the scene as `scene.jpg`."""
    config = ServerConfig(cache_dir=str(tmp_path / "cache"), model_dir=str(tmp_path / "models"), **settings)
    (tmp_path / "cache").mkdir(exist_ok=True)
    SCENE.write(tmp_path / "cache" / "scene.jpg")
    model = SAM2Plus(config, segmenter=segmenter or ColorRegionSegmenter())
    return create_app(model).test_client(), tmp_path / "cache"


def predict_body(fmt="BrushLabels", context=None, image="scene.jpg", **extra) -> dict:
    """A /predict body as Label Studio sends it for a click (a rectangle around the disc by default)."""
    return {
        "tasks": [{"id": 1, "data": {"image": image}}],
        "project": PROJECT,
        "label_config": label_config(fmt),
        "params": {
            "login": None,
            "password": None,
            "context": context or rect_context(SCENE.box(), SCENE.width, SCENE.height),
        },
        **extra,
    }
