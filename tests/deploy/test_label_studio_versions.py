"""The Label Studio versions the end-to-end suite runs on, and scripts/label-studio.sh's --version.

Fast: nothing is installed or started. The script's checks run before its install step, and
the end-to-end suite is only collected.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from tests.e2e.stack import DEFAULT_VERSION, FEATURES, LS_SCRIPT, OLDEST_VERSION, VERSIONS, has_feature, version_key
from tests.support.servers import REPO


def script(*args: str, home) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SAM2PLUS_LS_")}
    env["HOME"] = str(home)  # the default venv lives under HOME: nothing is installed in a real one
    return subprocess.run(["bash", str(LS_SCRIPT), *args], env=env, capture_output=True, text=True, timeout=30)


def test_the_suite_runs_on_the_oldest_supported_and_the_default_version():
    assert VERSIONS == (OLDEST_VERSION, DEFAULT_VERSION)
    assert version_key(OLDEST_VERSION) < version_key(DEFAULT_VERSION)


@pytest.mark.parametrize(
    ("version", "feature", "has"),
    [
        ("1.12.1", "personal-access-tokens", False),
        ("1.16.0", "personal-access-tokens", False),
        ("1.17.0", "personal-access-tokens", True),
        ("1.23.2", "personal-access-tokens", True),
        ("1.17.0", "storage-proxy", False),
        ("1.18.0", "storage-proxy", True),
        ("1.14.0.post0", "storage-proxy", False),
    ],
)
def test_features_start_at_their_release(version, feature, has):
    assert feature in FEATURES
    assert has_feature(version, feature) is has


def test_a_test_that_needs_personal_access_tokens_is_generated_only_for_versions_that_have_them():
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/e2e", "--collect-only", "-q", "-m", "slow", "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    ids = [line for line in listed.stdout.splitlines() if "::" in line]
    pat = [line for line in ids if "personal_access_token" in line]
    assert (
        pat
        == [
            f"tests/e2e/test_label_studio.py::test_uploaded_images_are_fetched_with_a_personal_access_token[ls{v}]"
            for v in VERSIONS
            if has_feature(v, "personal-access-tokens")
        ]
        and pat
    ), pat
    for version in VERSIONS:
        legacy = f"tests/e2e/test_label_studio.py::test_uploaded_images_are_fetched_with_a_legacy_token[ls{version}]"
        assert legacy in ids, ids
    # One Label Studio at a time: every test of a version comes before any of the next.
    order = [next(v for v in VERSIONS if f"ls{v}" in line) for line in ids]
    assert order == sorted(order, key=VERSIONS.index), order


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["install", "--version", "1.2;rm"], "--version must be a release number"),
        (["install", "--version", ""], "--version needs a value"),
        (["install", "--version", "1.12.1", "--no-legacy-token"], "--no-legacy-token needs Label Studio 1.18"),
    ],
)
def test_the_script_refuses_a_bad_version_before_installing_anything(tmp_path, args, message):
    answer = script(*args, home=tmp_path)
    assert answer.returncode == 2 and message in answer.stderr, answer.stderr
    assert not (tmp_path / ".cache").exists(), "the script created a venv folder for a refused request"


def test_the_script_documents_the_version_and_its_per_version_venv(tmp_path):
    answer = script("--help", home=tmp_path)
    assert answer.returncode == 0, answer.stderr
    assert "--version VERSION" in answer.stdout and "label-studio-VERSION" in answer.stdout, answer.stdout
    assert DEFAULT_VERSION in answer.stdout and OLDEST_VERSION in answer.stdout, answer.stdout


def test_a_release_without_a_lock_is_refused_before_anything_is_installed(tmp_path):
    answer = script("install", "--version", "1.22.0", home=tmp_path)
    assert answer.returncode == 2, answer.stderr
    assert "no lock for Label Studio 1.22.0" in answer.stderr and "scripts/lock.py --label-studio" in answer.stderr
    for version in VERSIONS:
        assert version in answer.stderr, "the message lists the locked releases"
    assert not (tmp_path / ".cache").exists()


@pytest.mark.parametrize("version", VERSIONS)
def test_the_venv_is_named_by_its_lock_and_lives_under_sam2plus_cache(tmp_path, version):
    """SAM2PLUS_CACHE=<empty folder> is how the suite runs as a fresh machine would (docs/tests.md)."""
    lock = REPO / "requirements" / f"label-studio-{version}.lock"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    env = {key: value for key, value in os.environ.items() if not key.startswith("SAM2PLUS_LS_")}
    env["SAM2PLUS_CACHE"] = str(tmp_path / "cache")
    answer = subprocess.run(
        ["bash", str(LS_SCRIPT), "describe", "--version", version], env=env, capture_output=True, text=True, timeout=60
    )
    assert answer.returncode == 0, answer.stderr
    assert f"venv {tmp_path / 'cache'}/label-studio-{version}-{digest[:12]}:" in answer.stdout, answer.stdout
    assert "no marker" in answer.stdout and f"is sha256 {digest}" in answer.stdout, answer.stdout
    assert not (tmp_path / "cache").exists(), "describe installs nothing"
