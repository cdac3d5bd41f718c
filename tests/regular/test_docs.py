"""The documentation: every relative link of README.md and docs/*.md leads to a file and heading
that exist (as GitHub renders them), and the site's strict build fails on a broken anchor."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.docs import PAGES, REPO, anchors, links, section

MKDOCS = [sys.executable, "-m", "mkdocs", "build", "--strict"]


def _broken_links(page: Path) -> list[str]:
    broken = []
    for link in links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.is_file():
            broken.append(f"{link}: no file {target}")
        elif anchor and anchor not in anchors(target):
            broken.append(f"{link}: no heading with anchor #{anchor} in {target.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    assert links(page) or page.name != "README.md", "README.md has no links: the parser is broken"
    assert _broken_links(page) == []


def test_the_link_check_finds_a_broken_anchor_and_a_missing_file(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("## Here\n\n[ok](#here) [no anchor](#there) [no file](gone.md)\n")
    assert [line.split(":")[0] for line in _broken_links(page)] == ["#there", "gone.md"]


def test_the_strict_site_build_fails_on_a_broken_anchor_and_passes_without(tmp_path):
    """mkdocs.yml's validation makes `mkdocs build --strict` (scripts/test.sh) fail on a broken
    anchor; checked on a copy, so that nothing is written into the repository."""
    for name in ("mkdocs.yml", "README.md", "docs", "scripts/mkdocs_hooks.py"):
        source, copy = REPO / name, tmp_path / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, copy)
    build = [*MKDOCS, "-d", str(tmp_path / "site")]
    env = {"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"}
    good = subprocess.run(build, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "site" / "index.html").read_text().count("Quick start") >= 1, "README is the home page"
    page = tmp_path / "docs" / "http-api.md"
    page.write_text(page.read_text() + "\nSee [metrics](operations.md#no-such-heading).\n")
    bad = subprocess.run(build, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode != 0 and "no-such-heading" in bad.stderr, bad.stderr


def test_the_readmes_settings_are_rows_of_the_configuration_table():
    """The landing page's short list of settings names only variables the full table documents."""

    def variables(body: str) -> set[str]:
        rows = [line.split("|")[1] for line in body.splitlines() if line.startswith("| `")]
        return {name for row in rows for name in re.findall(r"`([A-Z_]+)`", row)}

    short = variables(section("## Settings people change most").text)
    assert len(short) >= 8 and short <= variables(section("## Configuration").text)


def _module_map() -> str:
    """The module map: the first code block of docs/how-it-works.md."""
    text = (REPO / "docs" / "how-it-works.md").read_text()
    return text.split("```\n", 2)[1]


def _mapped_modules(block: str) -> set[str]:
    return set(re.findall(r"\b([a-z_]+)\.py\b", block))


def test_the_module_map_names_every_module_of_sam2plus():
    """docs/how-it-works.md's map is kept true: a module added to sam2plus/ without a line there fails."""
    modules = {path.stem for path in (REPO / "sam2plus").glob("*.py")} - {"__init__"}
    mapped = _mapped_modules(_module_map())
    assert len(modules) > 30 and modules - mapped == set(), "add these to docs/how-it-works.md's module map"
    outside = {"model", "_wsgi", "conf"}  # model.py, _wsgi.py, gunicorn.conf.py
    assert mapped - modules <= outside, "the map names modules that are gone"


def test_the_module_map_check_reads_every_name_of_a_line():
    block = "sam2plus/server.py  routes\n  results.py, rle.py  regions\n"
    assert _mapped_modules(block) == {"server", "results", "rle"}


def test_the_click_diagram_is_a_mermaid_block_the_site_renders():
    text = (REPO / "docs" / "how-it-works.md").read_text()
    assert "```mermaid\nflowchart" in text
    assert "name: mermaid" in (REPO / "mkdocs.yml").read_text(), "superfences' custom fence"
