"""End to end: the next tasks are prepared before they open, in a real Label Studio (each version).

A project of three tasks (three images) is worked through in the labelling stream as an annotator
does: `GET /api/projects/<id>/next` serves a task (Label Studio then calls the backend's /predict
without a context, the warm-up), the annotator clicks and submits, and the stream serves the next.
Opening task 1 makes the backend read the project's next tasks from Label Studio's task list (read
only, sequential order: by id, not yet labelled) and prepare tasks 2 and 3, so the first clicks on
tasks 2 and 3 run no encoder, as `/metrics` counts.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import requests

from tests.e2e.ls import context, label_config, rectangle_region
from tests.e2e.stack import IMAGE_SIZE, sam2plus_backend
from tests.e2e.test_label_studio import BOXES, LABEL, connect, regions_of
from tests.e2e.test_warmup import metrics, wait_until
from tests.support.prometheus import samples, value

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = IMAGE_SIZE


@pytest.fixture(scope="module")
def api(label_studio):
    return label_studio.api()


@pytest.fixture(scope="module")
def own_backend(label_studio, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("prefetch-backend")
    with sam2plus_backend(workdir, label_studio.url, label_studio.token) as url:
        yield url


def images(folder, count: int) -> list:
    paths = []
    for i in range(count):
        rng = np.random.default_rng(20 + i)
        noise = rng.integers(0, 40, (HEIGHT, WIDTH, 3), np.uint8)
        image = cv2.add(np.full((HEIGHT, WIDTH, 3), (60, 70, 80), np.uint8), noise)
        cv2.circle(image, (1060, 750), 90 + 10 * i, (40, 180, 210), -1)
        path = folder / f"task-{i + 1}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        paths.append(path)
    return paths


def encoder_runs(url: str) -> float:
    return value(samples(requests.get(f"{url}/metrics", timeout=10).text), "sam2plus_encoder_runs_total")


def test_tasks_two_and_three_are_prefetched_and_their_first_clicks_run_no_encoder(api, own_backend, tmp_path):
    url = own_backend
    project = api.create_project(label_config("RectangleLabels", "BrushLabels"))
    for path in images(tmp_path, 3):
        with open(path, "rb") as file:
            api.ok("POST", f"/api/projects/{project}/import", files={"file": (path.name, file, "image/jpeg")})
    tasks = sorted(api.tasks(project), key=lambda task: task["id"])
    assert len(tasks) == 3
    ml = connect(api, project, url, None)  # default extra_params: prefetch 2
    before = metrics(url)

    served = api.ok("GET", f"/api/projects/{project}/next")  # the annotator opens the stream
    assert served["id"] == tasks[0]["id"]
    wait_until(
        lambda: (
            metrics(url)["prefetches"]["done"] == before["prefetches"]["done"] + 2
            and metrics(url)["encoder_runs"] == before["encoder_runs"] + 3
        ),
        "task 1 warmed up and tasks 2 and 3 prefetched",
    )
    for position, task in enumerate(tasks):
        if position:
            served = api.ok("GET", f"/api/projects/{project}/next")
            assert served["id"] == task["id"], "the stream serves the tasks in order"
        runs = encoder_runs(url)
        click = context(rectangle_region(BOXES[0], WIDTH, HEIGHT, labels=[LABEL]))
        answer = api.interactive(ml["id"], task["id"], click)
        regions = regions_of(answer)
        assert regions, "the click got regions"
        assert encoder_runs(url) == runs, f"the first click on task {position + 1} ran the encoder"
        api.ok("POST", f"/api/tasks/{task['id']}/annotations/", json={"result": regions, "ground_truth": False})
    after = metrics(url)
    assert after["prefetches"]["failed"] == before["prefetches"]["failed"]
    assert after["encoder_runs"] == before["encoder_runs"] + 3, "each image encoded once, before its task opened"


def test_the_encode_command_fills_the_store_with_a_projects_images_and_resumes(api, label_studio, tmp_path):
    """`python -m sam2plus.encode --project N` reads the project's tasks from Label Studio's API and
    fetches their images with the API key, as the backend does; a second run encodes nothing."""
    import json
    import subprocess
    import sys

    from tests.support.servers import REPO, TEST_MODEL

    project = api.create_project(label_config("RectangleLabels", "BrushLabels"))
    for path in images(tmp_path, 2):
        with open(path, "rb") as file:
            api.ok("POST", f"/api/projects/{project}/import", files={"file": (path.name, file, "image/jpeg")})
    env = {
        "PATH": "/usr/bin:/bin",
        **TEST_MODEL,
        "CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_DIR": str(tmp_path / "models"),
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
    }
    reports = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "sam2plus.encode", "--project", str(project)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        reports.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert reports[0]["images"] == 2 and reports[0]["encoded_windows"] == 2 and "2/2" in done.stderr
    assert reports[1]["images"] == 2 and reports[1]["encoded_windows"] == 0, "resumed: all held"
    assert len(list((tmp_path / "cache" / "embeddings").glob("*.emb"))) == 2
