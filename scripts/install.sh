#!/usr/bin/env bash
# Create .venv and install torch, sam2 and SAM2Plus with its test extras. Safe to re-run.
#   TORCH_SPEC   the torch/torchvision requirement (default: the pair this project is tested with)
#   PYTHON       the interpreter for the venv (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip setuptools wheel
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  echo "install.sh: installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  $PIP install --quiet $TORCH_SPEC
fi
if ! .venv/bin/python -c "import sam2" 2>/dev/null; then
  # sam2's setup.py imports torch, and its optional CUDA extension only serves hole filling that
  # the image predictor leaves off: build without it and without build isolation.
  echo "install.sh: installing sam2==1.1.0"
  SAM2_BUILD_CUDA=0 $PIP install --quiet --no-build-isolation sam2==1.1.0
fi
$PIP install --quiet -e ".[test]"
.venv/bin/python -c "import sam2, torch, sam2plus; print('install.sh: ready (torch', torch.__version__, ', cuda', torch.cuda.is_available(), ')')"
