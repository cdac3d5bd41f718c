"""Label Studio's ML backend protocol over HTTP: routes, basic auth and JSON errors."""

from __future__ import annotations

import base64
import hmac
import logging
import threading
import time

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from .errors import RequestError

log = logging.getLogger(__name__)


def create_app(model) -> Flask:
    """The WSGI app serving `model` (a SAM2Plus)."""
    app = Flask("sam2plus")
    config = model.config
    metrics = _Metrics()

    @app.before_request
    def _authenticate():
        if config.basic_auth_user and request.path != "/health" and not _authorised(config):
            response = _error(401, "authorization: basic auth credentials are missing or wrong")
            response.headers["WWW-Authenticate"] = 'Basic realm="sam2plus"'
            return response
        return None

    @app.get("/")
    @app.get("/health")
    def health():
        return jsonify(status="UP", model_class=type(model).__name__, model_version=model.model_version)

    @app.post("/setup")
    def setup():
        body = _json_body()
        return jsonify(model.setup(body.get("project"), body.get("schema"), body.get("extra_params")))

    @app.post("/predict")
    def predict():
        body = _json_body()
        params = body.get("params") if isinstance(body.get("params"), dict) else {}
        context = body.get("context", params.get("context"))
        started = time.perf_counter()
        answer = model.predict(body.get("tasks"), context=context, project=body.get("project"),
                               label_config=body.get("label_config"), artifacts=body.get("artifacts") is True)
        metrics.predicted(time.perf_counter() - started)
        return jsonify(answer)

    @app.post("/webhook")
    def webhook():
        body = _json_body()
        log.info("webhook %s ignored: SAM2Plus does not train", body.get("action"))
        return jsonify(status="ok", action=body.get("action"))

    @app.get("/versions")
    def versions():
        return jsonify(versions=[model.model_version], model_version=model.model_version)

    @app.get("/metrics")
    def metrics_route():
        segmenter = model.pipeline.segmenter
        cache = getattr(segmenter, "cache", None)
        frames = model.pipeline.frames
        return jsonify(
            model_version=model.model_version, **metrics.snapshot(),
            encoder_runs=getattr(segmenter, "encoder_runs", None),
            embedding_cache={"hits": cache.hits, "misses": cache.misses, "bytes": cache.bytes} if cache else None,
            frame_cache={"hits": frames.hits, "misses": frames.misses},
        )

    @app.errorhandler(RequestError)
    def _request_error(exc: RequestError):
        metrics.failed(exc.status)
        log.info("%s %s -> %d %s", request.method, request.path, exc.status, exc.message)
        return _error(exc.status, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        metrics.failed(exc.code or 500)
        return _error(exc.code or 500, f"{request.method} {request.path}: {exc.name}")

    @app.errorhandler(Exception)
    def _fault(exc: Exception):
        metrics.failed(500)
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    return app


def _json_body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise RequestError("body", "must be a JSON object")
    return body


def _error(status: int, message: str) -> Response:
    """A JSON error whose HTTP reason phrase repeats the message: Label Studio shows only that line."""
    response = jsonify(error=message)
    reason = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in message)[:300]
    response.status = f"{status} {reason}"
    return response


def _authorised(config) -> bool:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(user, config.basic_auth_user) and hmac.compare_digest(password, config.basic_auth_pass or "")


class _Metrics:
    """Request counters of this worker process."""

    def __init__(self):
        self._lock = threading.Lock()
        self.predictions = 0
        self.predict_seconds = 0.0
        self.errors: dict[int, int] = {}

    def predicted(self, seconds: float) -> None:
        with self._lock:
            self.predictions += 1
            self.predict_seconds += seconds

    def failed(self, status: int) -> None:
        with self._lock:
            self.errors[status] = self.errors.get(status, 0) + 1

    def snapshot(self) -> dict:
        with self._lock:
            mean = self.predict_seconds / self.predictions * 1000 if self.predictions else None
            return {"predictions": self.predictions, "predict_mean_ms": mean,
                    "errors": {str(k): v for k, v in sorted(self.errors.items())}}
