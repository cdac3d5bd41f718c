#!/usr/bin/env bash
# Create .venv and install the locked stack (requirements/*.lock, written by scripts/lock.py) and
# SAM2Plus. Safe to re-run: what the lock already has installed is kept.
#   PYTHON   the interpreter for the venv (default: python3)
#   EXTRAS   "test" (default): the test extra's lock too; "" for the runtime only
# Order: torch and what it needs, then sam2 (its setup.py imports torch; SAM2_BUILD_CUDA=0 skips
# its optional CUDA extension, which only serves hole filling that the image predictor leaves off),
# then the rest, then the project itself without dependencies. Every file is checked against the
# lock's sha256 and nothing is resolved here (--no-deps): the venv holds exactly the lock. An
# existing .venv that holds anything no lock pins (installed by hand, or left from an older lock)
# is removed and made again, never used (scripts/locked_venv.py strays).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${EXTRAS-test}
EVERY_LOCK=(--lock requirements/torch.lock --lock requirements/sam2.lock --lock requirements/runtime.lock
            --lock requirements/test.lock --own sam2plus)

if [ -x .venv/bin/python ] && ! .venv/bin/python scripts/locked_venv.py strays --venv .venv "${EVERY_LOCK[@]}"; then
  echo "install.sh: .venv holds packages no lock pins (above): making it again" >&2
  rm -rf .venv
fi
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
LOCKED=("${PIP[@]}" install --quiet --no-deps --require-hashes)
"${LOCKED[@]}" -r requirements/torch.lock
SAM2_BUILD_CUDA=0 "${LOCKED[@]}" --no-build-isolation -r requirements/sam2.lock
"${LOCKED[@]}" -r requirements/runtime.lock
if [ -n "$EXTRAS" ]; then
  for extra in $EXTRAS; do "${LOCKED[@]}" -r "requirements/$extra.lock"; done
fi
"${PIP[@]}" install --quiet --no-deps --no-build-isolation -e .
"${PIP[@]}" check
.venv/bin/python scripts/locked_venv.py strays --venv .venv "${EVERY_LOCK[@]}"
.venv/bin/python -c "import sam2, torch, sam2plus; print('install.sh: ready (torch', torch.__version__, ', cuda', torch.cuda.is_available(), ')')"
