"""Label Studio's editor (headless Chromium) showing a BitmaskLabels answer of SAM2Plus.

The geometry TEST DOUBLE segments a drawn disc, so the right answer is known. The editor imports
the PNG of `imageDataURL` onto its own canvas of the image's natural size (BitmaskRegion); what it
then holds (read back with its own export, `getImageDataURL`) must be our PNG's pixels exactly (no
shift, flip or scaling) and the disc; the screenshot shows the region over the disc; Submit saves
it. Only Label Studio versions with the Bitmask tags have it (the browser suite runs 1.23.2).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.browser.editor import Shown
from tests.browser.projects import new_project
from tests.support.scenes import DiscScene, bitmask_mask, iou

pytestmark = pytest.mark.slow

LABEL = "Disc"
DISC = DiscScene(1200, 800, 430.0, 370.0, 130.0)
CONFIG = (
    '<View><Image name="image" value="$image" zoom="true" smoothing="false"/>'
    f'<KeyPointLabels name="prompt" toName="image" smart="true"><Label value="{LABEL}"/></KeyPointLabels>'
    f'<BitmaskLabels name="output" toName="image"><Label value="{LABEL}"/></BitmaskLabels></View>'
)
PARAMS = {"return_format": {"type": "BitmaskLabels"}}


def editor_pixels(editor) -> np.ndarray:
    """The bitmask region as the editor holds it after importing our PNG: its own PNG export."""
    url = editor.page.evaluate(
        "() => window.Htx.annotationStore.selected.regions.find(r => r.type === 'bitmaskregion').getImageDataURL()"
    )
    region = {"original_width": DISC.width, "original_height": DISC.height, "value": {"imageDataURL": url}}
    return bitmask_mask(region)


def test_a_click_gives_a_bitmask_region_the_editor_draws_over_the_disc_and_saves(
    api, geometry_backend, editor, tmp_path
):
    image = DISC.write(tmp_path / "disc.jpg")
    project, task = new_project(api, geometry_backend.url, CONFIG, image, PARAMS)
    editor.open(project, task, (DISC.width, DISC.height)).auto_annotation().auto_accept(True).smart_tool()
    editor.choose_label(LABEL)

    reply = editor.click(DISC.cx, DISC.cy)

    [answer] = reply["data"]["result"]
    assert answer["type"] == "bitmasklabels" and answer["value"]["bitmasklabels"] == [LABEL], answer["type"]
    ours = bitmask_mask(answer)
    truth = DISC.truth((0, 0, DISC.width, DISC.height))
    assert iou(ours, truth) >= 0.95
    editor.page.wait_for_function(
        "() => window.Htx.annotationStore.selected.regions.some(r => r.type === 'bitmaskregion' && r.bbox)",
        timeout=30_000,
    )
    assert editor.regions() == [Shown("bitmaskregion", LABEL, False)]
    shown = editor_pixels(editor)
    assert np.array_equal(shown, ours), f"the editor holds {shown.sum()} px, we sent {ours.sum()}"
    bbox = editor.page.evaluate(
        "() => window.Htx.annotationStore.selected.regions.find(r => r.type === 'bitmaskregion').bboxCoords"
    )
    width, height = DISC.width, DISC.height
    left, top = bbox["left"] * width / 100, bbox["top"] * height / 100
    right, bottom = bbox["right"] * width / 100, bbox["bottom"] * height / 100
    r = DISC.radius
    assert max(abs(left - (DISC.cx - r)), abs(top - (DISC.cy - r))) <= 3, bbox
    assert max(abs(right - (DISC.cx + r)), abs(bottom - (DISC.cy + r))) <= 3, bbox
    editor.shot("bitmask-region")

    editor.submit(task)
    [saved] = api.ok("GET", f"/api/tasks/{task}/annotations")[0]["result"]
    assert saved["type"] == "bitmasklabels" and saved["value"]["bitmasklabels"] == [LABEL]
    assert np.array_equal(bitmask_mask(saved), ours)
