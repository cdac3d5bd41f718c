"""The end-to-end suite once per Label Studio version of stack.VERSIONS, one Label Studio at a time.

`label_studio` here overrides the one of tests/conftest.py (which tests/browser keeps using): it is
a session fixture parametrised by version, so pytest runs every test of the oldest version against
one Label Studio, stops it, and then starts the next. A test marked
`@pytest.mark.label_studio_feature("personal-access-tokens")` gets only the versions that have the
feature (stack.FEATURES): its other versions are not generated at all, rather than skipped;
`present=False` gives the versions without it (what a user of an older Label Studio sees).
"""

from __future__ import annotations

import pytest

from tests.e2e.stack import FEATURES, VERSIONS, has_feature, running_label_studio, sam2plus_backend


def pytest_generate_tests(metafunc):
    if "label_studio" not in metafunc.fixturenames:
        return
    versions = list(VERSIONS)
    for marker in metafunc.definition.iter_markers("label_studio_feature"):
        (feature,) = marker.args
        present = marker.kwargs.get("present", True)
        assert feature in FEATURES, f"unknown Label Studio feature {feature!r} (see stack.FEATURES)"
        versions = [version for version in versions if has_feature(version, feature) == present]
    assert versions, f"{metafunc.definition.nodeid}: no tested Label Studio version has what it needs"
    metafunc.parametrize("label_studio", versions, indirect=True, scope="session", ids=[f"ls{v}" for v in versions])


def pytest_collection_modifyitems(items):
    """Oldest Label Studio first: the end-to-end tests in their places, ordered by version (stably,
    so each version's tests keep pytest's order). pytest would start with the version of the first
    file it collected, which a test generated for newer versions only would make the newest."""
    places = [
        i for i, item in enumerate(items) if "label_studio" in getattr(getattr(item, "callspec", None), "params", {})
    ]
    ordered = sorted((items[i] for i in places), key=lambda item: VERSIONS.index(item.callspec.params["label_studio"]))
    for place, item in zip(places, ordered, strict=True):
        items[place] = item


@pytest.fixture(scope="session")
def label_studio(request, tmp_path_factory):
    """Label Studio `request.param` on loopback, for every end-to-end test of that version."""
    version = request.param
    with running_label_studio(version, tmp_path_factory.mktemp(f"label-studio-{version}")) as ls:
        yield ls


@pytest.fixture(scope="session")
def backend(label_studio, tmp_path_factory) -> str:
    """SAM2Plus fetching the images of this version's Label Studio. It overrides tests/conftest.py's
    `backend` too: a session fixture of that name created earlier (by a test outside tests/e2e that
    started the default Label Studio) would otherwise be reused here, bound to the other server."""
    with sam2plus_backend(tmp_path_factory.mktemp("sam2plus"), label_studio.url, label_studio.token) as url:
        yield url
