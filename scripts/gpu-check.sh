#!/usr/bin/env bash
# The GPU path on a CUDA machine without network (docs/tests.md: The GPU check), within about
# 8 minutes: the machine's own torch (its version printed), the rest from .wheels/ (made here
# beforehand by scripts/gpu-wheels.sh) in a venv that sees the machine's packages, then
#   1. the benchmark with hiera-l, untrained, on CUDA (every figure, peak GPU memory included);
#   2. the tests marked `gpu`: device resolution, bf16 autocast, embedding-cache bytes in GPU
#      memory, two gunicorn workers sharing the GPU, a click served by gunicorn on CUDA.
#   PYTHON     the interpreter that has torch with CUDA (default: python3); CPython 3.11, as the lock
#   GPU_VENV   where the venv goes (default: a temporary folder, removed at exit)
#   OUT        where bench.json and the logs go (default: ./gpu-check-out)
#   BENCH_SIZE the benchmark image (default: 10240x9800)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
started=$SECONDS

"$PYTHON" - <<'PY'
import torch
print("gpu-check: torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())
if not torch.cuda.is_available():
    raise SystemExit("gpu-check: torch sees no CUDA device: this check needs an NVIDIA GPU and its driver")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"gpu-check: GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
PY
[ -f .wheels/requirements.txt ] || { echo "gpu-check: no .wheels/: run scripts/gpu-wheels.sh where pip works" >&2; exit 1; }

if [ -z "${GPU_VENV:-}" ]; then
  GPU_VENV=$(mktemp -d)
  trap 'rm -rf "$GPU_VENV"' EXIT
fi
# A venv of the same interpreter that sees the machine's torch (wherever it lives: the system, a venv,
# conda) after its own packages, so the locked versions installed here win over the machine's.
"$PYTHON" -m venv "$GPU_VENV"
torch_site=$("$PYTHON" -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))")
venv_site=$("$GPU_VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "import site; site.addsitedir('$torch_site')" > "$venv_site/machine-torch.pth"
PIP=("$GPU_VENV/bin/python" -m pip --disable-pip-version-check install --quiet --no-index --find-links .wheels)
PIP+=(--no-deps --ignore-installed)
"${PIP[@]}" -r .wheels/requirements.txt
"$GPU_VENV/bin/python" -c "import torchvision" 2>/dev/null || "${PIP[@]}" "$(grep -o '^torchvision==[^ ]*' .wheels/locked.txt)"
"$GPU_VENV/bin/python" -c "import torch, torchvision, sam2; print('gpu-check: venv ready: torch', torch.__version__, 'from', torch.__file__, '; torchvision', torchvision.__version__)"

echo "gpu-check: benchmark, hiera-l untrained on CUDA" >&2
timeout 300 "$GPU_VENV/bin/python" -m sam2plus.bench --config configs/sam2.1/sam2.1_hiera_l.yaml --device cuda \
  --size "${BENCH_SIZE:-10240x9800}" --repeats 3 --json "$OUT/bench.json" | tee "$OUT/bench.txt"

echo "gpu-check: tests marked gpu" >&2
status=0
timeout 240 "$GPU_VENV/bin/python" -m pytest tests/gpu -m gpu -v -s -p no:cacheprovider | tee "$OUT/gpu-tests.txt" || status=$?
echo "gpu-check: done in $((SECONDS - started)) s, figures in $OUT/ (exit $status)" >&2
exit "$status"
