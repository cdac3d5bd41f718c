"""The product's app around the TEST DOUBLE `ColorRegionSegmenter`, for gunicorn: `tests.support.geometry_app:app`.

For tests of what gunicorn and the HTTP layer do (worker processes, metrics summed over them,
the settings store under concurrent workers, limits): every part is the product's own but SAM2,
so a worker starts in a second instead of loading SAM2. Settings come from the environment,
as in `_wsgi.py`, through gunicorn.conf.py.
"""

from __future__ import annotations

import logging

from model import SAM2Plus
from sam2plus.config import ServerConfig, ServingConfig
from sam2plus.server import create_app
from tests.support.geometry_segmenter import ColorRegionSegmenter

logging.basicConfig(
    level=ServingConfig.from_env().log_level, format="[%(asctime)s] [%(levelname)s] [%(name)s] %(message)s"
)

app = create_app(SAM2Plus(ServerConfig.from_env(), segmenter=ColorRegionSegmenter()))
