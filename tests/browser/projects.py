"""Projects and scenes for the browser tests: drawn discs whose masks are known exactly."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tests.e2e.ls import LabelStudioAPI
from tests.support.scenes import BACKGROUND, DiscScene


def new_project(
    api: LabelStudioAPI, backend_url: str, label_config: str, image: Path | None = None, extra_params=None, **settings
) -> tuple[int, int | None]:
    """A project with `label_config` (and project `settings`), the image uploaded as its task (if
    given) and the backend connected with interactive preannotations on; returns (project, task)."""
    project = api.create_project(label_config)
    if settings:
        api.ok("PATCH", f"/api/projects/{project}", json=settings)
    task = api.upload_image(project, image)["id"] if image else None
    answer = api.add_ml_backend(project, backend_url, extra_params, is_interactive=True)
    assert answer.status_code == 201, answer.text
    assert answer.json()["is_interactive"] and answer.json()["readable_state"] == "Connected", answer.text
    return project, task


def write_discs(path: Path, *discs: DiscScene) -> Path:
    """One image holding every disc (all of the same size), each drawn as DiscScene draws it alone."""
    canvas = None
    for disc in discs:
        layer = cv2.imread(str(disc.write(path.with_suffix(".layer.png"))))
        canvas = (
            layer if canvas is None else np.where(np.any(layer != BACKGROUND[::-1], axis=2)[..., None], layer, canvas)
        )
    path.with_suffix(".layer.png").unlink()
    cv2.imwrite(str(path), canvas, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


def outline_distance(points_px: np.ndarray, disc: DiscScene) -> np.ndarray:
    """How far each point (N x 2, image pixels) lies from the disc's outline."""
    return np.abs(np.hypot(points_px[:, 0] - disc.cx, points_px[:, 1] - disc.cy) - disc.radius)


def pixels(region: dict) -> np.ndarray:
    """A key point's (x, y) or a rectangle's (x0, y0, x1, y1) in image pixels, from Label Studio's percent."""
    value, w, h = region["value"], region["original_width"], region["original_height"]
    if "width" in value and "height" in value:
        return (
            np.array(
                [value["x"] * w, value["y"] * h, (value["x"] + value["width"]) * w, (value["y"] + value["height"]) * h]
            )
            / 100
        )
    return np.array([value["x"] * w, value["y"] * h]) / 100
