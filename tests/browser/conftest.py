"""Headless Chromium driving Label Studio 1.23.2's own editor against a real SAM2Plus backend.

One Label Studio (started by scripts/label-studio.sh, as in tests/e2e), one browser and one
logged-in session serve every scenario; each scenario gets a new browser context (its own
localStorage, so the editor's toggles start off) and its own project. The browser is
Debian's `chromium` package (scripts/install-chromium.sh), driven by Playwright; it may only
reach loopback: every other host name fails to resolve.
"""

from __future__ import annotations

import os
import shutil

import pytest
from playwright.sync_api import sync_playwright

from tests.browser.backends import geometry_backend as serve_geometry_backend
from tests.browser.editor import TIMEOUT_MS, Editor
from tests.e2e.ls import LabelStudioAPI

VIEWPORT = {"width": 1440, "height": 900}
LOOPBACK_ONLY = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"


def chromium_path() -> str:
    """Debian's chromium (or SAM2PLUS_CHROMIUM); a missing browser fails the tests, it never skips them."""
    path = os.environ.get("SAM2PLUS_CHROMIUM") or shutil.which("chromium")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(
            "no Chromium: run `bash scripts/install-chromium.sh` (Debian's chromium package), "
            "or set SAM2PLUS_CHROMIUM to a Chromium executable",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session."""
    with sync_playwright() as playwright:
        # --no-sandbox: Chromium's sandbox refuses to run as root, which is how CI runs.
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", LOOPBACK_ONLY])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def login(browser, label_studio) -> dict:
    """Log in through Label Studio's login page once; the cookies serve every scenario."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(f"{label_studio.url}/user/login/")
        page.fill("input[name=email]", label_studio.username)
        page.fill("input[name=password]", label_studio.password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/user/login" not in url, timeout=TIMEOUT_MS)
        return context.storage_state()
    finally:
        context.close()


@pytest.fixture(scope="session")
def api(label_studio) -> LabelStudioAPI:
    """Label Studio's REST API with the user's legacy token."""
    return label_studio.api()


@pytest.fixture(scope="session")
def geometry_backend(label_studio, tmp_path_factory):
    """SAM2Plus in-process with the geometry test double, recording what it received."""
    with serve_geometry_backend(
        tmp_path_factory.mktemp("geometry-backend"), label_studio.url, label_studio.token
    ) as served:
        yield served


@pytest.fixture
def editor(browser, login, label_studio, tmp_path):
    """A fresh browser context and page, logged in; the page's last state is kept as final.png."""
    context = browser.new_context(viewport=VIEWPORT, storage_state=login)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    editor = Editor(page, label_studio.url, tmp_path)
    try:
        yield editor
    finally:
        editor.shot("final")
        context.close()
