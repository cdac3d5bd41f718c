"""Label Studio's ML backend protocol over HTTP: routes, basic auth, request limits and JSON errors.

Every answer carries an `X-Request-Id`; a 500 says only `internal error` with that id, and the
detail goes to the log. Values from requests are logged through `logtext`, never raw. Every request
is counted in the Prometheus metrics (`sam2plus.metrics`) by route and status.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hmac
import logging
import os
import select
import socket
import sqlite3
import threading
import time
import uuid

from flask import Flask, Response, current_app, g, jsonify, request, send_file
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import artifacts as review
from . import metrics
from .errors import RequestError, Stopped, describe
from .jsonbody import body_seconds, discard_body, nesting_exceeds, parse_json_body, read_body
from .logtext import logtext
from .settings import SettingsUnavailable

__all__ = [
    "REQUEST_ID_HEADER",
    "CLIENT_CLOSED_REQUEST",
    "INSUFFICIENT_STORAGE",
    "REASON_LIMIT",
    "DISK_FULL",
    "create_app",
    "client_gone",
    "nesting_exceeds",
    "reason_phrase",
]

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client left before the answer
INSUFFICIENT_STORAGE = 507
REASON_LIMIT = 300  # characters of an error message repeated in the HTTP reason phrase
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def create_app(model) -> Flask:
    """The WSGI app serving `model` (a SAM2Plus): the protocol routes, the review artifacts, the
    metrics and the JSON error handlers, behind the request hooks (request id, basic auth, counting)."""
    app = Flask("sam2plus")
    config = model.config
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    app.config["MAX_JSON_DEPTH"] = config.max_json_depth
    app.config["MAX_JSON_ITEMS"] = config.max_json_items
    counts = _WorkerCounts()
    _add_protocol_routes(app, model, counts)
    _add_artifact_routes(app, config)
    _add_metrics(app, model, counts)
    _add_error_handlers(app, config, counts)
    _add_request_hooks(app, config)  # last: it names every route added above
    return app


def _add_request_hooks(app: Flask, config) -> None:
    """Give every request an id (the `X-Request-Id` of its answer), refuse it without the basic-auth
    credentials when they are set (/health excepted) and count it in the metrics by the route it matched."""
    credentials = _Credentials(config.basic_auth_user, config.basic_auth_pass) if config.basic_auth_user else None
    routes = frozenset(rule.rule for rule in app.url_map.iter_rules())

    @app.before_request
    def _authenticate():
        g.request_id = uuid.uuid4().hex[:16]
        g.started = time.perf_counter()
        metrics.request_started()
        if credentials and request.path != "/health" and not credentials.accept(request.headers.get("Authorization")):
            response = _error(401, "authorization: basic auth credentials are missing or wrong")
            response.headers["WWW-Authenticate"] = 'Basic realm="sam2plus", charset="UTF-8"'
            return response
        return None

    @app.after_request
    def _tag(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = _request_id()
        _discard_unread_body(response)
        if "started" in g:  # counted once, also when a later after_request handler fails
            route = request.path if request.path in routes else _rule_of_request()
            seconds = time.perf_counter() - g.pop("started")
            metrics.request_finished(route, request.method, response.status_code, seconds)
            metrics.update_memory()
        return response


def _discard_unread_body(response: Response) -> None:
    """Once the answer is sent, read and drop what the request's body still holds (a 413 or a 401
    answered before it was read; `jsonbody.discard_body`), so that closing the connection does not
    reset it under the answer. A body that timed out (408) is not waited for again."""
    environ = request.environ
    has_body = request.content_length or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if has_body and response.status_code != 408:
        response.call_on_close(lambda: discard_body(environ["wsgi.input"], environ.get("gunicorn.socket")))


def _add_protocol_routes(app: Flask, model, counts: _WorkerCounts) -> None:
    """Label Studio's ML backend protocol: health, setup, predict, webhook and versions."""
    config = model.config

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
        params = body.get("params")
        if params is not None and not isinstance(params, dict):
            raise RequestError("params", f"must be a JSON object (holding the context), got {describe(params)}")
        context = body.get("context", (params or {}).get("context"))
        tasks = body.get("tasks")
        if isinstance(tasks, list) and len(tasks) > config.max_tasks:
            raise RequestError(
                "tasks",
                f"{len(tasks)} tasks exceed MAX_TASKS={config.max_tasks}, the most one "
                "request may carry; send them in smaller batches",
                413,
            )
        started = time.perf_counter()
        answer = model.predict(
            tasks,
            context=context,
            project=body.get("project"),
            label_config=body.get("label_config"),
            artifacts=body.get("artifacts") is True,
            should_stop=client_gone,
            time_budget=body.get("time_budget"),
        )
        counts.predicted(time.perf_counter() - started)
        return jsonify(answer)

    @app.post("/webhook")
    def webhook():
        body = _json_body()
        log.info("webhook %s ignored: SAM2Plus does not train", logtext(body.get("action")))
        return jsonify(status="ok", action=body.get("action"))

    @app.get("/versions")
    def versions():
        return jsonify(versions=[model.model_version], model_version=model.model_version)


def _add_artifact_routes(app: Flask, config) -> None:
    """GET /artifacts/<ident> (a request's review files) and /artifacts/<ident>/<name> (one of them)."""

    @app.get("/artifacts/<ident>")
    def artifact_files(ident: str):
        return jsonify(files=review.request_files(_artifacts_of(config), ident))

    @app.get("/artifacts/<ident>/<name>")
    def artifact_file(ident: str, name: str):
        return send_file(review.open_request_file(_artifacts_of(config), ident, name), download_name=name)


def _add_metrics(app: Flask, model, counts: _WorkerCounts) -> None:
    """The model's info metric, and GET /metrics."""
    segmenter = model.pipeline.segmenter
    metrics.set_model_info(
        model.model_version,
        getattr(segmenter, "model_config", type(segmenter).__name__),
        model.config.model_checkpoint,
        getattr(segmenter, "device", "-"),
        bool(getattr(segmenter, "untrained", False)),
    )

    @app.get("/metrics")
    def metrics_route():
        """Prometheus' text format over all workers; `?format=json` this worker's counters."""
        view = request.args.get("format", "prometheus")
        if view == "json":
            return jsonify(
                model_version=model.model_version, pid=os.getpid(), **counts.snapshot(), **_worker_counts(model)
            )
        if view != "prometheus":
            raise RequestError("format", f"must be prometheus (the default) or json, got {describe(view)}")
        text, content_type = metrics.exposition()
        return Response(text, content_type=content_type)


def _add_error_handlers(app: Flask, config, counts: _WorkerCounts) -> None:
    """Every failure as a JSON error (`_error`), counted in this worker's errors: a RequestError with
    its status, a body past MAX_REQUEST_BYTES (413), werkzeug's HTTP errors, a click stopped because
    its client went away (499) and any other exception (`_fault_response`)."""

    @app.errorhandler(RequestError)
    def _request_error(exc: RequestError):
        counts.failed(exc.status)
        log.info("%s %s -> %d %s", _method(), logtext(request.path), exc.status, logtext(exc.message))
        return _error(exc.status, exc.message, exc.problems)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge):
        counts.failed(413)
        limit = config.max_request_bytes
        return _error(
            413,
            f"body: larger than MAX_REQUEST_BYTES={limit} ({limit / (1 << 20):g} MiB), "
            "the largest request body this backend accepts",
        )

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        counts.failed(exc.code or 500)
        return _error(exc.code or 500, f"{request.method} {request.path}: {exc.name}")

    @app.errorhandler(Stopped)
    def _stopped(exc: Stopped):
        counts.failed(CLIENT_CLOSED_REQUEST)
        log.info("%s %s: %s (request id %s)", _method(), logtext(request.path), exc, _request_id())
        return _error(CLIENT_CLOSED_REQUEST, f"stopped: {exc}")

    @app.errorhandler(Exception)
    def _fault(exc: Exception):
        response = _fault_response(exc)
        counts.failed(response.status_code)
        return response


def _fault_response(exc: Exception) -> Response:
    """An unexpected exception's answer: a full disk (507) or a locked settings store (503, with
    Retry-After) told as such and logged in a line; anything else a 500 whose traceback is logged."""
    status, message = _storage_fault(exc)
    if status == 500:
        log.exception("%s %s failed (request id %s)", _method(), logtext(request.path), _request_id())
        return _error(500, f"internal error (request id {_request_id()}); the backend's log has the detail")
    log.error(
        "%s %s: %s: %s (request id %s)",
        _method(),
        logtext(request.path),
        message,
        logtext(exc),
        _request_id(),
    )
    response = _error(status, f"{message} (request id {_request_id()})")
    if status == 503:
        response.headers["Retry-After"] = "5"
    return response


def _worker_counts(model) -> dict:
    """This worker's encoder runs, cache and warm-up counters (the JSON view of /metrics)."""
    segmenter = model.pipeline.segmenter
    cache = getattr(segmenter, "cache", None)
    store = getattr(segmenter, "store", None)
    frames = model.pipeline.frames
    warmup = model.warmup
    return {
        "encoder_runs": getattr(segmenter, "encoder_runs", None),
        "embedding_cache": {"hits": cache.hits, "misses": cache.misses, "bytes": cache.bytes} if cache else None,
        "embedding_store": {"hits": store.hits, "misses": store.misses, "stored": store.stored} if store else None,
        "frame_cache": {"hits": frames.hits, "misses": frames.misses},
        "warmups": {"queued": warmup.queued, "dropped": warmup.dropped, "done": warmup.done, "failed": warmup.failed},
        "prefetches": dict(warmup.prefetches),
    }


def _storage_fault(exc: Exception) -> tuple[int, str]:
    """A full disk (507) or a settings store locked by someone else for too long (503), told as such;
    any other fault is a 500."""
    if isinstance(exc, SettingsUnavailable):
        return 503, "the settings database (SETTINGS_URL) cannot be reached; try again"
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return INSUFFICIENT_STORAGE, "no space left on a disk the backend writes (CACHE_DIR or MODEL_DIR)"
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        if "full" in text:
            return INSUFFICIENT_STORAGE, "no space left on the disk of MODEL_DIR (the settings store)"
        if "locked" in text or "busy" in text:
            return 503, "the settings store in MODEL_DIR is locked by another process; try again"
    return 500, "internal error"


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


def _rule_of_request() -> str:
    """The route a request matched (`/artifacts/<ident>`), or `other`: never the path itself."""
    rule = request.url_rule
    return rule.rule if rule is not None else metrics.OTHER


def _method() -> str:
    """The request's method for the log: one of a closed set (a made-up one is `other`)."""
    return metrics.method_label(request.method)


def _request_id() -> str:
    return getattr(g, "request_id", None) or "-"


def _json_body() -> dict:
    """The request's JSON object, within MAX_REQUEST_BYTES, MAX_JSON_ITEMS and MAX_JSON_DEPTH (`jsonbody`)."""
    expected = request.content_length if request.content_length is not None else request.max_content_length
    # werkzeug's stream: a Content-Length past MAX_REQUEST_BYTES is a 413 at once, a chunked body at the limit.
    data = read_body(request.stream, request.environ.get("gunicorn.socket"), body_seconds(expected))
    return parse_json_body(data, current_app.config["MAX_JSON_ITEMS"], current_app.config["MAX_JSON_DEPTH"])


def _error(status: int, message: str, problems: tuple[str, ...] = ()) -> Response:
    """A JSON error whose HTTP reason phrase repeats the message: Label Studio shows only that line.
    For several problems the reason holds the first ones that fit in REASON_LIMIT, whole."""
    response = jsonify(error=message, request_id=_request_id())
    response.status = f"{status} {reason_phrase(problems or (message,))}"
    return response


def reason_phrase(problems: tuple[str, ...] | list[str], limit: int = REASON_LIMIT) -> str:
    """The problems `; `-separated in printable ASCII: as many whole ones as fit in `limit` characters,
    then how many were left out (the body's `error` has them all)."""
    texts = ["".join(ch if 32 <= ord(ch) < 127 else "?" for ch in problem) for problem in problems]
    if len("; ".join(texts)) <= limit:
        return "; ".join(texts)
    kept = [texts[0][: limit if len(texts) == 1 else limit - 16]]
    for index, text in enumerate(texts[1:], start=1):
        after = len(texts) - index - 1
        tail = f"; and {after} more" if after else ""
        if len("; ".join([*kept, text])) + len(tail) > limit:
            return "; ".join(kept) + f"; and {len(texts) - index} more"
        kept.append(text)
    return "; ".join(kept)


class _Credentials:
    """The configured basic-auth user and password, compared as bytes in constant time.

    RFC 7617 clients send UTF-8; Label Studio (python-requests) sends Latin-1 for characters it
    can encode that way, so both encodings of the configured values are accepted. Anything that
    does not decode (non-ASCII in the header, bad base64) is simply a wrong credential."""

    def __init__(self, user: str, password: str):
        self.pairs = {
            (user.encode(enc), password.encode(enc)) for enc in ("utf-8", "latin-1") if _encodes(user + password, enc)
        }

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


class _WorkerCounts:
    """This app's click and error counters: the JSON view of /metrics (one worker's own)."""

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
            return {
                "predictions": self.predictions,
                "predict_mean_ms": mean,
                "errors": {str(k): v for k, v in sorted(self.errors.items())},
            }
