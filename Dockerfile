# syntax=docker/dockerfile:1
# SAM2Plus backend image: Debian 12 (the release the tests build it on), Python from Debian, the
# locked stack (requirements/*.lock) in a venv, served by gunicorn as a non-root user.
# torch's wheels carry their CUDA libraries (CUDA 13.0 for the locked torch); the NVIDIA driver
# comes from the host through the NVIDIA Container Toolkit. Nothing is compiled.
#
# Build arguments:
#   TORCH_INDEX_URL   empty (default): torch and its CUDA libraries exactly as locked. Else a
#                     PyTorch wheel index for another CUDA build of the same torch, for an older
#                     driver, e.g. https://download.pytorch.org/whl/cu126 (docs/deployment.md, The image)
#   BAKE_CHECKPOINTS  checkpoint file names, space-separated, to download into
#                     /sam2/checkpoints at build time, e.g. "sam2.1_hiera_large.pt".
#                     Default: none; the compose files mount MODEL_STORE there instead.
FROM debian:bookworm-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv

# The lock in the order of scripts/install.sh, one layer each: torch first (the big one), then
# sam2, whose setup.py imports torch (SAM2_BUILD_CUDA=0 skips its optional CUDA extension, which
# only serves the hole filling the image predictor leaves off), then the rest. --no-deps: pip
# resolves nothing here, and --require-hashes checks every file against the lock.
WORKDIR /app
COPY requirements/torch.lock requirements/
ARG TORCH_INDEX_URL=""
RUN if [ -z "$TORCH_INDEX_URL" ]; then \
        pip install --no-deps --require-hashes -r requirements/torch.lock; \
    else \
        grep -vE '^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z-]+)==' requirements/torch.lock > /tmp/torch-deps.lock \
        && pip install --no-deps --require-hashes -r /tmp/torch-deps.lock \
        && pip install --index-url "$TORCH_INDEX_URL" \
               "$(grep -o '^torch==[^ ]*' requirements/torch.lock)" "$(grep -o '^torchvision==[^ ]*' requirements/torch.lock)" \
        && rm /tmp/torch-deps.lock; \
    fi
COPY requirements/sam2.lock requirements/
RUN SAM2_BUILD_CUDA=0 pip install --no-deps --require-hashes --no-build-isolation -r requirements/sam2.lock
COPY requirements/runtime.lock requirements/
RUN pip install --no-deps --require-hashes -r requirements/runtime.lock

RUN useradd --uid 1000 --create-home --shell /usr/sbin/nologin sam2 \
 && mkdir -p /sam2/checkpoints /cache /data \
 && chown sam2:sam2 /cache /data

# Before the app's code, so that code changes do not download baked checkpoints again.
COPY scripts/download-checkpoints.py scripts/
ARG BAKE_CHECKPOINTS=""
RUN if [ -n "$BAKE_CHECKPOINTS" ]; then \
        python scripts/download-checkpoints.py /sam2/checkpoints $BAKE_CHECKPOINTS; \
    fi

COPY pyproject.toml README.md model.py _wsgi.py gunicorn.conf.py ./
COPY sam2plus/ sam2plus/
COPY probe/ probe/
RUN pip install --no-deps --no-build-isolation . \
 && pip check \
 && python -c "import cv2, sam2.build_sam, sam2plus"

USER 1000:1000

ENV DEVICE=cuda \
    MODEL_CONFIG=configs/sam2.1/sam2.1_hiera_l.yaml \
    MODEL_CHECKPOINT=sam2.1_hiera_large.pt \
    CHECKPOINT_DIR=/sam2/checkpoints \
    CACHE_DIR=/cache \
    MODEL_DIR=/data/models \
    LOG_LEVEL=INFO \
    WORKERS=1 \
    THREADS=8 \
    HOST=0.0.0.0 \
    PORT=9090
EXPOSE 9090

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['PORT'], timeout=4)"]

# Exec form: gunicorn is PID 1 and gets SIGTERM itself; its workers then finish the clicks in
# flight for up to GRACEFUL_TIMEOUT (give `docker stop` / compose at least as long).
# gunicorn reads /app/gunicorn.conf.py by itself: HOST:PORT, WORKERS, THREADS, TIMEOUT (300 s, long
# enough for a worker loading SAM2) from the environment, and a configuration check at start.
CMD ["gunicorn", "_wsgi:app"]
