"""End to end: images in S3-compatible cloud storage, through a real Label Studio (each version).

The object store is moto in server mode (`moto_server -H 127.0.0.1 -p PORT`, from the PyPI
package `moto[server]`, a real S3 API over HTTP). A bucket holds the test image under a plain
key and under a key with spaces and non-ASCII characters; a Label Studio project gets an S3
source storage pointing at it (custom endpoint, as for MinIO or any S3-compatible service) and
syncs it, so its tasks hold `s3://bucket/key`. Label Studio sends those URIs to the backend
unresolved; SAM2Plus resolves them through `/tasks/<id>/presign/` with its API key and follows
the redirect to the object store (presign on) or reads the bytes Label Studio proxies (presign
off). Untrained SAM2: these tests assert plumbing and geometry, not mask quality.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import boto3
import pytest

from tests.e2e.ls import context, label_config, rectangle_region
from tests.e2e.stack import IMAGE_SIZE, sam2plus_backend
from tests.e2e.test_label_studio import BOXES, LABEL, check_brush, connect, our_reason, regions_of, require_some
from tests.support.servers import free_port, start_logged, stop, wait_for

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = IMAGE_SIZE
BUCKET = "sam2plus-e2e"
KEYS = ["scenes/plain.jpg", "scenes/with space ü 猫 ñ.jpg"]
CREDENTIALS = {
    "aws_access_key_id": "e2e-access-key",
    "aws_secret_access_key": "e2e-secret-key",
    "region_name": "us-east-1",
}


@dataclass
class ObjectStore:
    url: str
    log: Path

    def presigned_gets(self, key: str) -> int:
        """GETs of the object with a signature in the query (a presigned URL), from moto's log."""
        request = f"GET /{BUCKET}/{key}?"  # moto's log shows paths partly decoded: compare them decoded
        return sum(
            1
            for text in self.log.read_text(errors="replace").splitlines()
            if request in unquote(text) and "X-Amz-Signature=" in text
        )


def refused_click(api, backend, object_store, presign: bool) -> str:
    """A smart rectangle on the first S3 task that the backend refuses: the reason the annotator sees."""
    project, tasks = s3_project(api, object_store, presign=presign)
    ml = connect(api, project, backend, None)
    answer = api.interactive(
        ml["id"], tasks[KEYS[0]]["id"], context(rectangle_region(BOXES[0], WIDTH, HEIGHT, labels=[LABEL]))
    )
    assert "data" not in answer and len(answer.get("errors", [])) == 1, answer
    return our_reason(answer["errors"][0], "/predict")


@pytest.fixture(scope="module")
def object_store(tmp_path_factory, image_path) -> ObjectStore:
    """moto's S3 server on 127.0.0.1 with the test image under every key of KEYS."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    moto = str(Path(sys.executable).with_name("moto_server"))
    process = start_logged([moto, "-H", "127.0.0.1", "-p", str(port)], dict(os.environ), log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/", process, log, 60, "moto_server")
        s3 = boto3.client("s3", endpoint_url=url, **CREDENTIALS)
        s3.create_bucket(Bucket=BUCKET)
        for key in KEYS:
            s3.put_object(Bucket=BUCKET, Key=key, Body=image_path.read_bytes(), ContentType="image/jpeg")
        yield ObjectStore(url, log)
    finally:
        stop(process)


def s3_project(api, object_store: ObjectStore, presign: bool) -> tuple[int, dict[str, dict]]:
    """A project whose S3 source storage is the bucket, synced: its tasks by object key."""
    project = api.create_project(label_config("RectangleLabels", "BrushLabels"), title=f"S3 presign={presign}")
    storage = api.add_s3_storage(
        project,
        bucket=BUCKET,
        prefix="scenes",
        use_blob_urls=True,
        presign=presign,
        presign_ttl=1,
        s3_endpoint=object_store.url,
        **CREDENTIALS,
    )
    assert api.sync_s3_storage(storage["id"])["last_sync_count"] == len(KEYS)
    # the API shows the tasks' URIs resolved (/tasks/<id>/resolve/...); the storage link keeps the key
    by_key = {task["storage_filename"]: task for task in api.tasks(project)}
    assert sorted(by_key) == sorted(KEYS), list(by_key)
    return project, by_key


def annotate(api, ml: dict, task: dict) -> list[list[dict]]:
    """Two smart rectangles on the task; each answer's brush masks checked against the image size."""
    per_prompt = []
    for box in BOXES[:2]:
        answer = api.interactive(ml["id"], task["id"], context(rectangle_region(box, WIDTH, HEIGHT, labels=[LABEL])))
        regions = regions_of(answer)
        for region in regions:
            check_brush(region, (0, 0, WIDTH, HEIGHT))
        per_prompt.append(regions)
    return per_prompt


@pytest.fixture(scope="module")
def store_backend(label_studio, object_store, tmp_path_factory) -> str:
    """SAM2Plus with the object store named in IMAGE_HOSTS, as a deployment with MinIO next to
    it would have (the store is on a loopback address, which is refused unless named)."""
    store = object_store.url.removeprefix("http://")
    with sam2plus_backend(
        tmp_path_factory.mktemp("store-backend"),
        label_studio.url,
        label_studio.token,
        {"IMAGE_HOSTS": store, "IMAGE_HOSTS_BLOCK_PRIVATE": "true"},
    ) as url:
        yield url


def test_presigned_s3_tasks_return_regions(api, store_backend, object_store):
    """presign on: Label Studio answers /tasks/<id>/presign/ with a 303 to the object store."""
    project, tasks = s3_project(api, object_store, presign=True)
    ml = connect(api, project, store_backend, None)
    for key in KEYS:  # a plain key, and one with spaces and non-ASCII characters
        before = object_store.presigned_gets(key)
        require_some(annotate(api, ml, tasks[key]))
        assert object_store.presigned_gets(key) > before, f"the object store served no presigned GET of {key!r}"


@pytest.mark.label_studio_feature("storage-proxy")
def test_proxied_s3_tasks_return_regions(api, backend, object_store):
    """presign off: Label Studio streams the object itself (/tasks/<id>/resolve/); no redirect
    to the object store, no IMAGE_HOSTS needed."""
    project, tasks = s3_project(api, object_store, presign=False)
    ml = connect(api, project, backend, None)
    for key in KEYS:
        require_some(annotate(api, ml, tasks[key]))


@pytest.mark.label_studio_feature("storage-proxy", present=False)
def test_proxied_s3_tasks_before_the_storage_proxy_give_the_annotator_our_reason(api, backend, object_store):
    """presign off before Label Studio 1.18: its presign endpoint answers 500 (it would redirect to a
    data: URL); the annotator sees our one-line reason naming the URI and that status."""
    reason = refused_click(api, backend, object_store, presign=False)
    assert reason.startswith(f'tasks[0].data.image: cannot fetch "s3://{BUCKET}/{KEYS[0]}"'), reason
    assert "HTTP 500" in reason, reason


def test_presigned_redirect_to_an_unnamed_loopback_store_is_refused(api, backend, object_store):
    """The default backend names no object store: the presigned URL points at a loopback
    address, so the redirect is refused with our reason, naming the store's host."""
    reason = refused_click(api, backend, object_store, presign=True)
    assert reason.startswith(f'tasks[0].data.image: "s3://{BUCKET}/scenes/'), "the task reached us unresolved"
    assert f"{object_store.url.removeprefix('http://')}" in reason and "IMAGE_HOSTS" in reason, reason


@pytest.fixture(scope="module")
def api(label_studio):
    return label_studio.api()
