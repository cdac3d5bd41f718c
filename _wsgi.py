"""The WSGI entry point: `gunicorn _wsgi:app`, or `python _wsgi.py` for a development server."""

from __future__ import annotations

import logging
import os

from model import SAM2Plus
from sam2plus.server import create_app

logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                    format="[%(asctime)s] [%(levelname)s] [%(name)s] %(message)s")

app = create_app(SAM2Plus())

if __name__ == "__main__":
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "9090")), threaded=True)
