"""End to end: a BitmaskLabels project in a real Label Studio, a click through its
interactive-annotating endpoint, and the answer stored as a prediction and read back over the API.

Only Label Studio versions with the Bitmask tags run it (stack.FEATURES "bitmask"). The PNG that
comes back is read as the editor reads it (alpha > 0, sam2plus.bitmask.decode_bitmask): it has the
image's size and holds exactly the pixels of the brush mask that the same click answers in a
BrushLabels project on the same backend (untrained weights: the mask means nothing, the pixels
are compared).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.e2e.ls import context, keypoint_region, label_config
from tests.e2e.stack import IMAGE_SIZE
from tests.e2e.test_label_studio import LABEL, brush_mask, check_common, connect, regions_of
from tests.support.regions import require_some
from tests.support.scenes import bitmask_mask

pytestmark = [pytest.mark.slow, pytest.mark.label_studio_feature("bitmask")]

WIDTH, HEIGHT = IMAGE_SIZE
PARAMS = {"subpatching": {"patch_size": 320}}
CLICKS = [(1060, 750), (700, 500), (360, 300)]


def project_with(api, backend, image_path, output: str) -> tuple[dict, dict]:
    project = api.create_project(label_config("KeyPointLabels", output))
    task = api.upload_image(project, image_path)
    ml = connect(api, project, backend, {**PARAMS, "return_format": {"type": output}})
    return task, ml


def test_a_bitmask_prediction_is_stored_and_read_back_with_the_brush_pixels_of_the_same_click(
    label_studio, backend, image_path
):
    api = label_studio.api()
    bitmask_task, bitmask_ml = project_with(api, backend, image_path, "BitmaskLabels")
    brush_task, brush_ml = project_with(api, backend, image_path, "BrushLabels")
    per_click = []
    for x, y in CLICKS:
        click = context(keypoint_region(x, y, WIDTH, HEIGHT, labels=[LABEL]))
        bitmasks = regions_of(api.interactive(bitmask_ml["id"], bitmask_task["id"], click))
        brushes = regions_of(api.interactive(brush_ml["id"], brush_task["id"], click))
        assert len(bitmasks) == len(brushes) <= 1
        per_click.append(bitmasks)
        if not bitmasks:
            continue
        (region,) = bitmasks
        value = check_common(region, "bitmasklabels")
        assert set(value) == {"imageDataURL", "bitmasklabels"} and value["bitmasklabels"] == [LABEL], value.keys()
        assert value["imageDataURL"].startswith("data:image/png;base64,")

        stored = api.ok(
            "POST",
            "/api/predictions",
            json={"task": bitmask_task["id"], "result": bitmasks, "score": region["score"], "model_version": "e2e"},
        )
        (read,) = api.ok("GET", f"/api/predictions/{stored['id']}")["result"]
        assert read["value"] == value and read["type"] == "bitmasklabels", "Label Studio keeps the value as sent"
        pixels = bitmask_mask(read)
        assert pixels.any() and np.array_equal(pixels, brush_mask(brushes[0])), f"click at {(x, y)}"
    require_some(per_click)
