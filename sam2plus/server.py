"""Label Studio's ML backend protocol over HTTP: routes, basic auth and JSON errors.

Every answer carries an `X-Request-Id`; a 500 says only `internal error` with that id, and the
detail goes to the log. Values from requests are logged escaped (%r), never raw.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import select
import socket
import threading
import time
import uuid

from flask import Flask, Response, g, jsonify, request, send_file
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import artifacts as review
from .errors import RequestError, Stopped

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client left before the answer


def create_app(model) -> Flask:
    """The WSGI app serving `model` (a SAM2Plus)."""
    app = Flask("sam2plus")
    config = model.config
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    credentials = _Credentials(config.basic_auth_user, config.basic_auth_pass) if config.basic_auth_user else None
    metrics = _Metrics()

    @app.before_request
    def _authenticate():
        g.request_id = uuid.uuid4().hex[:16]
        if credentials and request.path != "/health" and not credentials.accept(request.headers.get("Authorization")):
            response = _error(401, "authorization: basic auth credentials are missing or wrong")
            response.headers["WWW-Authenticate"] = 'Basic realm="sam2plus", charset="UTF-8"'
            return response
        return None

    @app.after_request
    def _tag(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = _request_id()
        return response

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
                               label_config=body.get("label_config"), artifacts=body.get("artifacts") is True,
                               should_stop=client_gone)
        metrics.predicted(time.perf_counter() - started)
        return jsonify(answer)

    @app.get("/artifacts/<ident>")
    def artifact_files(ident: str):
        return jsonify(files=review.request_files(_artifacts_of(config), ident))

    @app.get("/artifacts/<ident>/<name>")
    def artifact_file(ident: str, name: str):
        return send_file(review.open_request_file(_artifacts_of(config), ident, name), download_name=name)

    @app.post("/webhook")
    def webhook():
        body = _json_body()
        log.info("webhook %r ignored: SAM2Plus does not train", body.get("action"))
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
        log.info("%s %r -> %d %r", request.method, request.path, exc.status, exc.message)
        return _error(exc.status, exc.message)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge):
        metrics.failed(413)
        limit = config.max_request_bytes
        return _error(413, f"body: larger than MAX_REQUEST_BYTES={limit} ({limit / (1 << 20):g} MiB), "
                           "the largest request body this backend accepts")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        metrics.failed(exc.code or 500)
        return _error(exc.code or 500, f"{request.method} {request.path}: {exc.name}")

    @app.errorhandler(Stopped)
    def _stopped(exc: Stopped):
        metrics.failed(CLIENT_CLOSED_REQUEST)
        log.info("%s %s: %s (request id %s)", request.method, request.path, exc, _request_id())
        return _error(CLIENT_CLOSED_REQUEST, f"stopped: {exc}")

    @app.errorhandler(Exception)
    def _fault(exc: Exception):
        metrics.failed(500)
        log.exception("%s %r failed (request id %s)", request.method, request.path, _request_id())
        return _error(500, f"internal error (request id {_request_id()}); the backend's log has the detail")

    return app


def client_gone() -> bool:
    """True when the client of the current request has closed its connection (gunicorn only):
    the socket polls readable and a peek reads end-of-file, or it reports a hang-up or an error.
    A live client, or a server that does not expose the socket, gives False."""
    sock = request.environ.get("gunicorn.socket")
    if sock is None:
        return False
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI)
        events = poller.poll(0)
        if not events:
            return False
        if events[0][1] & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
            return True
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionError:  # reset by the peer
        return True
    except (OSError, ValueError):  # ValueError: a socket that cannot peek (TLS)
        return False


def _artifacts_of(config) -> str:
    """The CACHE_DIR whose review artifacts GET /artifacts serves: none with ARTIFACTS=off."""
    if config.artifacts == "off":
        raise RequestError("path", "this backend writes no review artifacts (ARTIFACTS=off)", 404)
    return config.cache_dir


def _request_id() -> str:
    return getattr(g, "request_id", None) or "-"


def _json_body() -> dict:
    data = request.get_data(cache=True)
    if request.content_length is None and len(data) >= request.max_content_length:
        # A chunked body is cut at the limit without an error (werkzeug's LimitedStream.readall).
        raise RequestEntityTooLarge()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise RequestError("body", "must be a JSON object")
    return body


def _error(status: int, message: str) -> Response:
    """A JSON error whose HTTP reason phrase repeats the message: Label Studio shows only that line."""
    response = jsonify(error=message, request_id=_request_id())
    reason = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in message)[:300]
    response.status = f"{status} {reason}"
    return response


class _Credentials:
    """The configured basic-auth user and password, compared as bytes in constant time.

    RFC 7617 clients send UTF-8; Label Studio (python-requests) sends Latin-1 for characters it
    can encode that way, so both encodings of the configured values are accepted. Anything that
    does not decode (non-ASCII in the header, bad base64) is simply a wrong credential."""

    def __init__(self, user: str, password: str):
        self.pairs = {(user.encode(enc), password.encode(enc))
                      for enc in ("utf-8", "latin-1") if _encodes(user + password, enc)}

    def accept(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip().encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        if not sep:
            return False
        return any([hmac.compare_digest(user, u) & hmac.compare_digest(password, p) for u, p in self.pairs])


def _encodes(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


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
