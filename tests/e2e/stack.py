"""A real Label Studio and a real SAM2Plus (gunicorn, untrained hiera-t on CPU) on loopback.

Label Studio is installed into its own venv per version by scripts/label-studio.sh (cached
between runs, a minute or two the first time) and started with a fresh SQLite data dir, a user,
a legacy API token and ML_BLOCK_LOCAL_IP/SSRF_PROTECTION_ENABLED lifted so it can call 127.0.0.1.
Both servers are started by session fixtures and stopped afterwards; nothing is skipped.
tests/conftest.py registers the ones here (Label Studio DEFAULT_VERSION, for tests/browser);
tests/e2e/conftest.py runs the end-to-end suite once per version of VERSIONS.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from tests.e2e.ls import LabelStudioAPI
from tests.support.servers import REPO, free_port, gunicorn_backend, start_logged, stop, wait_for

LS_SCRIPT = REPO / "scripts" / "label-studio.sh"
LS_INSTALL_TIMEOUT = 1200
LS_START_TIMEOUT = 240
BACKEND_START_TIMEOUT = 240

# The test image: big enough that a patch is a small part of it, with shapes and texture.
IMAGE_SIZE = (1600, 1200)

# The Label Studio versions the end-to-end suite runs on: the oldest SAM2Plus supports (the first
# whose ML backends carry extra_params to /setup) and the newest tested. The browser suite and
# scripts/label-studio.sh use DEFAULT_VERSION.
OLDEST_VERSION = "1.12.1"
DEFAULT_VERSION = "1.23.2"
VERSIONS = (OLDEST_VERSION, DEFAULT_VERSION)

# What SAM2Plus can use only from some Label Studio version on (docs/storage.md).
FEATURES = {
    "personal-access-tokens": "1.17.0",  # JWT refresh tokens, /api/token/refresh/
    # Cloud storage with presign off: /tasks/<id>/presign/ (the same view as the new
    # /tasks/<id>/resolve/) streams the object. Before, Label Studio makes a data: URL of it and
    # its presign answers 500 (Django refuses to redirect to a data: URL).
    "storage-proxy": "1.18.0",
    # The <Bitmask> and <BitmaskLabels> tags (a PNG data URL per region): the editor of the
    # 1.21.0 wheel has them, 1.20.0's has none.
    "bitmask": "1.21.0",
}


def version_key(version: str) -> tuple[int, ...]:
    """The release number as integers, 1.12.1 -> (1, 12, 1), for comparing versions."""
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def has_feature(version: str, feature: str) -> bool:
    """Whether Label Studio `version` has `feature` (a key of FEATURES)."""
    return version_key(version) >= version_key(FEATURES[feature])


@dataclass
class LabelStudio:
    version: str
    url: str
    username: str
    password: str
    token: str  # the user's legacy API token
    log: Path

    def api(self) -> LabelStudioAPI:
        return LabelStudioAPI(self.url, self.token)

    def personal_access_token(self) -> str:
        """A new personal access token (a JWT refresh token) of the user."""
        assert has_feature(self.version, "personal-access-tokens"), self.version
        return self.api().ok("POST", "/api/token/")["token"]

    def set_legacy_tokens(self, api: LabelStudioAPI, enabled: bool) -> None:
        api.ok("POST", "/api/jwt/settings", json={"api_tokens_enabled": True, "legacy_api_tokens_enabled": enabled})


@contextlib.contextmanager
def running_label_studio(version: str, workdir: Path):
    """Label Studio `version` on 127.0.0.1 with SQLite in `workdir`, started by scripts/label-studio.sh."""
    subprocess.run(["bash", str(LS_SCRIPT), "install", "--version", version], check=True, timeout=LS_INSTALL_TIMEOUT)
    port = free_port()
    ls = LabelStudio(
        version=version,
        url=f"http://127.0.0.1:{port}",
        username="e2e@example.com",
        password=secrets.token_urlsafe(12),
        token=secrets.token_hex(20),
        log=workdir / "ls.log",
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LABEL_STUDIO_", "SAM2PLUS_LS_"))}
    options = {"version": version, "host": "127.0.0.1", "port": str(port), "data-dir": str(workdir / "data")}
    options |= {"username": ls.username, "password": ls.password, "token": ls.token}
    arguments = [part for key, value in options.items() for part in (f"--{key}", value)]
    process = start_logged(["bash", str(LS_SCRIPT), "start", *arguments], env, ls.log)
    try:
        try:
            wait_for(f"{ls.url}/health", process, ls.log, LS_START_TIMEOUT, f"Label Studio {version}")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{describe_venv(version, env)}") from None
        who = requests.get(
            f"{ls.url}/api/current-user/whoami", headers={"Authorization": f"Token {ls.token}"}, timeout=30
        )
        assert who.status_code == 200 and who.json()["email"] == ls.username, who.text
        yield ls
    finally:
        stop(process)


def describe_venv(version: str, env: dict) -> str:
    """What scripts/label-studio.sh says of `version`'s venv: the lock it was built from, whether it
    still matches it, and `pip check` (the cause when Label Studio dies at import)."""
    described = subprocess.run(
        ["bash", str(LS_SCRIPT), "describe", "--version", version],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return f"scripts/label-studio.sh describe --version {version}:\n{described.stdout}{described.stderr}"


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> LabelStudio:
    """Label Studio DEFAULT_VERSION (tests/e2e/conftest.py overrides this with one per version)."""
    with running_label_studio(DEFAULT_VERSION, tmp_path_factory.mktemp("label-studio")) as ls:
        yield ls


@contextlib.contextmanager
def sam2plus_backend(workdir: Path, label_studio_url: str, api_key: str, extra_env: dict | None = None):
    """SAM2Plus under gunicorn (the contract's command line), untrained hiera-t on CPU;
    `extra_env` adds or overrides backend settings (IMAGE_HOSTS, ...)."""
    env = {
        "CACHE_DIR": str(workdir / "cache"),
        "MODEL_DIR": str(workdir / "models"),
        "LABEL_STUDIO_URL": label_studio_url,
        "LABEL_STUDIO_API_KEY": api_key,
        "IMAGE_HOSTS": "",
        "BASIC_AUTH_USER": "",
        "BASIC_AUTH_PASS": "",
        **(extra_env or {}),
    }
    with gunicorn_backend(env, workers=1, threads=4, timeout=BACKEND_START_TIMEOUT) as url:
        yield url


@pytest.fixture(scope="session")
def backend(label_studio, tmp_path_factory) -> str:
    """SAM2Plus fetching Label Studio's images with the user's legacy token."""
    with sam2plus_backend(tmp_path_factory.mktemp("sam2plus"), label_studio.url, label_studio.token) as url:
        yield url


@pytest.fixture(scope="session")
def image_path(tmp_path_factory) -> Path:
    """A textured JPEG with a few shapes (untrained SAM2 makes no use of them; a user would)."""
    width, height = IMAGE_SIZE
    rng = np.random.default_rng(4)
    image = np.full((height, width, 3), (60, 70, 80), np.uint8)
    image = cv2.add(image, rng.integers(0, 40, image.shape, dtype=np.uint8))
    cv2.circle(image, (1060, 750), 90, (40, 180, 210), -1)
    cv2.rectangle(image, (300, 250), (420, 340), (200, 60, 60), -1)
    cv2.ellipse(image, (1360, 200), (80, 50), 30, 0, 360, (90, 200, 90), -1)
    cv2.circle(image, (700, 500), 60, (230, 230, 230), -1)
    path = tmp_path_factory.mktemp("images") / "e2e-scene.jpg"
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path
