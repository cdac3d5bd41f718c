"""The bad-input catalogue (tests/support/catalogue.py, the table of docs/operations.md): every
malformed request gets its 4xx JSON error naming the field, in the body and in the HTTP reason
phrase; the server stays healthy; no file changes outside the caches (CACHE_DIR's downloads/ and
frames/); the settings store keeps what it held.

In-process (the fast loop) with the geometry test double behind Flask's test client, and once
under gunicorn (slow): every part of the path but SAM2 is the product's own, and no case reaches SAM2.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import requests

from model import SAM2Plus
from sam2plus.config import ServerConfig
from sam2plus.server import REASON_LIMIT, create_app
from sam2plus.settings import SettingsStore
from tests.support.catalogue import (
    AUTH,
    CATALOGUE,
    PROJECT,
    SCENE,
    SETTINGS,
    TABLE_HEADING,
    Case,
    Images,
    markdown_table,
    silent_host,
    write_images,
)
from tests.support.docs import section
from tests.support.geometry_segmenter import ColorRegionSegmenter
from tests.support.scenes import label_config, rect_context
from tests.support.servers import gunicorn_server, static_server

CACHES = ("downloads", "frames")
GOOD_SETUP = {"project": PROJECT, "schema": label_config(), "extra_params": {"subpatching": {"patch_size": 512}}}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("image-host")
    write_images(folder)
    with static_server(folder) as host, silent_host() as silent, silent_host() as label_studio:
        yield Images(host, silent, label_studio), folder


def _settings(root: Path, images: Images) -> dict:
    return {
        **SETTINGS,
        "CACHE_DIR": str(root / "cache"),
        "MODEL_DIR": str(root / "models"),
        "IMAGE_HOSTS": f"{images.host},{images.silent}",
        "LABEL_STUDIO_URL": f"http://{images.label_studio}",
        "LABEL_STUDIO_API_KEY": "catalogue-key",
    }


def _body(case: Case, images: Images) -> bytes | None:
    body = case.body(images)
    return body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()  # keys in their order


def _files_outside_the_caches(*folders: Path) -> dict[str, str]:
    found = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and relative.parts[0] not in CACHES and not path.name.startswith("sam2plus-settings"):
                found[str(path)] = hashlib.sha1(path.read_bytes()).hexdigest()
    return found


def _stored(models: Path) -> list:
    with SettingsStore(models)._connect() as db:
        return db.execute("SELECT project, extra_params FROM project_params ORDER BY project").fetchall()


def _check(case: Case, status: int, body: dict, reason: str) -> None:
    assert status == case.status, (case.what, status, body)
    error = body["error"]
    assert error.startswith(case.field + ":"), (case.what, error)
    assert reason.startswith(case.field + ":") and len(reason) <= REASON_LIMIT + 16, reason
    assert body["request_id"]


@pytest.fixture(scope="module")
def in_process(images, tmp_path_factory):
    hosts, folder = images
    root = tmp_path_factory.mktemp("catalogue")
    config = ServerConfig.from_env(_settings(root, hosts))
    client = create_app(SAM2Plus(config, segmenter=ColorRegionSegmenter())).test_client()
    assert client.post("/setup", json=GOOD_SETUP, headers=AUTH).status_code == 200
    return client, root, folder


@pytest.mark.parametrize("case", CATALOGUE, ids=[f"{n:02d}-{c.route}-{c.what}" for n, c in enumerate(CATALOGUE)])
def test_each_bad_request_is_a_4xx_naming_the_field_and_changes_nothing(case, images, in_process):
    hosts, _ = images
    client, root, image_folder = in_process
    files = _files_outside_the_caches(root / "cache", image_folder)
    stored = _stored(root / "models")
    answer = client.open(
        case.path,
        method=case.method,
        data=_body(case, hosts),
        content_type="application/json",
        headers=AUTH if case.auth else {},
    )
    _check(case, answer.status_code, answer.get_json(), answer.status.split(" ", 1)[1])
    assert client.get("/health").status_code == 200
    assert _files_outside_the_caches(root / "cache", image_folder) == files
    assert _stored(root / "models") == stored, "the project keeps its settings"


def test_after_every_bad_request_a_good_click_is_answered(images, in_process):
    hosts, _ = images
    client, _, _ = in_process
    body = {
        "tasks": [{"id": 1, "data": {"image": f"http://{hosts.host}/scene.jpg"}}],
        "project": PROJECT,
        "label_config": label_config(),
        "params": {"context": rect_context(SCENE.box(), SCENE.width, SCENE.height)},
    }
    answer = client.post("/predict", json=body, headers=AUTH)
    assert answer.status_code == 200 and len(answer.get_json()["results"][0]["result"]) == 1


def test_the_catalogue_covers_every_route_and_holds_at_least_40_cases():
    routes = {case.route.split()[1] for case in CATALOGUE}
    assert routes >= {"/predict", "/setup", "/webhook", "/versions", "/metrics", "/health"}
    assert len(CATALOGUE) >= 40 and all(400 <= case.status < 500 for case in CATALOGUE)


def test_the_docs_troubleshooting_table_is_the_catalogue():
    """One place: the docs (Operations > Bad requests and what they mean) show exactly the cases
    tested here (`python -m tests.support.catalogue` writes the table there)."""
    body = section(TABLE_HEADING).text
    table = [line for line in body.splitlines() if line.startswith("|")]
    assert table == markdown_table().splitlines()


@pytest.mark.slow
def test_under_gunicorn_each_bad_request_is_a_4xx_and_the_workers_keep_serving(images, tmp_path):
    hosts, image_folder = images
    failures = []
    with gunicorn_server(
        _settings(tmp_path, hosts),
        workers=2,
        threads=4,
        timeout=60,
        log_dir=tmp_path,
        app="tests.support.geometry_app:app",
    ) as server:
        assert requests.post(f"{server.url}/setup", json=GOOD_SETUP, headers=AUTH, timeout=10).status_code == 200
        files = _files_outside_the_caches(tmp_path / "cache", image_folder)
        workers = server.workers()
        for case in CATALOGUE:
            answer = requests.request(
                case.method,
                server.url + case.path,
                data=_body(case, hosts),
                timeout=30,
                headers={"Content-Type": "application/json", **(AUTH if case.auth else {})},
            )
            try:
                _check(case, answer.status_code, answer.json(), answer.reason)
            except (AssertionError, ValueError) as exc:
                failures.append(f"{case.route} {case.what}: {exc}")
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
        assert server.workers() == workers, "no worker died"
        assert _files_outside_the_caches(tmp_path / "cache", image_folder) == files
        assert _stored(tmp_path / "models") == [(PROJECT, json.dumps(GOOD_SETUP["extra_params"]))]
    assert not failures, "\n".join(failures)
