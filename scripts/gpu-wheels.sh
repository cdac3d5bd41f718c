#!/usr/bin/env bash
# Prepare .wheels/ for scripts/gpu-check.sh on a CUDA machine without network: a wheel of every
# locked package the check needs except torch and its CUDA packages (the machine's own torch is
# used): the runtime lock and pytest's part of the test lock. Source distributions (sam2,
# antlr4-python3-runtime, iopath) are built into wheels here, sam2 with SAM2_BUILD_CUDA=0 against
# .venv's torch (scripts/install.sh). torchvision comes too, for a machine whose torch lacks it.
# Copy the repository with .wheels/ to the machine, then run `bash scripts/gpu-check.sh` there.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .wheels && mkdir .wheels
torch_only='^(torch|triton|nvidia-[a-z0-9-]+|cuda-[a-z-]+)=='
for_tests='^(pytest|pluggy|iniconfig|pygments)=='
{
  grep -hvE "^#|$torch_only" requirements/torch.lock requirements/sam2.lock requirements/runtime.lock
  grep -hE "$for_tests" requirements/test.lock
} > .wheels/locked.txt
SAM2_BUILD_CUDA=0 .venv/bin/python -m pip wheel --quiet --no-deps --no-build-isolation --require-hashes \
  -r .wheels/locked.txt -w .wheels
# What gpu-check.sh installs: exact versions, no hashes (the wheels built here are not the locked files).
grep -vE '^torchvision==' .wheels/locked.txt | cut -d' ' -f1 > .wheels/requirements.txt
echo "gpu-wheels.sh: $(ls .wheels/*.whl | wc -l) wheels, $(du -sh .wheels | cut -f1), in .wheels/" >&2
