"""End to end: opening a task in a real Label Studio (each version) warms the image up in SAM2Plus.

Label Studio's server calls the backend's /predict with a null context whenever a task is
served to an annotator (`GET /api/tasks/<id>` from the Data Manager, `GET /api/projects/<id>/next`
from the labeling stream) in a project that shows predictions from this backend, which is what
adding the backend sets up by default. SAM2Plus then fetches the image and decodes its frame
into the frame store (and, without subpatching, encodes the whole frame) in the background, so
the annotator's first click runs no decode (and no encoder without subpatching).

The backend is one of this module's own (real SAM2 hiera-t, untrained, CPU, under gunicorn),
so its cache folder and its counters (`/metrics?format=json`) belong to these tests.
"""

from __future__ import annotations

import hashlib
import time

import pytest
import requests

from tests.e2e.ls import context, label_config, rectangle_region
from tests.e2e.stack import IMAGE_SIZE, sam2plus_backend
from tests.e2e.test_label_studio import BOXES, LABEL, connect, regions_of

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = IMAGE_SIZE
WARM_UP_TIMEOUT = 180


@pytest.fixture(scope="module")
def api(label_studio):
    return label_studio.api()


@pytest.fixture(scope="module")
def own_backend(label_studio, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("warmup-backend")
    with sam2plus_backend(workdir, label_studio.url, label_studio.token) as url:
        yield url, workdir / "cache" / "frames"


def metrics(url: str) -> dict:
    answer = requests.get(f"{url}/metrics?format=json", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WARM_UP_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {WARM_UP_TIMEOUT} s of opening the task"
        time.sleep(0.5)


def project_with_backend(api, backend: str, image_path, extra_params) -> tuple[int, dict, dict]:
    project = api.create_project(label_config("RectangleLabels", "BrushLabels"))
    task = api.upload_image(project, image_path)
    ml = connect(api, project, backend, extra_params)
    settings = api.ok("GET", f"/api/projects/{project}")
    # What makes Label Studio ask the backend when a task opens (set when the backend was added).
    assert settings["show_collab_predictions"] is True and settings["model_version"] == ml["title"], settings
    return project, task, ml


def click(api, ml: dict, task: dict) -> list[list[dict]]:
    return [
        regions_of(api.interactive(ml["id"], task["id"], context(rectangle_region(box, WIDTH, HEIGHT, labels=[LABEL]))))
        for box in BOXES[:2]
    ]


def test_opening_a_task_in_the_labeling_stream_prepares_frame_and_embedding(api, own_backend, image_path):
    """No subpatching: the first click after the open runs neither a decode nor the encoder."""
    url, frames = own_backend
    project, task, ml = project_with_backend(api, url, image_path, None)
    before = metrics(url)
    served = api.ok("GET", f"/api/projects/{project}/next")  # what the labeling stream asks for
    assert served["id"] == task["id"]
    stored = frames / f"{hashlib.sha1(image_path.read_bytes()).hexdigest()}-{WIDTH}x{HEIGHT}.rgb"
    wait_until(
        lambda: stored.exists() and metrics(url)["encoder_runs"] == before["encoder_runs"] + 1,
        "the frame stored and the full frame encoded",
    )
    warm = metrics(url)
    assert warm["frame_cache"]["misses"] == before["frame_cache"]["misses"] + 1

    click(api, ml, task)
    after = metrics(url)
    assert after["encoder_runs"] == warm["encoder_runs"], "a click after the warm-up ran the encoder"
    assert after["frame_cache"]["misses"] == warm["frame_cache"]["misses"], "a click after the warm-up decoded"
    assert after["frame_cache"]["hits"] >= warm["frame_cache"]["hits"] + 2
    assert after["embedding_cache"]["hits"] >= warm["embedding_cache"]["hits"] + 2


def test_opening_a_task_from_the_data_manager_stores_the_resized_frame(api, own_backend, image_path):
    """Subpatching: the window depends on the click, so only the (resized) frame is prepared."""
    url, frames = own_backend
    params = {"fullframe_resize": 0.5, "subpatching": {"patch_size": 256}, "return_format": {"type": "BrushLabels"}}
    project, task, ml = project_with_backend(api, url, image_path, params)
    before = metrics(url)
    opened = api.ok("GET", f"/api/tasks/{task['id']}")  # what the Data Manager asks for
    assert opened["id"] == task["id"]
    stored = frames / f"{hashlib.sha1(image_path.read_bytes()).hexdigest()}-{WIDTH // 2}x{HEIGHT // 2}.rgb"
    wait_until(stored.exists, "the resized frame stored")
    warm = metrics(url)
    assert warm["frame_cache"]["misses"] == before["frame_cache"]["misses"] + 1
    assert warm["encoder_runs"] == before["encoder_runs"], "no window is encoded before a click"

    click(api, ml, task)
    after = metrics(url)
    assert after["frame_cache"]["misses"] == warm["frame_cache"]["misses"], "a click after the warm-up decoded"
    assert after["encoder_runs"] > warm["encoder_runs"]
