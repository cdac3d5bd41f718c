"""The WSGI entry point: `gunicorn _wsgi:app` (its settings in gunicorn.conf.py), or `python _wsgi.py`
for a development server on HOST:PORT.

A configuration the backend cannot start with is reported one line per problem, without a
traceback, and the process exits with gunicorn's "app failed to load" status, which makes the
gunicorn master stop instead of starting worker after worker.
"""

from __future__ import annotations

import logging
import sys

from sam2plus.config import ConfigError, ServerConfig, ServingConfig
from sam2plus.startup import check_environment, report

APP_LOAD_ERROR = 4  # gunicorn's Arbiter.APP_LOAD_ERROR


def _build():
    try:
        serving = ServingConfig.from_env()
        logging.basicConfig(level=serving.log_level, format="[%(asctime)s] [%(levelname)s] [%(name)s] %(message)s")
        config = ServerConfig.from_env()
        from model import SAM2Plus  # imports torch and sam2: after the settings are known to be readable
        from sam2plus.server import create_app

        check_environment(config)
        return create_app(SAM2Plus(config)), serving
    except ConfigError as exc:
        report(exc)
        sys.exit(APP_LOAD_ERROR)


app, _serving = _build()

if __name__ == "__main__":
    app.run(host=_serving.host, port=_serving.port, threaded=True)
