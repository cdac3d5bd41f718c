"""End to end: pre-annotation through a real Label Studio. The Data Manager's *Retrieve
predictions* on three tasks (the geometry test double behind the product's app: the scene's discs
are the known answer), and `python -m sam2plus.annotate_project` against SAM2Plus under gunicorn
(real SAM2, hiera-t, UNTRAINED: its masks mean nothing, so what is checked there is the plumbing:
one stored prediction per task of SAM2Plus's model version, labelled, and resuming).
"""

from __future__ import annotations

import cv2
import pytest

from sam2plus import annotate_project
from tests.browser.backends import geometry_backend
from tests.e2e.ls import label_config
from tests.e2e.stack import IMAGE_SIZE
from tests.e2e.test_label_studio import LABEL, connect
from tests.regular.test_automask import DISCS, PATCH, matches, write_scene
from tests.support.scenes import brush_mask as scene_brush_mask

pytestmark = pytest.mark.slow

GEOMETRY_PARAMS = {
    "subpatching": {"patch_size": PATCH},
    "return_format": {"type": "BrushLabels"},
    "auto_annotation": {"label": LABEL, "points_per_side": 8, "time_budget": 90},
}

WIDTH, HEIGHT = IMAGE_SIZE
PARAMS = {
    "return_format": {"type": "BrushLabels"},
    "auto_annotation": {
        "label": LABEL,
        "points_per_side": 6,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
        "time_budget": 80,
    },
}


def test_retrieve_predictions_on_three_tasks_stores_their_automatic_masks(label_studio, tmp_path):
    """The Data Manager's Retrieve predictions on three tasks: one /predict from Label Studio, each
    task's prediction stored and returned by its API, holding the scene's discs. The backend is the
    product's app with the geometry TEST DOUBLE (tests/browser/backends.py), so that the discs are a
    known answer; the test below runs the real SAM2."""
    api = label_studio.api()
    image = tmp_path / "discs.jpg"
    cv2.imwrite(str(image), cv2.imread(write_scene(tmp_path / "discs.png")), [cv2.IMWRITE_JPEG_QUALITY, 95])
    project = api.create_project(label_config("KeyPointLabels", "BrushLabels"))
    for _ in range(3):
        with open(image, "rb") as file:
            api.ok("POST", f"/api/projects/{project}/import", files={"file": (image.name, file, "image/jpeg")})
    tasks = api.tasks(project)
    assert len(tasks) == 3
    with geometry_backend(tmp_path / "backend", label_studio.url, label_studio.token) as backend:
        added = api.add_ml_backend(project, backend.url, GEOMETRY_PARAMS)
        assert added.status_code == 201, added.text
        ml = api.ml_backend(added.json()["id"])
        retrieve = f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}"
        api.ok("POST", retrieve, json={"selectedItems": {"all": True, "excluded": []}})
        [request] = [r for r in backend.recorder.received() if r.path == "/predict"]
        assert len(request.body["tasks"]) == 3 and request.context is None, "one request for the three tasks"

        for task in tasks:
            [prediction] = api.ok("GET", f"/api/predictions?task={task['id']}")
            assert prediction["model_version"] == ml["model_version"], "complete within the time budget"
            masks = []
            for region in prediction["result"]:
                assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == [LABEL]
                masks.append(scene_brush_mask(region))
            per_disc = matches(masks)
            assert [len(m) for m in per_disc] == [1] * len(DISCS) and min(m[0] for m in per_disc) >= 0.95, per_disc

        api.ok("POST", retrieve, json={"selectedItems": {"all": True, "excluded": []}})
        assert len([r for r in backend.recorder.received() if r.path == "/predict"]) == 1, "nothing is asked again"


def test_the_project_command_stores_every_tasks_prediction_and_resumes_where_it_stopped(
    label_studio, backend, image_path, capsys
):
    api = label_studio.api()
    project = api.create_project(label_config("KeyPointLabels", "BrushLabels"))
    for _ in range(3):
        with open(image_path, "rb") as file:
            api.ok("POST", f"/api/projects/{project}/import", files={"file": (image_path.name, file, "image/jpeg")})
    ml = connect(api, project, backend, PARAMS)
    args = ["--label-studio", label_studio.url, "--api-key", label_studio.token, "--project", str(project)]
    args += ["--backend", backend]

    assert annotate_project.main([*args, "--limit", "1"]) == 0
    first = capsys.readouterr()
    assert "stored=1" in first.out and "1/1 tasks" in first.err, first
    assert annotate_project.main(args) == 0
    second = capsys.readouterr()
    assert "skipped=1" in second.out and "stored=2" in second.out and "2/2 tasks" in second.err, second

    for task in api.tasks(project):
        [prediction] = api.ok("GET", f"/api/predictions?task={task['id']}")
        assert prediction["model_version"] == ml["model_version"]
        assert all(region["value"]["brushlabels"] == [LABEL] for region in prediction["result"])
    assert annotate_project.main(args) == 0 and "skipped=3" in capsys.readouterr().out, "nothing left to do"
