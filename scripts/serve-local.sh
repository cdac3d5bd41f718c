#!/usr/bin/env bash
# One command from a fresh clone to a serving backend on http://localhost:${PORT:-22201}:
# installs everything (scripts/install.sh), fetches the configured SAM2 checkpoint once into
# ./vols/model-store, and starts gunicorn. Where the checkpoint cannot be downloaded (no
# internet) it says so and starts with UNTRAINED weights, which only check the plumbing.
# It listens on 127.0.0.1 (HOST=0.0.0.0 opens it to the network: set BASIC_AUTH_USER and
# BASIC_AUTH_PASS then) and lets clients ask for review artifacts (ARTIFACTS=request), which
# sam2plus-probe --intermediates does.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

export MODEL_CONFIG=${MODEL_CONFIG:-configs/sam2.1/sam2.1_hiera_l.yaml}
export MODEL_CHECKPOINT=${MODEL_CHECKPOINT:-sam2.1_hiera_large.pt}
export CHECKPOINT_DIR=${CHECKPOINT_DIR:-$PWD/vols/model-store}
export CACHE_DIR=${CACHE_DIR:-$PWD/vols/localhost/cache}
export MODEL_DIR=${MODEL_DIR:-$PWD/vols/localhost/data/models}
export DEVICE=${DEVICE:-auto}
export ARTIFACTS=${ARTIFACTS:-request}
export HOST=${HOST:-127.0.0.1} PORT=${PORT:-22201}
mkdir -p "$CHECKPOINT_DIR" "$CACHE_DIR" "$MODEL_DIR"

if [ "$MODEL_CHECKPOINT" != untrained ] && [ ! -f "$MODEL_CHECKPOINT" ] && [ ! -f "$CHECKPOINT_DIR/$MODEL_CHECKPOINT" ]; then
  if ! .venv/bin/python scripts/download-checkpoints.py "$CHECKPOINT_DIR" "$MODEL_CHECKPOINT"; then
    cat >&2 <<MSG
serve-local.sh: could not download $MODEL_CHECKPOINT into $CHECKPOINT_DIR (no internet here?).
serve-local.sh: starting with MODEL_CHECKPOINT=untrained: real SAM2 architecture, RANDOM weights.
serve-local.sh: masks will be meaningless; this is a plumbing check only. Put the checkpoint
serve-local.sh: into $CHECKPOINT_DIR and run this script again for real segmentation.
MSG
    export MODEL_CHECKPOINT=untrained
  fi
fi

echo "serve-local.sh: serving $MODEL_CONFIG ($MODEL_CHECKPOINT) on http://$HOST:$PORT"
# gunicorn.conf.py takes HOST, PORT, WORKERS, THREADS and TIMEOUT from the environment.
exec .venv/bin/gunicorn _wsgi:app
