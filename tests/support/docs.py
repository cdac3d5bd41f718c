"""The documentation's text for tests: README.md (the landing page) and the site's pages, docs/*.md.

Tests that check a table or a figure against the code find its section by heading with `section`,
wherever the text lives now; `links` and `anchors` serve the check of README.md's relative links.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGES = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
_HEADING = re.compile(r"^(#{1,6}) (.+)$")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Section:
    """The text under one heading, up to the next heading of any level, and where it is."""

    path: Path
    heading: str
    start: int  # offset of the body (after the heading's line) in the file
    end: int
    text: str


def _headings(text: str) -> list[tuple[int, int, str]]:
    """(offset of the line, level, title) of every heading outside fenced code."""
    found, fenced, offset = [], False, 0
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line.rstrip("\n"))
        if match:
            found.append((offset, len(match.group(1)), match.group(2).strip()))
        offset += len(line)
    return found


def section(heading: str, page: str | None = None) -> Section:
    """The one section titled `heading` (e.g. "### Metrics") in README.md and docs/*.md, or in `page`
    (a file name such as "deployment.md") where the title is not unique."""
    level, title = heading.split(" ", 1)
    hits = []
    for path in PAGES:
        if page and path.name != page:
            continue
        text = path.read_text()
        marks = _headings(text)
        for i, (offset, lvl, name) in enumerate(marks):
            if lvl == len(level) and name == title:
                start = text.index("\n", offset) + 1
                end = marks[i + 1][0] if i + 1 < len(marks) else len(text)
                hits.append(Section(path, heading, start, end, text[start:end]))
    where = [str(hit.path.relative_to(REPO)) for hit in hits]
    assert len(hits) == 1, f"{heading!r}: expected in exactly one of README.md, docs/*.md, found in {where}"
    return hits[0]


def slug(title: str) -> str:
    """GitHub's anchor for a heading (mkdocs.yml makes the site's the same)."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, numbered as GitHub numbers repeated titles."""
    seen: dict[str, int] = {}
    result = set()
    for _, _, title in _headings(path.read_text()):
        base = slug(title)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(path: Path) -> list[str]:
    """Every relative link target of a Markdown file outside fenced code (no scheme such as https:)."""
    lines, fenced = [], False
    for line in path.read_text().splitlines(keepends=True):
        fenced = fenced != line.startswith("```")
        lines.append("" if fenced or line.startswith("```") else line)
    return [target for target in _LINK.findall("".join(lines)) if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]
