#!/usr/bin/env bash
# Install everything (scripts/install.sh) and run the whole test suite, slow end-to-end tests
# included. Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/regular`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/install-chromium.sh || echo "test.sh: no Chromium, so tests/browser will fail (README: Browser tests)" >&2
if [ "$#" -eq 0 ]; then set -- tests; fi
exec .venv/bin/python -m pytest "$@"
