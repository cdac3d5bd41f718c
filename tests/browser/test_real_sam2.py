"""The editor against SAM2Plus under gunicorn with the real SAM2 (hiera-t, UNTRAINED weights, CPU).

Untrained masks are meaningless, so this checks only the plumbing: the smart click reaches
the real model through Label Studio, the answer is a labelled brush region of the image's
size that the editor draws and accepts, and Submit saves it in a form label-studio-sdk
decodes. An untrained model may legitimately answer one prompt with nothing, so the
annotator clicks again elsewhere on the object until some prompt gives a region (at most
three prompts); never all empty.
"""

from __future__ import annotations

import pytest

from tests.browser.editor import Shown
from tests.browser.projects import new_project
from tests.e2e.ls import label_config
from tests.support.scenes import DiscScene, brush_mask

pytestmark = pytest.mark.slow

LABEL = "Disc"
DISC = DiscScene(1200, 800, 430.0, 370.0, 130.0)
CLICKS = [(DISC.cx, DISC.cy), (DISC.cx - 50, DISC.cy + 40), (DISC.cx + 60, DISC.cy - 30)]


def test_a_click_reaches_the_real_sam2_and_its_brush_region_is_saved(api, backend, editor, tmp_path):
    image = DISC.write(tmp_path / "disc.jpg")
    project, task = new_project(api, backend, label_config("KeyPointLabels", "BrushLabels", LABEL), image)
    editor.open(project, task, (DISC.width, DISC.height)).auto_annotation().auto_accept(True).smart_tool()

    returned = []
    for x, y in CLICKS:
        editor.choose_label(LABEL)
        reply = editor.click(x, y)
        assert "errors" not in reply, reply
        assert "untrained" in reply["data"]["model_version"], reply["data"]["model_version"]  # SAM2, not a double
        returned += reply["data"]["result"]
        if returned:
            break
    assert returned, "every prompt came back with zero regions; one empty answer is possible, all is not"
    for region in returned:
        assert (region["type"], region["from_name"], region["to_name"]) == ("brushlabels", "output", "image"), region
        assert region["value"]["brushlabels"] == [LABEL], region
        assert (region["original_width"], region["original_height"]) == (DISC.width, DISC.height), region
    assert editor.regions() == [Shown("brushregion", LABEL, False)] * len(returned)
    editor.shot("untrained-sam2-brush")

    editor.submit(task)
    [annotation] = api.ok("GET", f"/api/tasks/{task}/annotations")
    saved = annotation["result"]
    assert len(saved) == len(returned) and {r["type"] for r in saved} == {"brushlabels"}, saved
    for region in saved:
        mask = brush_mask(region)
        assert mask.shape == (DISC.height, DISC.width) and mask.any(), region["id"]
