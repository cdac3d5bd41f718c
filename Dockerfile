# syntax=docker/dockerfile:1
# SAM2Plus backend image: PyTorch's CUDA *runtime* image (CUDA libraries only, no toolkit
# and no compiler), sam2 without its optional CUDA extension, the app served by gunicorn
# as a non-root user.
#
# Build arguments:
#   BASE_IMAGE        a pytorch/pytorch *-runtime tag with torch >= 2.5.1 (sam2's minimum)
#   BAKE_CHECKPOINTS  checkpoint file names, space-separated, to download into
#                     /sam2/checkpoints at build time, e.g. "sam2.1_hiera_large.pt".
#                     Default: none; the compose files mount MODEL_STORE there instead.
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# sam2's setup.py imports torch, so it must see the base image's torch (no build
# isolation); SAM2_BUILD_CUDA=0 skips its optional CUDA extension, which only serves the
# hole filling that the image predictor leaves off.
RUN SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2==1.1.0

RUN useradd --uid 1000 --create-home --shell /usr/sbin/nologin sam2 \
 && mkdir -p /sam2/checkpoints /cache /data \
 && chown sam2:sam2 /cache /data

WORKDIR /app
# Before the app's code, so that code changes do not download baked checkpoints again.
COPY scripts/download-checkpoints.py scripts/
ARG BAKE_CHECKPOINTS=""
RUN if [ -n "$BAKE_CHECKPOINTS" ]; then \
        python scripts/download-checkpoints.py /sam2/checkpoints $BAKE_CHECKPOINTS; \
    fi

COPY pyproject.toml README.md model.py _wsgi.py gunicorn.conf.py ./
COPY sam2plus/ sam2plus/
COPY probe/ probe/
RUN pip install . && python -c "import cv2, sam2.build_sam, sam2plus"

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

# gunicorn reads /app/gunicorn.conf.py by itself: HOST:PORT, WORKERS, THREADS, TIMEOUT (300 s, long
# enough for a worker loading SAM2) from the environment, and a configuration check at start.
CMD ["gunicorn", "_wsgi:app"]
