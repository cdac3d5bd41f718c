#!/usr/bin/env bash
# Install everything (scripts/install.sh), run ruff (lint and format check) and the whole test
# suite, slow end-to-end tests included. Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/regular`.
# Tests write only into their temporary folders: a file of the repository created or changed
# while they ran (ignored paths such as vols/ or probe_out/ included, Python's own caches
# excepted) fails the run, even when pytest passed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/install-chromium.sh || echo "test.sh: no Chromium, so tests/browser will fail (docs/tests.md: Browser tests)" >&2
bash scripts/install-system.sh || echo "test.sh: no haproxy or postgresql, so tests/deploy/test_front.py and test_replicas.py will fail (docs/security.md, docs/scaling-out.md)" >&2
bash scripts/install-containers.sh || echo "test.sh: no podman, so tests/deploy/test_image.py will fail (docs/tests.md: The image)" >&2
if [ "$#" -eq 0 ]; then set -- tests; fi
started=$(mktemp)
trap 'rm -f "$started"' EXIT
status=0
# Lint and format (pyproject.toml's [tool.ruff]) first; a finding fails the run, the tests still run.
.venv/bin/ruff check . || status=$?
.venv/bin/ruff format --check . || status=$?
# The documentation site (mkdocs.yml), strictly: a broken link or anchor fails the run. Built into
# a temporary folder; no --quiet, which in mkdocs 1.6 hides the warnings that --strict counts.
site=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict -d "$site" || status=$?
rm -rf "$site"
.venv/bin/python -m pytest "$@" || status=$?
written=$(find . \( -path ./.git -o -path ./.venv -o -name __pycache__ -o -name .pytest_cache -o -name .ruff_cache -o -name '*.egg-info' \) \
  -prune -o ! -type d -newer "$started" -print)
if [ -n "$written" ]; then
  echo "scripts/test.sh: the tests wrote into the repository (only their temporary folders are theirs):" >&2
  echo "$written" >&2
  status=1
fi
exit "$status"
