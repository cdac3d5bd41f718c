"""MkDocs hooks (mkdocs.yml): README.md is the site's home page, and links between it and docs/
are rewritten so that the same Markdown works on GitHub and on the site."""

import re
from pathlib import Path

from mkdocs.structure.files import File

README = Path(__file__).resolve().parent.parent / "README.md"


def on_files(files, config):
    """Add README.md to the site as index.md."""
    files.append(File.generated(config, "index.md", abs_src_path=str(README)))
    return files


def on_page_markdown(markdown, page, config, files):
    """README's `docs/x.md` links become `x.md`; a page's `../README.md` links become `index.md`."""
    if page.file.src_uri == "index.md":
        return re.sub(r"\]\(docs/", "](", markdown)
    return re.sub(r"\]\(\.\./README\.md", "](index.md", markdown)
