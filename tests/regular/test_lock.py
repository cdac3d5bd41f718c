"""requirements/*.lock against pyproject.toml: every dependency pinned, every pin exact and hashed."""

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.locks import REPO, RUNTIME_PARTS, pinned

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EVERY_PART = (*RUNTIME_PARTS, "test")


def unsatisfied(requirements: list[str], versions: dict[str, str]) -> list[str]:
    """The requirements that no pinned version satisfies (missing from the lock, or outside its range)."""
    missing = []
    for text in requirements:
        requirement = Requirement(text)
        version = versions.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            missing.append(f"{text} (locked: {version})")
    return missing


def test_every_runtime_dependency_is_pinned_by_the_runtime_locks():
    assert unsatisfied(PROJECT["dependencies"], pinned(RUNTIME_PARTS)) == []


def test_every_test_dependency_is_pinned_by_the_locks():
    assert unsatisfied(PROJECT["optional-dependencies"]["test"], pinned(EVERY_PART)) == []


def test_every_line_is_an_exact_hashed_pin_and_no_package_is_pinned_twice():
    assert len(pinned(EVERY_PART)) > 100  # the whole closure, not just the direct dependencies


def test_torch_is_the_pair_the_tests_run_and_sam2_is_alone_in_its_lock():
    runtime = pinned(RUNTIME_PARTS)
    assert (runtime["torch"], runtime["torchvision"]) == ("2.14.1", "0.29.1")
    assert set(pinned(("torch",))) >= {"torch", "torchvision"}
    assert pinned(("sam2",)) == {"sam2": "1.1.0"}


def test_the_test_lock_adds_to_the_runtime_and_changes_none_of_its_pins():
    runtime, test = pinned(RUNTIME_PARTS), pinned(("test",))
    assert set(runtime).isdisjoint(test)
    assert {"pytest", "moto", "ruff"} <= set(test)


@pytest.mark.parametrize("part", EVERY_PART)
def test_each_lock_says_how_it_was_made(part):
    header = (REPO / "requirements" / f"{part}.lock").read_text().splitlines()[0]
    assert "scripts/lock.py" in header


def test_a_loose_or_unhashed_line_is_refused(tmp_path, monkeypatch):
    from tests.support import locks

    (tmp_path / "loose.lock").write_text("numpy>=1.26\n")
    monkeypatch.setattr(locks, "LOCKS", tmp_path)
    with pytest.raises(ValueError, match="not an exact, hashed pin"):
        locks.pinned(("loose",))
